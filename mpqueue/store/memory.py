"""``MemoryStore``: jobs in this process's memory (``memory://``), for users' tests.

Nothing is durable and nothing leaves the process, so no server can serve it (its
children are other processes): ``Queue.run_pending`` runs its jobs in the caller.
Handles opened on the same ``memory://NAME`` in one process share one store, which
lives until the last of them is closed (as SQLite's named in-memory databases do);
plain ``memory://`` is private to its handle.

The semantics are the LMDB store's: ready jobs in priority-then-FIFO order, scheduled
jobs in run-at order, the same outcome rules and the same limits. Each index is a
sorted list, so a claim reads only what it hands out. One re-entrant lock makes every
public method atomic; records go in and out as copies (``evolve()``: their fields are
immutable values), so a caller changing a record it holds changes nothing stored.
"""

from __future__ import annotations

import bisect
import builtins
import functools
import heapq
import itertools
import random
import threading
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..cancellation import CancelReport, requested
from ..concurrency import (
    QUEUE,
    TASK,
    Limit,
    LimitState,
    check_concurrency,
    check_kind,
    kept_starts,
)
from ..dependencies import admit, cancelled, check_add_order, on_holders, settle
from ..errors import ConfigError, JobNotFound
from ..expiry import expired, is_expired
from ..history import TIERS, Point, check_sample, current, tier_for
from ..limits import check_key_part, key_held, stored_problem
from ..location import MEMORY_SCHEME
from ..outcomes import Destination, apply_outcome
from ..pausing import PauseChange, Paused
from ..queues import DEFAULT_QUEUE, Selection, check_queues, claim_selected, depths_by_queue
from ..rates import Rate, earliest
from ..records import (
    FAILED_STATES,
    FINISHED_STATES,
    QUEUED_STATES,
    Claim,
    Ending,
    ErrorInfo,
    JobRecord,
    JobState,
    Outcome,
    Progress,
    now_ms,
)
from ..schedules import Live, ScheduleRow, ScheduleSpec, declared, resumed, retired
from .base import (
    BROWSE_SCAN_MAX,
    HEADS_READ_MAX,
    CheckReport,
    Fired,
    FirePlan,
    Gauges,
    HolderGone,
    OpCounter,
    Page,
    Requeued,
    Store,
    check_browse,
    check_run_at,
    no_schedule,
    redrive_state,
)
from .codec import decode_server_info, encode_server_info


@dataclass
class _Tables:
    """One store's contents. Every index entry ends with the job id."""

    lock: threading.RLock = field(default_factory=threading.RLock)
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)  # every job id, sorted: listings
    by_name: dict[str, list[str]] = field(default_factory=dict)  # sorted ids per task
    ready: list[tuple[int, int, str]] = field(default_factory=list)  # -priority, seq
    # The named queues' ready jobs, as ``ready`` holds the default queue's.
    queued: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)
    scheduled: list[tuple[int, int, int, str]] = field(default_factory=list)  # run-at first
    done: list[tuple[int, str]] = field(default_factory=list)  # finished at
    dead: set[str] = field(default_factory=set)
    cancelled: list[tuple[int, str]] = field(default_factory=list)  # finished at
    expired: list[tuple[int, str]] = field(default_factory=list)  # finished at
    waiting: dict[str, tuple[int, bool]] = field(default_factory=dict)  # open deps, allow
    edges: dict[str, dict[str, bool]] = field(default_factory=dict)  # dep -> dependent: open
    unique: dict[tuple[str, str], str] = field(default_factory=dict)  # (name, key) -> id
    claims: dict[str, Claim] = field(default_factory=dict)  # by job id
    cancels: dict[str, str] = field(default_factory=dict)  # claimed job id -> cancel text
    progress: dict[str, Progress] = field(default_factory=dict)  # job id -> its last report
    servers: dict[str, bytes] = field(default_factory=dict)  # encoded as LMDB does
    paused_all: bool = False  # the whole queue: claims take nothing
    held: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)  # paused task:
    # its ready jobs, held out of ``ready`` (claims never see them)
    history: dict[tuple[int, int], Point] = field(default_factory=dict)  # (tier, slot)
    schedules: dict[str, ScheduleRow] = field(default_factory=dict)  # by schedule name
    schedule_due: list[tuple[int, str]] = field(default_factory=list)  # active rows: due, name
    # Concurrency and rate limits (see concurrency.py): (kind, name) -> its state;
    # the ready jobs of a limited task or queue in their lane, by (queue, task or "");
    # and the limits each running limited job counts against, by job id.
    limits: dict[tuple[str, str], LimitState] = field(default_factory=dict)
    lanes: dict[tuple[str, str], list[tuple[int, int, str]]] = field(default_factory=dict)
    counted: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    seqs: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    handles: int = 0  # open handles of a named store


_named: dict[str, _Tables] = {}
_named_lock = threading.Lock()


def memory_name(location: str) -> str:
    """The NAME of ``memory://NAME`` ("" for a private store)."""
    return location[len(MEMORY_SCHEME) :]


P = ParamSpec("P")
R = TypeVar("R")


def _atomic(
    method: Callable[Concatenate[MemoryStore, P], R],
) -> Callable[Concatenate[MemoryStore, P], R]:
    """Run the method under the store's lock: one transaction."""

    @functools.wraps(method)
    def locked(self: MemoryStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self._db.lock:
            self.counter.txns += 1
            return method(self, *args, **kwargs)

    return locked


class MemoryStore(Store):
    """A job store in this process's memory; see the module docstring."""

    def __init__(self, location: str = MEMORY_SCHEME):
        self.location = location
        self.name = memory_name(location)
        self.counter = OpCounter()
        self.rng = random.Random()
        self._closed = False
        if not self.name:
            self._db = _Tables()
            return
        with _named_lock:
            self._db = _named.setdefault(self.name, _Tables())
            self._db.handles += 1

    # ---- filing records ---------------------------------------------------------------
    def _entry(self, rec: JobRecord) -> tuple[builtins.list[Any], tuple[Any, ...]] | None:
        """The sorted index (and its entry) a job in ``rec``'s state is filed under."""
        db = self._db
        if rec.state is JobState.READY:
            lane = self._lane(rec.name, rec.queue) if db.limits else None
            if rec.name in db.held:
                index = db.held[rec.name]
            elif lane is not None:
                index = db.lanes.setdefault(lane, [])
            elif rec.queue == DEFAULT_QUEUE:
                index = db.ready
            else:
                index = db.queued.setdefault(rec.queue, [])
            return index, (-rec.priority, rec.seq, rec.id)
        if rec.state is JobState.SCHEDULED:
            return db.scheduled, (rec.run_at_ms, -rec.priority, rec.seq, rec.id)
        if rec.state is JobState.DONE:
            return db.done, (rec.finished_at_ms or 0, rec.id)
        if rec.state is JobState.CANCELLED:
            return db.cancelled, (rec.finished_at_ms or 0, rec.id)
        if rec.state is JobState.EXPIRED:
            return db.expired, (rec.finished_at_ms or 0, rec.id)
        return None

    def _lane(self, name: str, queue: str) -> tuple[str, str] | None:
        """The lane a ready job of task ``name`` in ``queue`` is filed in: its task's
        when the task is limited, its queue's when only the queue is; None: neither."""
        limits = self._db.limits
        if (TASK, name) in limits:
            return queue, name
        if (QUEUE, queue) in limits:
            return queue, ""
        return None

    def _lane_limits(self, lane: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        """The limits a job of ``lane`` counts against (its task's, its queue's)."""
        queue, task = lane
        wanted = ((TASK, task),) if task else ()
        return tuple(k for k in (*wanted, (QUEUE, queue)) if k in self._db.limits)

    def _count(self, job_id: str, limits: tuple[tuple[str, str], ...], now_ms: int) -> None:
        """A job claimed now takes a slot (and a start) of each of ``limits``."""
        for key in limits:
            self._db.limits[key] = self._db.limits[key].claimed(1, now_ms)
        self._db.counted[job_id] = limits

    def _uncount(self, job_id: str) -> None:
        """A job that stopped running frees its slots (nothing to do for most)."""
        for key in self._db.counted.pop(job_id, ()):
            if key in self._db.limits:
                self._db.limits[key] = self._db.limits[key].released(1)

    def _file(self, rec: JobRecord) -> None:
        self.counter.puts += 1
        self._db.jobs[rec.id] = rec
        entry = self._entry(rec)
        if entry is not None:
            insort(entry[0], entry[1])
        elif rec.state is JobState.DEAD:
            self._db.dead.add(rec.id)

    def _unfile(self, rec: JobRecord) -> None:
        """Take a job out of its state's index (it stays in ``jobs``)."""
        entry = self._entry(rec)
        if entry is not None:
            _remove(entry[0], entry[1])
        self._db.dead.discard(rec.id)

    def _move(self, rec: JobRecord, **changes: Any) -> JobRecord:
        self._unfile(rec)
        new = rec.evolve(**changes)
        self._file(new)
        return new

    # ---- adding and claiming ------------------------------------------------------------
    @_atomic
    def add(self, records: Sequence[JobRecord]) -> None:
        self._add(records)

    def _add(self, records: Sequence[JobRecord]) -> None:
        for name in {rec.name for rec in records}:
            check_key_part(name, f"task name {name!r}")  # as every store: queues can move
        check_queues(records)
        now = now_ms()
        check_add_order(records)
        self._check_dependencies(records)  # before anything is filed: all or nothing
        stored = [rec.evolve() for rec in records]
        replaced: dict[str, str] = {}
        for rec, new in zip(records, stored):
            holder = None if rec.key is None else self._key_holder(rec.name, rec.key)
            if holder is not None:
                replaced[rec.id] = holder.id
                rec.__dict__.update(holder.evolve().__dict__)
                continue
            new = on_holders(new, replaced)
            if new.depends_on:
                new = self._link(new, now)
            new.seq = next(self._db.seqs)
            self._file(new)
            insort(self._db.ids, new.id)
            insort(self._db.by_name.setdefault(new.name, []), new.id)
            if new.key is not None:
                self._db.unique[(new.name, new.key)] = new.id
            rec.__dict__.update(new.evolve().__dict__)

    def _check_dependencies(self, records: Sequence[JobRecord]) -> None:
        """Refuse (ConfigError) a job that depends on one that neither exists nor comes
        earlier in this add."""
        earlier: set[str] = set()
        for rec in records:
            for dep in rec.depends_on:
                if dep not in earlier and dep not in self._db.jobs:
                    raise ConfigError(f"depends_on names job {dep}, which does not exist")
            earlier.add(rec.id)

    def _link(self, rec: JobRecord, now: int) -> JobRecord:
        """File a new job's dependency edges; returns it in the state it enters."""
        db = self._db
        admission = admit(rec, [db.jobs.get(d) for d in rec.depends_on], now)
        for dep, is_open in zip(rec.depends_on, admission.open_edges):
            db.edges.setdefault(dep, {})[rec.id] = is_open
        if admission.record.state is JobState.WAITING:
            db.waiting[rec.id] = (admission.open_deps, rec.allow_failures)
        return admission.record

    def _key_holder(self, name: str, key: str) -> JobRecord | None:
        job_id = self._db.unique.get((name, key))
        rec = None if job_id is None else self._db.jobs.get(job_id)
        if rec is None or rec.state in FAILED_STATES:
            return None
        return rec

    def _settle(self, rec: JobRecord, end: JobState | None, now: int) -> None:
        if self._db.edges:
            settle(_MemoryGraph(self), rec.id, rec.name, end, now)

    @_atomic
    def promote_due(self, now_ms: int) -> int:
        due = self._db.scheduled[: bisect_right(self._db.scheduled, (now_ms, float("inf")))]
        for *_, job_id in due:
            rec = self._db.jobs[job_id]
            if rec.expires_at_ms is not None and is_expired(rec, now_ms):
                self._expire(rec, now_ms)
            else:
                self._move(rec, state=JobState.READY)
        return len(due)

    def _expire(self, rec: JobRecord, now: int) -> None:
        """End a queued job past its deadline (see expiry.py) and settle its dependents."""
        self._unfile(rec)
        ended = expired(rec, now)
        self._file(ended)
        self._settle(ended, JobState.EXPIRED, now)

    @_atomic
    def claim(
        self, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> builtins.list[JobRecord]:
        check_key_part(server_id, "server id")
        if self._db.paused_all or limit <= 0:
            return []
        if queues is not None:
            return claim_selected(
                queues, limit, self.rng, lambda q, n: self._claim_from(q, server_id, n, now_ms)
            )
        return self._claim_from(None, server_id, limit, now_ms)[0]

    def _claim_from(
        self, queue: str | None, server_id: str, limit: int, now_ms: int
    ) -> tuple[builtins.list[JobRecord], bool]:
        """Claim from one queue's index (None: all of them, in priority and FIFO order);
        and whether some job ended otherwise (``queues.claim_selected``)."""
        claimed: builtins.list[JobRecord] = []
        ended = False
        # Again while the jobs taken ended otherwise (expired, bad): each pass takes
        # them out of their index, so it ends.
        while len(claimed) < limit:
            if self._db.lanes:
                found = self._first_ready_limited(queue, limit - len(claimed), now_ms)
            else:
                found = [(entry, ()) for entry in self._first_ready(queue, limit - len(claimed))]
                self.counter.cursor_steps += len(found)
            if not found:
                break
            got = [
                rec.evolve()
                for (*_, job_id), limits in found
                if (rec := self._take(job_id, server_id, now_ms, limits))
            ]
            ended = ended or len(got) < len(found)
            claimed += got
        return claimed, ended

    def _first_ready_limited(
        self, queue: str | None, count: int, now_ms: int
    ) -> builtins.list[tuple[tuple[int, int, str], tuple[tuple[str, str], ...]]]:
        """``_first_ready`` where lanes hold ready jobs: the queue's (or every queue's)
        index merged with the lanes that have room now, at most as many of each lane
        as its limits have room for; taken out of their indexes, with the limits of each."""
        db = self._db
        free = {key: state.room(now_ms) for key, state in db.limits.items()}
        names = db.queued if queue is None else [queue] if queue != DEFAULT_QUEUE else []
        plain = [db.ready] if queue in (None, DEFAULT_QUEUE) else []
        plain += [db.queued[name] for name in names if name in db.queued]
        sources = [_tagged(index, (), len(index)) for index in plain]
        for lane, index in db.lanes.items():
            if not index or (queue is not None and lane[0] != queue):
                continue
            limits = self._lane_limits(lane)
            room = min((free[key] for key in limits), default=len(index))
            if room > 0:
                sources.append(_tagged(index, limits, room))
        taken = []
        for entry, index, limits in heapq.merge(*sources, key=lambda item: item[0]):
            self.counter.cursor_steps += 1
            if any(free[key] <= 0 for key in limits):
                continue  # its limit filled in this claim: it stays ready
            for key in limits:
                free[key] -= 1
            taken.append((entry, index, limits))
            if len(taken) >= count:
                break
        for entry, index, _ in taken:
            _remove(index, entry)
        db.queued = {name: index for name, index in db.queued.items() if index}
        db.lanes = {lane: index for lane, index in db.lanes.items() if index}
        return [(entry, limits) for entry, _, limits in taken]

    def _first_ready(self, queue: str | None, count: int) -> builtins.list[tuple[int, int, str]]:
        """Take the first ``count`` entries out of a queue's ready index (None: out of
        all of them, merged in order)."""
        db = self._db
        if queue is None and not db.queued:
            queue = DEFAULT_QUEUE
        if queue is not None:
            index = db.ready if queue == DEFAULT_QUEUE else db.queued.get(queue, [])
            taken = index[:count]
            del index[:count]
            return taken
        indexes = [db.ready, *db.queued.values()]
        taken = list(itertools.islice(heapq.merge(*indexes), count))
        for entry in taken:
            queue_of = db.jobs[entry[2]].queue
            _remove(db.ready if queue_of == DEFAULT_QUEUE else db.queued[queue_of], entry)
        db.queued = {name: index for name, index in db.queued.items() if index}
        return taken

    def _take(
        self,
        job_id: str,
        server_id: str,
        now_ms: int,
        limits: tuple[tuple[str, str], ...] = (),
    ) -> JobRecord | None:
        """Mark one job (already out of the ready index) as processing by ``server_id``;
        None for one that ended instead (past its deadline, or bad)."""
        rec = self._db.jobs[job_id]
        if rec.expires_at_ms is not None and is_expired(rec, now_ms):
            ended = expired(rec, now_ms)  # out of ``ready`` already: filed as ended
            self._file(ended)
            self._settle(ended, JobState.EXPIRED, now_ms)
            return None
        problem = stored_problem(rec)  # what the store was given, as the others check
        if problem is not None:
            error = ErrorInfo(
                "OutOfBounds",
                f"stored value out of bounds: {problem}",
                kind="corrupt",
                at_ms=now_ms,
            )
            errors = rec.errors + (error,)
            dead = rec.evolve(state=JobState.DEAD, errors=errors, finished_at_ms=now_ms)
            self._file(dead)
            self._settle(dead, JobState.DEAD, now_ms)
            return None
        rec = rec.evolve(state=JobState.PROCESSING, attempts=rec.attempts + 1)
        self._file(rec)
        deadline = None if rec.timeout_s is None else now_ms + int(rec.timeout_s * 1000)
        self._db.claims[job_id] = Claim(job_id, server_id, now_ms, deadline_ms=deadline)
        if limits:
            self._count(job_id, limits, now_ms)
        return rec

    @_atomic
    def next_run_at_ms(self, now_ms: int | None = None) -> int | None:
        due = self._db.scheduled[0][0] if self._db.scheduled else None
        if now_ms is None or not self._db.limits:
            return due
        return earliest(due, *(state.reopens_at(now_ms) for state in self._db.limits.values()))

    # ---- outcomes -------------------------------------------------------------------------
    @_atomic
    def finish(self, outcomes: Sequence[Outcome], now_ms: int) -> builtins.list[bool]:
        return [self._finish_one(outcome, now_ms) for outcome in outcomes]

    @_atomic
    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        server_id: str,
        limit: int,
        now_ms: int,
        *,
        progress: Mapping[str, Progress] | None = None,
        queues: Selection | None = None,
    ) -> tuple[builtins.list[bool], builtins.list[JobRecord]]:
        return super().finish_and_claim(
            outcomes, server_id, limit, now_ms, progress=progress, queues=queues
        )

    # ---- concurrency limits ----------------------------------------------------------------
    @_atomic
    def set_limit(
        self, kind: str, name: str, concurrency: int | None, rate: Rate | None = None
    ) -> bool:
        check_kind(kind)
        check_concurrency(concurrency)
        db, key = self._db, (kind, name)
        old = db.limits.get(key)
        removed = concurrency is None and rate is None
        if old is None and removed:
            return False
        if old is not None and not removed:
            new = replace(old, concurrency=concurrency, rate=rate, starts=kept_starts(old, rate))
            db.limits[key] = new
            return new != old  # the lanes stay as they are; so do the running jobs

        def field_of(rec: JobRecord) -> str:
            return rec.name if kind == TASK else rec.queue

        moved = [r for r in db.jobs.values() if r.state is JobState.READY and field_of(r) == name]
        for rec in moved:
            self._unfile(rec)
        if removed:
            del db.limits[key]
            for job_id, limits in list(db.counted.items()):
                left = tuple(k for k in limits if k != key)
                if left:
                    db.counted[job_id] = left
                else:
                    del db.counted[job_id]
        else:
            running = [j for j in db.claims if field_of(db.jobs[j]) == name]
            db.limits[key] = LimitState(concurrency, len(running), rate)
            for job_id in running:  # a job running now counts against the new limit
                db.counted[job_id] = (*db.counted.get(job_id, ()), key)
        for rec in moved:
            self._file(rec)
        db.lanes = {lane: index for lane, index in db.lanes.items() if index}
        return True

    @_atomic
    def limits(self) -> builtins.list[Limit]:
        return [state.limit(k, n) for (k, n), state in sorted(self._db.limits.items())]

    @_atomic
    def record_progress(self, updates: Mapping[str, Progress]) -> None:
        for job_id, report in updates.items():
            if job_id in self._db.jobs:  # deleted meanwhile: dropped
                self._db.progress[job_id] = report

    @_atomic
    def progress(self, job_ids: Sequence[str]) -> builtins.list[Progress | None]:
        return [self._db.progress.get(job_id) for job_id in job_ids]

    def _finish_one(self, outcome: Outcome, now_ms: int) -> bool:
        claim = self._db.claims.get(outcome.job_id)
        if claim is None or claim.server_id != outcome.server_id:
            return False  # the claim was taken back: a late outcome changes nothing
        del self._db.claims[outcome.job_id]
        if self._db.counted:
            self._uncount(outcome.job_id)
        rec = self._db.jobs[outcome.job_id]
        request = self._db.cancels.pop(outcome.job_id, None)
        if request is not None:
            outcome = requested(outcome, request, rec.attempts, now_ms)
        applied = apply_outcome(rec, outcome, now_ms, self.rng)
        if applied.destination is Destination.SCHEDULED:
            applied.record.seq = next(self._db.seqs)  # behind the jobs already waiting
        self._unfile(rec)
        self._file(applied.record)
        if applied.record.state in FINISHED_STATES:
            self._settle(applied.record, applied.record.state, now_ms)
        return True

    # ---- claims and servers ---------------------------------------------------------------
    @_atomic
    def claims(self, server_id: str | None = None) -> builtins.list[Claim]:
        found = [c for c in self._db.claims.values() if server_id in (None, c.server_id)]
        return sorted(found, key=lambda c: (c.server_id, c.job_id))

    @_atomic
    def requeue_server(self, server_id: str) -> builtins.list[str]:
        held = sorted(c.job_id for c in self._db.claims.values() if c.server_id == server_id)
        now = now_ms()  # a job cancelled meanwhile ends now
        return [j for j in held if self._finish_one(Outcome.released(j, server_id), now)]

    @_atomic
    def register_server(self, server_id: str, info: dict[str, Any]) -> None:
        self._db.servers[server_id] = encode_server_info(info)

    @_atomic
    def servers(self) -> dict[str, dict[str, Any]]:
        now = now_ms()
        found = {w: decode_server_info(raw) for w, raw in self._db.servers.items()}
        for info in found.values():
            info["heartbeat_age_ms"] = now - int(info.get("heartbeat_ms", 0))
        return found

    @_atomic
    def unregister_server(self, server_id: str) -> None:
        self._db.servers.pop(server_id, None)

    # ---- reading ----------------------------------------------------------------------------
    @_atomic
    def get(self, job_id: str) -> JobRecord | None:
        self.counter.gets += 1
        rec = self._db.jobs.get(job_id)
        return None if rec is None else rec.evolve()

    @_atomic
    def get_many(self, job_ids: Sequence[str]) -> builtins.list[JobRecord | None]:
        return [self.get(job_id) for job_id in job_ids]

    @_atomic
    def endings(self, job_ids: Sequence[str]) -> builtins.list[Ending | None]:
        found = [self._db.jobs.get(job_id) for job_id in job_ids]
        self.counter.gets += len(found)
        return [
            None if r is None else Ending(r.state, r.result, r.errors[-1] if r.errors else None)
            for r in found
        ]

    @_atomic
    def dependents(self, job_id: str) -> builtins.list[str]:
        return sorted(self._db.edges.get(job_id, {}))

    @_atomic
    def list(
        self,
        name: str | None = None,
        state: JobState | None = None,
        limit: int | None = None,
        queue: str | None = None,
    ) -> builtins.list[JobRecord]:
        out: builtins.list[JobRecord] = []
        if limit == 0:
            return out
        for job_id in self._db.ids if name is None else self._db.by_name.get(name, []):
            self.counter.cursor_steps += 1
            rec = self._db.jobs[job_id]
            if (state is None or rec.state is state) and (queue is None or rec.queue == queue):
                out.append(rec.evolve(payload=b"", result=None, func=None))
                if len(out) == limit:
                    break
        return out

    @_atomic
    def gauges(self) -> Gauges:
        return Gauges(self.stats(), self.paused(), self._oldest_ready_ms(), self._depths())

    def _oldest_ready_ms(self) -> int | None:
        """The first job of each priority (across the queues, as a claim of every
        queue takes them), found in each queue's ready index (sorted: -priority, seq)
        by a bisection past each priority's run."""
        db, budget = self._db, HEADS_READ_MAX
        first: dict[int, tuple[int, int, str]] = {}  # -priority -> its first entry
        lanes = (db.lanes[lane] for lane in sorted(db.lanes))
        for ready in [db.ready, *(db.queued[name] for name in sorted(db.queued)), *lanes]:
            at = 0
            while budget > 0 and at < len(ready):
                budget -= 1
                self.counter.cursor_steps += 1
                band = ready[at][0]
                first[band] = min(first.get(band, ready[at]), ready[at])
                at = bisect.bisect_left(ready, (band + 1,))
        heads = [first[band] for band in sorted(first)[:HEADS_READ_MAX]]
        return min((db.jobs[entry[2]].run_at_ms for entry in heads), default=None)

    def _depths(self) -> dict[str, dict[str, int]]:
        db = self._db
        ready = {name: len(index) for name, index in db.queued.items()}
        ready[DEFAULT_QUEUE] = len(db.ready)
        for (queue, _), index in db.lanes.items():
            ready[queue] = ready.get(queue, 0) + len(index)
        for held in db.held.values():
            for *_, job_id in held:
                queue = db.jobs[job_id].queue
                ready[queue] = ready.get(queue, 0) + 1
        running: dict[str, int] = {}
        for job_id in db.claims:
            queue = db.jobs[job_id].queue
            running[queue] = running.get(queue, 0) + 1
        return depths_by_queue(ready, running)

    @_atomic
    def newest_dead(self, limit: int) -> builtins.list[JobRecord]:
        dead = heapq.nlargest(max(limit, 0), self._db.dead)
        self.counter.cursor_steps += len(dead)
        return [self._db.jobs[i].evolve(payload=b"", result=None, func=None) for i in dead]

    @_atomic
    def stats(self) -> dict[str, int]:
        db = self._db
        return {
            "ready": len(db.ready)
            + sum(map(len, db.queued.values()))
            + sum(map(len, db.lanes.values()))
            + sum(map(len, db.held.values())),
            "scheduled": len(db.scheduled),
            "processing": len(db.claims),
            "done": len(db.done),
            "dead": len(db.dead),
            "waiting": len(db.waiting),
            "cancelled": len(db.cancelled),
            "expired": len(db.expired),
            "total": len(db.jobs),
        }

    # ---- pausing ----------------------------------------------------------------------------
    @_atomic
    def pause(self, name: str | None) -> PauseChange:
        db = self._db
        if name is None:
            changed, db.paused_all = not db.paused_all, True
            return PauseChange(None, True, changed)
        check_key_part(name, f"task name {name!r}")
        if name in db.held:
            return PauseChange(name, True, False)
        mine = []
        for index in [db.ready, *db.queued.values(), *db.lanes.values()]:
            mine += [e for e in index if db.jobs[e[-1]].name == name]
            index[:] = [e for e in index if db.jobs[e[-1]].name != name]
            self.counter.cursor_steps += len(index)
        db.held[name] = sorted(mine)
        self.counter.cursor_steps += len(mine)
        return PauseChange(name, True, True)

    @_atomic
    def resume(self, name: str | None) -> PauseChange:
        db = self._db
        if name is None:
            changed, db.paused_all = db.paused_all, False
            return PauseChange(None, False, changed)
        check_key_part(name, f"task name {name!r}")
        held = db.held.pop(name, None)
        if held is None:
            return PauseChange(name, False, False)
        for entry in held:
            entry_of = self._entry(db.jobs[entry[-1]])
            assert entry_of is not None  # a held job is ready
            insort(entry_of[0], entry)
        return PauseChange(name, False, True)

    @_atomic
    def paused(self) -> Paused:
        return Paused(self._db.paused_all, frozenset(self._db.held))

    # ---- periodic schedules (the rules: mpqueue/schedules.py) --------------------------------
    def _put_schedule(self, row: ScheduleRow) -> None:
        """Write ``row``, keeping the next-due index in step with it."""
        db = self._db
        old = db.schedules.get(row.name)
        if old is not None and old.active:
            _remove(db.schedule_due, (old.next_due_ms, old.name))
        if row.active:
            insort(db.schedule_due, (row.next_due_ms, row.name))
        db.schedules[row.name] = row
        self.counter.puts += 1

    def _schedule(self, name: str) -> ScheduleRow | None:
        self.counter.gets += 1
        return self._db.schedules.get(name)

    @_atomic
    def declare_schedules(
        self, specs: Sequence[ScheduleSpec], server_id: str, now_ms: int, live: Live
    ) -> builtins.list[ScheduleRow]:
        for spec in specs:
            check_key_part(spec.name, f"schedule name {spec.name!r}")
        rows = [declared(self._schedule(s.name), s, server_id, now_ms, live) for s in specs]
        for row in rows:
            self._put_schedule(row)
        return rows

    @_atomic
    def fire_schedules(self, now_ms: int, plan: FirePlan, limit: int) -> Fired:
        db = self._db
        due = db.schedule_due[: min(limit, bisect_right(db.schedule_due, (now_ms, "\U0010ffff")))]
        self.counter.cursor_steps += len(due) + 1
        fired = Fired(rows=len(due))
        for _, name in due:
            row = self._schedule(name)
            assert row is not None
            firing = plan(row)
            if firing is None:
                fired.skipped.append(row)
                continue
            self._add(firing.jobs)  # under the lock: the slot and its jobs together
            self._put_schedule(firing.row)
            fired.wrote(firing)
        fired.earliest(self._first_due_after(now_ms))
        return fired

    def _first_due_after(self, now_ms: int) -> int | None:
        index = self._db.schedule_due
        at = bisect_right(index, (now_ms, "\U0010ffff"))
        self.counter.cursor_steps += 1
        return index[at][0] if at < len(index) else None

    @_atomic
    def retire_schedules(self, expected: Mapping[str, tuple[str, ...]]) -> builtins.list[str]:
        done = []
        for name, declarers in expected.items():
            row = self._schedule(name)
            if row is not None and row.active and row.declarers == declarers:
                self._put_schedule(retired(row))
                done.append(name)
        return done

    @_atomic
    def schedules(self) -> builtins.list[ScheduleRow]:
        self.counter.cursor_steps += len(self._db.schedules)
        return [self._db.schedules[name] for name in sorted(self._db.schedules)]

    @_atomic
    def pause_schedule(self, name: str) -> bool:
        row = self._schedule(name)
        if row is None:
            raise no_schedule(name)
        if row.paused:
            return False
        self._put_schedule(replace(row, paused=True))
        return True

    @_atomic
    def resume_schedule(self, name: str, now_ms: int) -> bool:
        row = self._schedule(name)
        if row is None:
            raise no_schedule(name)
        if not row.paused:
            return False
        self._put_schedule(resumed(row, now_ms))
        return True

    @_atomic
    def next_schedule_due_ms(self) -> int | None:
        self.counter.cursor_steps += 1
        return self._db.schedule_due[0][0] if self._db.schedule_due else None

    # ---- history ----------------------------------------------------------------------------
    @_atomic
    def record_history(self, sample_at_ms: int, counts: Mapping[str, int]) -> None:
        point = (sample_at_ms, check_sample(sample_at_ms, counts))
        for tier in TIERS:
            self.counter.puts += 1
            self._db.history[(tier.number, tier.slot(sample_at_ms))] = point

    @_atomic
    def history(self, since_ms: int, until_ms: int) -> builtins.list[Point]:
        tier = tier_for(since_ms, until_ms)
        found = []
        for lo, hi in tier.slot_ranges(since_ms, until_ms):
            for slot in range(lo, hi + 1):
                point = self._db.history.get((tier.number, slot))
                if point is not None and current(tier, slot, point[0], since_ms, until_ms):
                    found.append((point[0], dict(point[1])))
        self.counter.cursor_steps += len(found)
        return sorted(found, key=lambda point: point[0])

    # ---- removing -----------------------------------------------------------------------------
    @_atomic
    def delete(self, job_id: str) -> bool:
        rec = self._db.jobs.get(job_id)
        if rec is None:
            return False
        self._unlink(rec)
        del self._db.jobs[job_id]
        self.counter.deletes += 1
        self._unfile(rec)
        self._db.claims.pop(job_id, None)
        if self._db.counted:
            self._uncount(job_id)
        self._db.cancels.pop(job_id, None)
        self._db.progress.pop(job_id, None)
        _remove(self._db.ids, job_id)
        _remove(self._db.by_name[rec.name], job_id)
        if not self._db.by_name[rec.name]:
            del self._db.by_name[rec.name]
        return True

    def _unlink(self, rec: JobRecord) -> None:
        """Take a job being deleted out of the graph (as ``lmdb/graph.unlink``)."""
        db = self._db
        if rec.state not in FINISHED_STATES:
            self._settle(rec, None, now_ms())
        db.edges.pop(rec.id, None)
        for dep in rec.depends_on:
            db.edges.get(dep, {}).pop(rec.id, None)
            if dep in db.edges and not db.edges[dep]:
                del db.edges[dep]
        db.waiting.pop(rec.id, None)
        if rec.key is not None and db.unique.get((rec.name, rec.key)) == rec.id:
            del db.unique[(rec.name, rec.key)]

    # ---- cancelling -------------------------------------------------------------------------
    @_atomic
    def cancel(self, job_ids: Sequence[str], text: str, now_ms: int) -> CancelReport:
        report = CancelReport()
        unique = dict.fromkeys(job_ids)  # an id given twice counts once
        ended = [rec for job_id in unique if (rec := self._cancel(job_id, text, now_ms, report))]
        for rec in ended:  # after all of them, as the other stores do
            self._settle(rec, JobState.CANCELLED, now_ms)
        return report

    def _cancel(self, job_id: str, text: str, now: int, report: CancelReport) -> JobRecord | None:
        """Cancel one job; the record of a queued job it ended (None otherwise)."""
        rec = self._db.jobs.get(job_id)
        if rec is None:
            report.missing.append(job_id)
            return None
        if rec.state in QUEUED_STATES:
            self._db.waiting.pop(job_id, None)
            self._unfile(rec)
            ended = cancelled(rec, text, now)
            self._file(ended)
            report.cancelled.append(job_id)
            return ended
        if rec.state is JobState.PROCESSING and job_id in self._db.claims:
            self._db.cancels.setdefault(job_id, text)
            report.requested.append(job_id)
        else:
            report.finished.append(job_id)
        return None

    @_atomic
    def cancel_matching(
        self,
        name: str | None,
        states: Collection[JobState],
        text: str,
        now_ms: int,
        limit: int,
        after: str,
    ) -> tuple[CancelReport, str | None]:
        ids = self._db.ids if name is None else self._db.by_name.get(name, [])
        chosen: builtins.list[str] = []
        last = None
        for job_id in ids[bisect_right(ids, after) :]:
            last = job_id
            rec = self._db.jobs[job_id]
            if rec.state in states and job_id not in self._db.cancels:
                chosen.append(job_id)
                if len(chosen) >= limit:
                    break
        else:
            last = None  # walked to the end
        return self.cancel(chosen, text, now_ms), last

    @_atomic
    def cancel_requests(self, server_id: str) -> builtins.list[str]:
        claims = self._db.claims
        return sorted(j for j in self._db.cancels if claims[j].server_id == server_id)

    @_atomic
    def requeue_dead(self, job_id: str, now_ms: int, run_at_ms: int | None = None) -> JobRecord:
        check_run_at(run_at_ms)
        return self._requeue_dead(job_id, now_ms, run_at_ms)

    @_atomic
    def requeue_dead_many(
        self, job_ids: Sequence[str], now_ms: int, run_at_ms: int | None = None
    ) -> Requeued:
        check_run_at(run_at_ms)
        return Requeued.each(job_ids, lambda job_id: self._requeue_dead(job_id, now_ms, run_at_ms))

    def _requeue_dead(self, job_id: str, now_ms: int, run_at_ms: int | None) -> JobRecord:
        rec = self._db.jobs.get(job_id)
        if rec is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        if rec.state is not JobState.DEAD:
            raise ConfigError(f"job {job_id} is {rec.state.value}; only dead jobs can be requeued")
        if rec.key is not None:
            holder = self._key_holder(rec.name, rec.key)
            if holder is not None:
                raise key_held(job_id, rec.key, holder.id)
            self._db.unique[(rec.name, rec.key)] = job_id
        edges = self._db.edges.get(job_id, {})  # counted when it died: its next end must not
        edges.update(dict.fromkeys(edges, False))
        state, run_at = redrive_state(now_ms, run_at_ms)
        rec = self._move(
            rec,
            state=state,
            attempts=0,
            run_at_ms=run_at,
            finished_at_ms=None,
            seq=next(self._db.seqs),
        )
        return rec.evolve()

    @_atomic
    def browse(
        self,
        *,
        state: JobState | None = None,
        name: str | None = None,
        queue: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Walks the sorted ids (of the task, or of the state) back from the cursor, with
        the budget the other stores have."""
        check_browse(limit, before)
        db = self._db
        if name is not None:
            ids = db.by_name.get(name, [])
        elif state is not None:  # as the other stores' state indexes: this state's jobs
            ids = sorted(job_id for job_id, rec in db.jobs.items() if rec.state is state)
        else:
            ids = db.ids
        end = len(ids) if before is None else bisect_left(ids, before)
        jobs: builtins.list[JobRecord] = []
        for read, index in enumerate(range(end - 1, -1, -1)):
            if read >= BROWSE_SCAN_MAX:
                return Page(jobs, ids[index + 1])
            self.counter.cursor_steps += 1
            rec = db.jobs[ids[index]]
            if (state is None or rec.state is state) and (queue is None or rec.queue == queue):
                if len(jobs) == limit:
                    return Page(jobs, jobs[-1].id)
                jobs.append(rec.evolve(payload=b"", result=None, func=None))
        return Page(jobs, None)

    @_atomic
    def purge_dead(self) -> int:
        return sum(self.delete(job_id) for job_id in sorted(self._db.dead))

    @_atomic
    def expire_finished(self, before_ms: int) -> int:
        """Delete done, cancelled and expired jobs that finished before ``before_ms``."""
        deleted = 0
        for index in (self._db.done, self._db.cancelled, self._db.expired):
            old = index[: bisect_left(index, (before_ms, ""))]
            deleted += sum(self.delete(job_id) for _, job_id in old)
        return deleted

    # ---- checking -------------------------------------------------------------------------------
    @_atomic
    def check(self, holder_gone: HolderGone = lambda server_id: False) -> CheckReport:
        """Every job is filed in the index of its state, and only there; every claim is
        held by a registered server or one ``holder_gone`` says is dead."""
        db = self._db
        report = CheckReport(jobs=len(db.jobs))
        filed = (
            len(db.ready)
            + sum(map(len, db.queued.values()))
            + sum(map(len, db.lanes.values()))
            + sum(map(len, db.held.values()))
            + len(db.scheduled)
            + len(db.done)
            + len(db.dead)
            + len(db.claims)
        )
        filed += len(db.cancelled) + len(db.expired) + len(db.waiting)
        open_edges: dict[str, int] = {}  # open, from a dependency that has not ended
        for dep, dependents in db.edges.items():
            ended = dep in db.jobs and db.jobs[dep].state in FINISHED_STATES
            for dependent, is_open in dependents.items():
                open_edges[dependent] = open_edges.get(dependent, 0) + (is_open and not ended)
        for job_id, (count, _) in db.waiting.items():
            if db.jobs[job_id].state is not JobState.WAITING or count != open_edges.get(job_id):
                report.inconsistent.append(f"job {job_id} waits for {count} jobs; edges disagree")
        for rec in db.jobs.values():
            entry = self._entry(rec)
            if entry is not None and not _contains(entry[0], entry[1]):
                report.inconsistent.append(f"job {rec.id} is {rec.state} but not in that index")
            if (rec.state is JobState.PROCESSING) != (rec.id in db.claims):
                report.inconsistent.append(f"job {rec.id} is {rec.state}; its claim disagrees")
        if filed != len(db.jobs):
            report.inconsistent.append(f"{filed} index entries for {len(db.jobs)} jobs")
        report.inconsistent += [
            f"a progress report names job {job_id}, which does not exist"
            for job_id in db.progress
            if job_id not in db.jobs
        ]
        report.inconsistent += [
            f"job {job_id} has a cancel request but no claim"
            for job_id in db.cancels
            if job_id not in db.claims
        ]
        report.inconsistent += [
            f"jobs are claimed by {server}, which is neither registered nor dead"
            for server in sorted({c.server_id for c in db.claims.values()})
            if server not in db.servers and not holder_gone(server)
        ]
        due = sorted((r.next_due_ms, r.name) for r in db.schedules.values() if r.active)
        if due != db.schedule_due:
            report.inconsistent.append("the schedule due index disagrees with the schedules")
        return report.add_registry(self.servers())

    def close(self) -> None:
        """Close this handle; a named store goes when its last handle is closed."""
        if self._closed:
            return
        self._closed = True
        if self.name:
            with _named_lock:
                self._db.handles -= 1
                if self._db.handles == 0 and _named.get(self.name) is self._db:
                    del _named[self.name]


class _MemoryGraph:
    """``dependencies.Graph`` over the memory store's tables (under its lock)."""

    def __init__(self, store: MemoryStore):
        self.store, self.db = store, store._db

    def open_edges(self, job_id: str) -> builtins.list[str]:
        edges = self.db.edges.get(job_id, {})
        return sorted(dependent for dependent, is_open in edges.items() if is_open)

    def open_count(self, job_id: str) -> tuple[int, bool] | None:
        return self.db.waiting.get(job_id)

    def count_down(self, job_id: str, open_deps: int) -> None:
        self.db.waiting[job_id] = (open_deps, self.db.waiting[job_id][1])

    def load(self, job_id: str) -> JobRecord:
        return self.db.jobs[job_id]

    def file_released(self, rec: JobRecord) -> None:
        del self.db.waiting[rec.id]
        rec.seq = next(self.db.seqs)  # behind the jobs already waiting
        self.store._file(rec)

    def file_cancelled(self, rec: JobRecord, reason: str) -> None:
        del self.db.waiting[rec.id]
        self.store._file(rec)

    def file_expired(self, rec: JobRecord) -> None:
        del self.db.waiting[rec.id]
        self.store._file(rec)


def _tagged(
    index: builtins.list[Any], limits: tuple[tuple[str, str], ...], room: int
) -> Iterator[tuple[Any, builtins.list[Any], tuple[tuple[str, str], ...]]]:
    """The first ``room`` entries of ``index``, each with its index and limits."""
    for entry in itertools.islice(index, room):
        yield entry, index, limits


def _contains(index: builtins.list[Any], entry: Any) -> bool:
    at = bisect_left(index, entry)
    return at < len(index) and index[at] == entry


def _remove(index: builtins.list[Any], entry: Any) -> None:
    at = bisect_left(index, entry)
    if at < len(index) and index[at] == entry:
        del index[at]
