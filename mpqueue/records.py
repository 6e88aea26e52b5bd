"""Job records, their states and the legal transitions between them: pure data.

``JobRecord`` is what the store keeps, ``Claim`` who holds a running job, ``Outcome`` how
a run ended; ids and the millisecond clock are made here too. The user's handle on a job
is ``mpqueue.handle.Job``.
"""

from __future__ import annotations

import enum
import itertools
import os
import random
import re
import time
from dataclasses import dataclass
from typing import Any, NamedTuple


class JobState(str, enum.Enum):
    WAITING = "waiting"  # for its dependencies (``depends_on``) to finish
    SCHEDULED = "scheduled"
    READY = "ready"
    PROCESSING = "processing"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"  # cancelled (``cancel``), or a dependency failed
    EXPIRED = "expired"  # not started by its deadline (``expires=``; see expiry.py)

    def __str__(self) -> str:
        return self.value


# The only transitions the store may make. RELEASE (processing -> ready) is the
# uncharged put-back of a job whose run never started or was interrupted by shutdown.
# A waiting job leaves with its last open dependency: queued, or cancelled with it.
# Any job that has not ended can be cancelled (a running one by its server). A queued
# job past its deadline expires where a store would otherwise queue or claim it, and a
# claimed one where its server was about to start it.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset(
        {JobState.READY, JobState.SCHEDULED, JobState.CANCELLED, JobState.EXPIRED}
    ),
    JobState.SCHEDULED: frozenset({JobState.READY, JobState.CANCELLED, JobState.EXPIRED}),
    JobState.READY: frozenset(
        {JobState.PROCESSING, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED}
    ),
    JobState.PROCESSING: frozenset(
        {
            JobState.DONE,
            JobState.SCHEDULED,
            JobState.DEAD,
            JobState.READY,
            JobState.CANCELLED,
            JobState.EXPIRED,
        }
    ),
    JobState.DONE: frozenset(),
    JobState.DEAD: frozenset({JobState.READY, JobState.SCHEDULED}),
    JobState.CANCELLED: frozenset(),
    JobState.EXPIRED: frozenset(),
}

# States a job never leaves by itself (``requeue`` takes a dead one back, now or at a
# time: a scheduled re-drive).
FINISHED_STATES = frozenset({JobState.DONE, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED})
# The states ``cancel`` ends at once (a processing job's server ends it).
QUEUED_STATES = frozenset({JobState.WAITING, JobState.SCHEDULED, JobState.READY})
# The ends that fail the jobs waiting for a job (unless they allow failures) and free
# its unique key.
FAILED_STATES = frozenset({JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED})


def check_transition(old: JobState, new: JobState) -> None:
    if new not in TRANSITIONS[old]:
        raise AssertionError(f"illegal job transition {old} -> {new}")


def now_ms() -> int:
    return int(time.time() * 1000)


_id_counter = itertools.count()
# Random bits of job ids. A private generator (user code that seeds ``random`` must not
# make two processes repeat ids), seeded from the OS and again in every forked child.
# It draws no syscall per id, unlike os.urandom: the one-by-one enqueue path is short.
_id_random = random.Random()
os.register_at_fork(after_in_child=_id_random.seed)


def new_job_ids(count: int) -> list[str]:
    """``count`` ids of 32 hex chars: 48-bit creation time in ms, a 16-bit per-process
    counter, 64 random bits. Ids made together sort together, so a batch lands on
    neighbouring B-tree pages instead of scattering over the ``jobs`` index; within a
    batch they are in ascending order."""
    stamp = f"{now_ms() & 0xFFFFFFFFFFFF:012x}"
    if count == 1:
        return [f"{stamp}{next(_id_counter) & 0xFFFF:04x}{_id_random.getrandbits(64):016x}"]
    noise = f"{_id_random.getrandbits(64 * count):0{16 * count}x}"
    # Sorted: the counter wraps in a batch of over 65,536, and listings walk the indexes
    # in id order, so a batch must list in the order its jobs were given.
    return sorted(
        [
            f"{stamp}{next(_id_counter) & 0xFFFF:04x}{noise[16 * i : 16 * i + 16]}"
            for i in range(count)
        ]
    )


def new_job_id() -> str:
    return new_job_ids(1)[0]


_JOB_ID = re.compile(r"[0-9a-f]{32}")


def is_job_id(text: object) -> bool:
    """Whether ``text`` has the shape of a job id (what ``new_job_ids`` makes)."""
    return isinstance(text, str) and _JOB_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class ErrorInfo:
    """One failed attempt: what was raised (or what killed the worker) and where."""

    type: str
    message: str
    traceback: str = ""
    attempt: int = 0
    at_ms: int = 0
    # exception | retry | fail | crash | timeout | payload | corrupt | lost | cancelled
    # | expired
    kind: str = "exception"

    def __str__(self) -> str:
        return f"{self.type}: {self.message}" if self.message else self.type


@dataclass
class JobRecord:
    """Everything the store keeps about one job."""

    id: str
    name: str
    state: JobState
    payload: bytes
    priority: int = 0
    seq: int = 0
    run_at_ms: int = 0
    created_at_ms: int = 0
    attempts: int = 0
    max_retries: int = 3
    timeout_s: float | None = None
    func: bytes | None = None
    result: bytes | None = None
    errors: tuple[ErrorInfo, ...] = ()
    finished_at_ms: int | None = None
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 300.0
    signature: bytes | None = None  # HMAC of name, payload and func (a queue's secret)
    # Workflows (see dependencies.py): the jobs this one waits for, in order; how their
    # results reach its call; whether it runs when one of them fails.
    depends_on: tuple[str, ...] = ()
    pass_results: str = ""  # "" (none), "one" (chain), "all" (chord): see PASS_MODES
    allow_failures: bool = False
    key: str | None = None  # unique per task name while the job has not failed (FAILED_STATES)
    # What is retried (see retry.py): the qualified names of the exception classes whose
    # raise is retried (None: every exception) and of those that end the job dead at once.
    retry_on: tuple[str, ...] | None = None
    no_retry_on: tuple[str, ...] = ()
    # The latest start, in epoch ms (``expires=``): a job that has not started by then
    # ends expired instead (see expiry.py). None: it never expires.
    expires_at_ms: int | None = None
    # The named queue it is in (see queues.py); servers may serve some queues only.
    queue: str = "default"
    # Text previews (see previews.py), for readers that never unpickle: of the arguments,
    # written at enqueue, and of the result, written when the job ends done. None: a
    # record written before previews, or (result) one that has not ended done.
    preview: str | None = None
    result_preview: str | None = None

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy with ``changes`` applied; a state change must be a legal transition."""
        if "state" in changes:
            check_transition(self.state, changes["state"])
        unknown = changes.keys() - _RECORD_FIELDS
        if unknown:
            raise TypeError(f"JobRecord has no field(s) {sorted(unknown)}")
        # Not dataclasses.replace: it re-runs __init__, and a claim pays this per job. A
        # dict copy is enough for a plain dataclass without __post_init__.
        new = object.__new__(JobRecord)
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    @classmethod
    def corrupt(cls, job_id: str, name: str, reason: str) -> JobRecord:
        """Stand-in for a record that cannot be decoded: shown as dead, with the reason."""
        error = ErrorInfo("CorruptRecord", reason, kind="corrupt", at_ms=now_ms())
        return cls(id=job_id, name=name, state=JobState.DEAD, payload=b"", errors=(error,))

    @property
    def is_corrupt(self) -> bool:
        """True for the stand-in ``corrupt()`` builds (no real record has that error last
        with an empty payload: real payloads always carry the envelope byte)."""
        return not self.payload and bool(self.errors) and self.errors[-1].kind == "corrupt"


_RECORD_FIELDS = frozenset(JobRecord.__dataclass_fields__)

# How a job's dependencies' results reach its call, as its first argument: "one", the
# result of its single dependency (a chain's step); "all", the list of its
# dependencies' results in ``depends_on`` order (a chord's callback).
PASS_NONE, PASS_ONE, PASS_ALL = "", "one", "all"
PASS_MODES = (PASS_NONE, PASS_ONE, PASS_ALL)


class Progress(NamedTuple):
    """What a running job last reported of its progress (``current_job().progress``):
    ``done`` out of ``total`` (None: unknown), a short ``message``, and when (ms)."""

    done: float
    total: float | None
    message: str | None
    at_ms: int

    def as_dict(self) -> dict[str, Any]:
        return self._asdict()


class Ending(NamedTuple):
    """What a workflow job reads of each of its dependencies (``Store.endings``): the
    state, the pickled result (done jobs), the last error (failed ones)."""

    state: JobState
    result: bytes | None
    error: ErrorInfo | None


@dataclass(frozen=True)
class Claim:
    """The value of ``processing/<workerId>/<jobId>``: who holds a job and since when."""

    job_id: str
    server_id: str
    claimed_at_ms: int
    deadline_ms: int | None = None
    child_pid: int = 0  # a hand-off: the one child of that server the job was given to


@dataclass(frozen=True)
class Outcome:
    """How one claimed job ended; applied by ``Store.finish`` in one transaction per batch.

    kind: ``done`` (``result`` holds the pickled value), ``failed`` (``error``; retried
    with backoff unless ``retryable`` is false or retries are used up), ``released``
    (put back to ready without charging the attempt), ``cancelled`` (``error`` says who
    cancelled it: what any outcome of a job whose cancel was requested becomes, see
    ``cancellation.requested``), ``expired`` (claimed, but past its deadline when its
    server was about to start it: it never ran, see ``expiry.py``).
    """

    job_id: str
    server_id: str
    kind: str
    result: bytes | None = None
    error: ErrorInfo | None = None
    retryable: bool = True
    retry_delay_s: float | None = None
    preview: str | None = None  # done: the result's text preview (previews.py)

    @classmethod
    def done(
        cls, job_id: str, server_id: str, result: bytes, preview: str | None = None
    ) -> Outcome:
        return cls(job_id, server_id, "done", result=result, preview=preview)

    @classmethod
    def failed(
        cls,
        job_id: str,
        server_id: str,
        error: ErrorInfo,
        *,
        retryable: bool = True,
        retry_delay_s: float | None = None,
    ) -> Outcome:
        return cls(
            job_id,
            server_id,
            "failed",
            error=error,
            retryable=retryable,
            retry_delay_s=retry_delay_s,
        )

    @classmethod
    def released(cls, job_id: str, server_id: str) -> Outcome:
        return cls(job_id, server_id, "released")

    @classmethod
    def expired(cls, job_id: str, server_id: str) -> Outcome:
        return cls(job_id, server_id, "expired")
