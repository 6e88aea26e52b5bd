"""The one store interface, in queue terms, split by role.

- ``JobStore``: the job verbs (add, claim, finish, read, remove);
- ``ServerRegistry``: the running servers, for recovery and ``check``;
- ``Store``: both, plus housekeeping; what the rest of the code holds. Every backend
  derives from it;
- ``HandOff``: optional, producers giving jobs straight to idle children; reached only
  through ``Store.hand_off``, None for a backend that does not derive from it;
- ``Schedules``: the periodic schedules' table and its next-due index (see
  ``mpqueue/periodic.py``).

Records go in and out as ``JobRecord``; how they are laid out is the backend's
business. Every method that changes state is one atomic transaction.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Protocol

from ..cancellation import CancelReport
from ..concurrency import Limit
from ..errors import ConfigError, JobNotFound
from ..history import Point
from ..limits import RUN_AT_MAX_MS
from ..pausing import PauseChange, Paused
from ..queues import Selection
from ..rates import Rate
from ..records import Claim, Ending, JobRecord, JobState, Outcome, Progress, is_job_id
from ..schedules import Live, ScheduleRow, ScheduleSpec


def offered_children(idle_children: Sequence[int], limit: int, claimed: int) -> list[int]:
    """The children (pids) a server offers for hand-off after a claim: those this claim
    left idle (the server gives claimed jobs to idle children in order), and only if it
    emptied the ready queue (otherwise the next claim has work for them)."""
    drained = limit > 0 and claimed < limit
    return list(idle_children[claimed:]) if drained else []


@dataclass
class OpCounter:
    """Store operations since the store was opened: the unit of the no-N+1 checks.

    ``gets`` are point reads, ``cursor_steps`` the index entries a scan visited,
    ``puts``/``deletes`` writes, ``txns`` transactions begun.
    """

    gets: int = 0
    puts: int = 0
    deletes: int = 0
    cursor_steps: int = 0
    txns: int = 0

    def snapshot(self) -> OpCounter:
        return OpCounter(**{f.name: getattr(self, f.name) for f in fields(self)})

    def __sub__(self, other: OpCounter) -> OpCounter:
        return OpCounter(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    @property
    def reads(self) -> int:
        """Entries read: point gets plus cursor steps."""
        return self.gets + self.cursor_steps

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)} | {"reads": self.reads}


# The oldest ready job is looked for among the first job of each priority (FIFO holds
# within one), of at most this many priorities, the highest first: a scrape stays
# bounded however the jobs' priorities spread.
HEADS_READ_MAX = 1000


@dataclass(frozen=True)
class Gauges:
    """What a metrics scrape reads of a store, together (``Store.gauges``)."""

    counts: dict[str, int]  # as ``stats()``
    paused: Paused  # as ``paused()``
    # The earliest run-at (ms) of the job at the head of each priority among the ready
    # jobs a claim could take (a paused task's are held out); None when there are none.
    oldest_ready_ms: int | None
    # {queue: {"ready": n, "processing": m}}: the default queue and every queue with a
    # ready or running job (``queues.depths_by_queue``); ready counts paused tasks' too.
    queues: dict[str, dict[str, int]] = field(default_factory=dict)

    def oldest_ready_age_s(self, now_ms: int) -> float | None:
        """How long the oldest ready job has been due, in seconds (never negative);
        None when no job is ready."""
        if self.oldest_ready_ms is None:
            return None
        return max(0, now_ms - self.oldest_ready_ms) / 1000


# How many entries one ``browse`` call reads at most before it stops and hands back a
# cursor: a filter that few jobs match (by queue, say, where no index orders them by
# id) pages on in bounded steps instead of scanning the whole store in one call.
BROWSE_SCAN_MAX = 2000
BROWSE_LIMIT_MAX = 1000  # jobs on one page at most


@dataclass(frozen=True)
class Page:
    """One page of ``browse``: jobs newest id first, and where the next page begins.

    ``next`` is the cursor to pass as ``before`` (a job id: every matching job older
    than it is still to come), None when no matching job is left. A page may hold
    fewer jobs than asked while ``next`` is set: the call stopped after reading
    ``BROWSE_SCAN_MAX`` entries."""

    jobs: list[JobRecord]
    next: str | None


def check_browse(limit: int, before: str | None) -> None:
    """ConfigError for a page size or a cursor ``browse`` cannot take."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= BROWSE_LIMIT_MAX:
        raise ConfigError(f"a page holds 1 to {BROWSE_LIMIT_MAX} jobs; got {limit!r}")
    if before is not None and not is_job_id(before):
        raise ConfigError(f"a page's cursor is a job id; got {str(before)[:80]!r}")


def check_run_at(run_at_ms: int | None) -> None:
    """ConfigError for a re-drive's time that is not one (every store checks it before
    its transaction, so a bad time changes nothing)."""
    if run_at_ms is not None and (
        isinstance(run_at_ms, bool)
        or not isinstance(run_at_ms, int)
        or not 0 <= run_at_ms <= RUN_AT_MAX_MS
    ):
        raise ConfigError(
            f"a re-drive's run-at is epoch ms, 0 to {RUN_AT_MAX_MS}; got {run_at_ms!r}"
        )


def redrive_state(now_ms: int, run_at_ms: int | None) -> tuple[JobState, int]:
    """The state and run-at of a dead job requeued at ``run_at_ms`` (None: now): ready
    unless that is later than now, scheduled then."""
    if run_at_ms is None or run_at_ms <= now_ms:
        return JobState.READY, now_ms
    return JobState.SCHEDULED, run_at_ms


@dataclass
class Requeued:
    """What ``requeue_dead_many`` did: the jobs it requeued, and why each other job
    named was left as it was (one line each, by id)."""

    requeued: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)

    @classmethod
    def each(cls, job_ids: Sequence[str], requeue: Callable[[str], object]) -> Requeued:
        """``requeue`` each job (inside the caller's transaction); a job it refuses
        (JobNotFound, ConfigError) is reported, and the others are requeued all the same."""
        report = cls()
        for job_id in job_ids:
            try:
                requeue(job_id)
                report.requeued.append(job_id)
            except (JobNotFound, ConfigError) as exc:
                report.refused[job_id] = str(exc)
        return report


CHECK_OK, CHECK_INCONSISTENT, CHECK_CORRUPT = 0, 1, 2  # ``mpqueue check`` exit codes


@dataclass
class CheckReport:
    """What ``Store.check`` found: ``corrupt`` (a value that cannot be decoded) and
    ``inconsistent`` (an index that disagrees with the jobs) problems, one line each."""

    jobs: int = 0
    corrupt: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)

    @property
    def code(self) -> int:
        """The exit code: 0 all well, 1 inconsistent, 2 something is undecodable."""
        if self.corrupt:
            return CHECK_CORRUPT
        return CHECK_INCONSISTENT if self.inconsistent else CHECK_OK

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.code == CHECK_OK,
            "code": self.code,
            "jobs": self.jobs,
            "corrupt": self.corrupt,
            "inconsistent": self.inconsistent,
        }

    def add_registry(self, workers: dict[str, dict[str, Any]]) -> CheckReport:
        """Count the server registry entries that cannot be decoded (``servers()``
        reads them as heartbeat-less stand-ins, so nothing else notices them)."""
        self.corrupt += [
            f"the registry entry of {server_id} cannot be decoded ({info['corrupt']})"
            for server_id, info in workers.items()
            if "corrupt" in info
        ]
        return self


@dataclass(frozen=True)
class Pacing:
    """How a server drives a store. The default: woken when jobs arrive, with a poll as
    the safety net. The legacy layout keeps the old design's pacing (see
    ``store/lmdb/legacy.py``): it only polls, at a fixed interval, one job per poll."""

    polls_only: bool = False
    claims_per_poll: int | None = None  # None: as many as there is room for
    poll_interval_s: float | None = None  # None: the server's default


HolderGone = Callable[[str], bool]  # is this unregistered claim holder dead (recoverable)?


class Listener(Protocol):
    """A server's wake-up source: readable when jobs were added or a cancel came."""

    def fileno(self) -> int: ...
    def drain(self) -> int: ...  # consume the wake-ups; how many there were
    def cancels(self) -> bool: ...  # whether a cancel came since the last call
    def close(self) -> None: ...


class Inbox(Protocol):
    """A child's hand-off socket: readable when a producer handed it a job."""

    def fileno(self) -> int: ...
    def job_ids(self) -> tuple[list[str], bool]: ...  # (ids named, a "get ready" came)
    def close(self) -> None: ...


class ServerRegistry(abc.ABC):
    """The registry of running servers (coordinators): what recovery and ``check`` read
    to tell a live claim holder from a dead one."""

    @abc.abstractmethod
    def register_server(self, server_id: str, info: dict[str, Any]) -> None:
        """Create or refresh a coordinator's entry (heartbeat, child pids)."""

    @abc.abstractmethod
    def servers(self) -> dict[str, dict[str, Any]]:
        """Every registered coordinator's info, by server id."""

    @abc.abstractmethod
    def unregister_server(self, server_id: str) -> None: ...


class JobStore(abc.ABC):
    """The job verbs: adding, claiming, finishing, reading and removing jobs."""

    @abc.abstractmethod
    def add(self, records: Sequence[JobRecord]) -> None:
        """Insert new jobs (ready or scheduled per their state) in one transaction.

        A job with ``depends_on`` enters as ``dependencies.admit`` says (waiting,
        cancelled, or as given), after the jobs it depends on, which must exist or come
        earlier in ``records`` (else ConfigError, and nothing is added). A job with a
        ``key`` whose (name, key) a job that is neither dead nor cancelled holds is not
        added: its record is overwritten with the holder's. The jobs that end in
        this store settle their dependents in the transaction of their end.

        A store with hand-off (see ``HandOff``) may claim a single new ready job for an
        idle child of a server in that transaction; the record passed in then reads
        processing."""

    @abc.abstractmethod
    def promote_due(self, now_ms: int) -> int:
        """Move scheduled jobs whose run-at is <= now to ready; returns how many."""

    @abc.abstractmethod
    def claim(
        self, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> list[JobRecord]:
        """Take up to ``limit`` ready jobs for ``server_id`` in one write transaction.

        Candidates are read inside that transaction, so no job is handed out twice.
        Each claimed job counts an attempt and gets a ``processing`` entry. ``queues``:
        only jobs of those queues, as the selection says (``queues.fill`` of its plan);
        None: every queue, in priority and FIFO order across them.
        """

    @abc.abstractmethod
    def finish(self, outcomes: Sequence[Outcome], now_ms: int) -> list[bool]:
        """Apply outcomes in one transaction, each by ``outcomes.apply_outcome``. An
        outcome whose processing entry is gone (the claim was taken back) changes nothing
        and reports False."""

    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        server_id: str,
        limit: int,
        now_ms: int,
        *,
        progress: Mapping[str, Progress] | None = None,
        queues: Selection | None = None,
    ) -> tuple[list[bool], list[JobRecord]]:
        """``finish`` then ``promote_due`` and ``claim`` (of ``queues``); one transaction
        where the backend can, so the server pays one durable commit per cycle instead
        of three. ``progress``: running jobs' latest reports, written in it
        (``record_progress``).

        A store with hand-off takes the server's idle children too (see ``HandOff``).
        """
        if progress:
            self.record_progress(progress)
        acks = self.finish(outcomes, now_ms)
        if limit <= 0:
            return acks, []
        self.promote_due(now_ms)
        return acks, self.claim(server_id, limit, now_ms, queues)

    @abc.abstractmethod
    def set_limit(
        self, kind: str, name: str, concurrency: int | None, rate: Rate | None = None
    ) -> bool:
        """Set the concurrency and rate limit of a task or a named queue (``kind``
        "task" or "queue"; see ``mpqueue.concurrency``, ``mpqueue.rates``; both None:
        remove it), in one transaction that also files that task's or queue's ready
        jobs in or out of their lane and counts its running jobs; a limit changed
        keeps its running count and its log of starts. Returns whether anything
        changed."""

    @abc.abstractmethod
    def limits(self) -> builtins.list[Limit]:
        """Every limit with its running count, by kind and name."""

    @abc.abstractmethod
    def record_progress(self, updates: Mapping[str, Progress]) -> None:
        """Keep each job's latest progress report (in one transaction); a report for a
        job that no longer exists is dropped. Kept until the job is deleted."""

    @abc.abstractmethod
    def progress(self, job_ids: Sequence[str]) -> list[Progress | None]:
        """The last progress report of each job (None: none), from one read."""

    @abc.abstractmethod
    def claims(self, server_id: str | None = None) -> list[Claim]:
        """Processing entries, of one worker or all."""

    @abc.abstractmethod
    def requeue_server(self, server_id: str) -> list[str]:
        """Put back every job held by ``server_id`` without charging the attempt."""

    @abc.abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        """The records of ``job_ids``, in that order (None where there is none), from one
        read transaction: one read per record (a chord's callback reads its inputs so)."""

    @abc.abstractmethod
    def endings(self, job_ids: Sequence[str]) -> list[Ending | None]:
        """The state, result and last error of ``job_ids`` (None where there is none), in
        that order, from one read transaction: one read per job, decoding no more of
        each record than that (a chord's callback reads its thousands of inputs so)."""

    @abc.abstractmethod
    def dependents(self, job_id: str) -> list[str]:
        """The ids of the jobs that depend on ``job_id`` (waiting or not), in id order."""

    @abc.abstractmethod
    def list(
        self,
        name: str | None = None,
        state: JobState | None = None,
        limit: int | None = None,
        queue: str | None = None,
    ) -> list[JobRecord]:
        """Jobs (of task ``name``, in ``state``, in ``queue``: each filter optional),
        oldest first (in job id order: ids begin with the creation time), from one read
        of the index. The limit is applied while walking it, so a limited
        listing reads O(limit) entries however many jobs the store holds. Records come
        without their payload, result and callable (b"", None, None): ``get`` has them."""

    @abc.abstractmethod
    def newest_dead(self, limit: int) -> builtins.list[JobRecord]:
        """Up to ``limit`` dead jobs, newest id first (ids begin with the creation time),
        reading O(limit) entries however many jobs the store holds; records come without
        payload, result and callable, as ``list`` gives them."""

    @abc.abstractmethod
    def delete(self, job_id: str) -> bool:
        """Remove a job from whichever queue holds it; False if there was none. The jobs
        waiting for a job deleted before it ended are settled as for a failed one
        (``dependencies.settle``)."""

    @abc.abstractmethod
    def cancel(self, job_ids: Sequence[str], text: str, now_ms: int) -> CancelReport:
        """Cancel ``job_ids`` in one transaction, by the rules of ``cancellation.py``:
        a queued job ends cancelled now, ``text`` (who and why) last in its history,
        and its dependents are settled; a processing job's claim gets a cancel request
        (``cancel_requests``) and its server is woken; ended jobs stay as they are.
        From a request's commit on, every outcome of that job, and its put-back by a
        shutdown or by recovery, ends it cancelled instead."""

    @abc.abstractmethod
    def cancel_matching(
        self,
        name: str | None,
        states: Collection[JobState],
        text: str,
        now_ms: int,
        limit: int,
        after: str,
    ) -> tuple[CancelReport, str | None]:
        """``cancel`` for at most ``limit`` jobs of task ``name`` (None: any) in
        ``states``, found by walking the matching index from ``after`` (a value an
        earlier call returned; "" to begin), in one transaction. Returns the report
        and where the walk goes on, or None when no job is left to cancel. A
        processing job that has a request already is not counted again."""

    @abc.abstractmethod
    def cancel_requests(self, server_id: str) -> builtins.list[str]:
        """The jobs held by ``server_id`` whose cancel was requested, from one read."""

    @abc.abstractmethod
    def requeue_dead(self, job_id: str, now_ms: int, run_at_ms: int | None = None) -> JobRecord:
        """Dead -> ready with attempts reset; with ``run_at_ms`` later than ``now_ms``,
        dead -> scheduled at that time instead (a scheduled re-drive: it goes back
        through the scheduled queue). Raises JobNotFound / ConfigError."""

    @abc.abstractmethod
    def requeue_dead_many(
        self, job_ids: Sequence[str], now_ms: int, run_at_ms: int | None = None
    ) -> Requeued:
        """``requeue_dead`` of each job, in one transaction; a job that cannot be
        requeued (not dead, gone, its key held) is left as it is, with the reason, and
        the others are requeued all the same."""

    @abc.abstractmethod
    def browse(
        self,
        *,
        state: JobState | None = None,
        name: str | None = None,
        queue: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Jobs (in ``state``, of task ``name``, in ``queue``: each filter optional)
        with ids below ``before`` (None: from the newest), newest id first, at most
        ``limit`` (<= ``BROWSE_LIMIT_MAX``), from one read. A page reads O(limit)
        entries however many jobs the store holds, where an index orders the matching
        jobs by id (no filter; a task; the dead and the waiting jobs; every state on
        PostgreSQL), O(jobs in the state) for a state of at most ``BROWSE_SCAN_MAX``
        jobs, and at most ``BROWSE_SCAN_MAX`` entries otherwise (see ``Page``).
        Records come as ``list`` gives them (no payload, result or callable)."""

    @abc.abstractmethod
    def purge_dead(self) -> int: ...

    @abc.abstractmethod
    def expire_finished(self, before_ms: int) -> int:
        """Delete done and cancelled jobs that finished before ``before_ms``; returns how
        many."""

    @abc.abstractmethod
    def next_run_at_ms(self, now_ms: int | None = None) -> int | None:
        """The earliest run-at among scheduled jobs (for the server's wake-up); given
        ``now_ms``, or the time a rate that lets no start through at ``now_ms`` next
        lets one through (``rates.py``), if that is earlier."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """Counts per state (every ``JobState``) and ``total``, from one read transaction."""

    @abc.abstractmethod
    def gauges(self) -> Gauges:
        """``stats()``, ``paused()`` and the oldest ready job's run-at read together
        (LMDB: one read transaction; PostgreSQL: one transaction; see ``Gauges``)."""

    # Pausing: each backend keeps a paused task's jobs out of what its claims read.
    @abc.abstractmethod
    def pause(self, name: str | None) -> PauseChange:
        """Stop claims of task ``name``'s jobs (None: of every job); running jobs go on."""

    @abc.abstractmethod
    def resume(self, name: str | None) -> PauseChange:
        """Undo ``pause(name)``: its held jobs become claimable again."""

    @abc.abstractmethod
    def paused(self) -> Paused:
        """What is paused, from one read."""

    # The depth history: the rule (tiers, slots, folding) is history.py's.
    @abc.abstractmethod
    def record_history(self, sample_at_ms: int, counts: Mapping[str, int]) -> None:
        """Write one sample of the counts by state into every tier of the history (one
        transaction; it overwrites the slots it maps to, so the size stays fixed)."""

    @abc.abstractmethod
    def history(self, since_ms: int, until_ms: int) -> builtins.list[Point]:
        """The samples in [since_ms, until_ms] at the finest tier that holds that range
        (``history.tier_for``), oldest first, from one read."""


class HandOff(abc.ABC):
    """The optional hand-off capability: while a server's child is idle, a producer's
    ``add`` may claim a new ready job for that child in its own transaction and wake the
    child directly, skipping the server's cycle. The LMDB store has it; a backend without
    it has nothing to write. The server and its children reach it only through
    ``Store.hand_off``.
    """

    @abc.abstractmethod
    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        server_id: str,
        limit: int,
        now_ms: int,
        idle_children: Sequence[int] = (),
        *,
        progress: Mapping[str, Progress] | None = None,
        queues: Selection | None = None,
    ) -> tuple[list[bool], list[JobRecord]]:
        """``JobStore.finish_and_claim``, which then offers ``idle_children`` (pids of the
        server's children that have nothing to run) for hand-off in the same transaction,
        replacing the server's previous offer (see ``offered_children``); a new job is
        handed to them only if it is in one of ``queues`` (None: any)."""

    @abc.abstractmethod
    def recall(self, server_id: str, child_pid: int, known: Collection[str]) -> list[JobRecord]:
        """Withdraw the hand-off offer of one child of ``server_id`` (it died or stopped)
        and return the jobs handed to it that are not in ``known``; they stay claimed by
        ``server_id``."""

    @abc.abstractmethod
    def inbox(self) -> Inbox:
        """This process's hand-off socket (a child of a server calls it once). Raises
        OSError if it cannot be had."""

    @abc.abstractmethod
    def handed_job(self, server_id: str, job_id: str, child_pid: int) -> JobRecord | None:
        """The job, if it is still handed to that child (a child checks before it runs a
        job named in a wake-up); None otherwise."""


@dataclass(frozen=True)
class Firing:
    """What a fire plan decided for one due schedule: its row after the fire, and the
    jobs to write with it (none when its slots were skipped)."""

    row: ScheduleRow
    jobs: list[JobRecord]


# Given a due row as the fire transaction read it: a Firing, or None to leave it as it is
# (a schedule this server's code does not define). Pure: it must not touch the store.
FirePlan = Callable[[ScheduleRow], Firing | None]


@dataclass
class Fired:
    """What ``Schedules.fire_schedules`` did."""

    jobs: list[JobRecord] = field(default_factory=list)  # written, oldest slot first
    skipped: list[ScheduleRow] = field(default_factory=list)  # due, left by the plan
    rows: int = 0  # due rows read (``limit`` of them: more may be due)
    # When to fire next: the earliest next due among the active rows after the due ones
    # read, and the new next due of each row fired (still due when its slots were cut
    # short); None: nothing is scheduled. The skipped rows are not counted.
    next_due_ms: int | None = None

    def wrote(self, firing: Firing) -> None:
        self.jobs += firing.jobs
        self.earliest(firing.row.next_due_ms if firing.row.active else None)

    def earliest(self, due_ms: int | None) -> None:
        if due_ms is not None and (self.next_due_ms is None or due_ms < self.next_due_ms):
            self.next_due_ms = due_ms


class Schedules(abc.ABC):
    """Periodic schedules (``mpqueue/periodic.py`` has the rules, ``mpqueue/schedules.py``
    the rows): one row per schedule name, the active ones (neither paused nor retired)
    in a next-due index, so a fire reads O(schedules due), not O(schedules)."""

    @abc.abstractmethod
    def declare_schedules(
        self, specs: Sequence[ScheduleSpec], server_id: str, now_ms: int, live: Live
    ) -> builtins.list[ScheduleRow]:
        """Insert or update the row of each spec (``schedules.declared``), in one
        transaction; returns the rows as written."""

    @abc.abstractmethod
    def fire_schedules(self, now_ms: int, plan: FirePlan, limit: int) -> Fired:
        """In one transaction: read up to ``limit`` active rows due at ``now_ms`` (next due
        <= now, earliest first), skipping rows another transaction holds; for each,
        ``plan`` says what to write, and the row's new slot and its jobs are written
        together, on the condition that the row still has the last slot read (a
        compare-and-set). A second writer finds the slot taken and writes nothing."""

    @abc.abstractmethod
    def retire_schedules(self, expected: Mapping[str, tuple[str, ...]]) -> builtins.list[str]:
        """Mark retired (``schedules.retired``) each named active row whose declarers are
        still ``expected[name]``, in one transaction; returns the names retired."""

    @abc.abstractmethod
    def schedules(self) -> builtins.list[ScheduleRow]:
        """Every schedule row, by name, from one read."""

    @abc.abstractmethod
    def pause_schedule(self, name: str) -> bool:
        """Take schedule ``name`` out of the next-due index; False if it was paused
        already. ConfigError for a name with no row (nothing changes)."""

    @abc.abstractmethod
    def resume_schedule(self, name: str, now_ms: int) -> bool:
        """Undo ``pause_schedule`` (``schedules.resumed``); False if it was not paused.
        ConfigError for a name with no row (nothing changes)."""

    @abc.abstractmethod
    def next_schedule_due_ms(self) -> int | None:
        """The earliest next due of the active schedules (one index read), or None."""


def no_schedule(name: str) -> ConfigError:
    return ConfigError(f"no periodic schedule named {name!r} in this store")


class Store(JobStore, ServerRegistry, Schedules):
    """A job store: the job verbs, the server registry and housekeeping, with
    hand-off as an optional capability (``hand_off``). Implementations: ``LmdbStore``,
    ``LegacyLmdbStore``, ``PostgresStore`` (durable) and ``MemoryStore`` (one process,
    for tests)."""

    mode: str = "optimized"
    counter: OpCounter
    pacing: Pacing = Pacing()

    @property
    def hand_off(self) -> HandOff | None:
        """This store's hand-off capability, or None where it has none. The one place
        that tells: a backend gets hand-off by also deriving from ``HandOff`` (a subclass
        that gives it up overrides this, as the legacy LMDB layout does)."""
        return self if isinstance(self, HandOff) else None

    def heartbeat(
        self, server_id: str, info: dict[str, Any], sample_at_ms: int | None = None
    ) -> None:
        """``register_server``, and with ``sample_at_ms`` a history sample of this
        store's counts; one transaction where the backend can, so the sample rides on a
        commit the server makes anyway."""
        self.register_server(server_id, info)
        if sample_at_ms is not None:
            self.record_history(sample_at_ms, self.stats())

    def maintenance(self) -> None:  # optional: most backends have none
        """Periodic housekeeping (stale reader slots and the like)."""

    def check(self, holder_gone: HolderGone = lambda server_id: False) -> CheckReport:
        """Check that every index agrees with the jobs and every stored value decodes
        (payloads and results stay unread). A claim may be held by a registered server,
        or by one ``holder_gone`` says is dead (recovery puts such claims back)."""
        raise NotImplementedError(f"{type(self).__name__} has no check")

    def backup(self, dest: str) -> None:
        """Write a consistent copy of the store to ``dest`` while servers run.

        Raises ConfigError where the store cannot be copied this way."""
        raise ConfigError(f"{type(self).__name__} cannot be backed up by mpqueue")

    def listen(self) -> Listener | None:
        """A wake-up source for an idle server (readable when jobs were added), or None
        if this backend has none (the server then relies on its poll interval)."""
        return None

    @abc.abstractmethod
    def close(self) -> None: ...
