"""The dependency graph's rules: when a job that waits for others may start, and what
the end of a job does to the jobs waiting for it.

A job with ``depends_on`` is stored with one edge per dependency and a count of the
edges still open. An edge counts once, in the transaction that records its
dependency's end (done, dead, cancelled, or deleted before it ended): a job ends only
once, except a dead job taken back (requeued), and the store closes that job's edges
when it takes it back, so its second end counts nothing. Ending writes nothing to the
edges themselves. So a waiting job is released exactly once, and releasing costs O(1)
per finished dependency, whatever the fan-in:

- a dependency done: the count goes down; at zero the job is queued (ready, or
  scheduled if its run-at is still ahead);
- a dependency that ended otherwise: the job is cancelled, naming it, and so on down
  the graph, in the same transaction; unless the job was enqueued with
  ``allow_failures``, which counts it down as if it were done (a chord's callback then
  receives that member's error in its place).

A job released past its deadline (``expires=``, see ``expiry.py``) ends expired
instead of being queued, and its own dependents are settled as for a failed job.

Every store calls ``admit`` and ``settle`` and only supplies a ``Graph``: its
transaction's view of the edges and the waiting jobs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .cancellation import cancel_entry
from .errors import ConfigError
from .expiry import expired, is_expired
from .limits import DEPENDENCIES_MAX
from .records import FAILED_STATES, FINISHED_STATES, JobRecord, JobState, is_job_id

# How a dependency's end reads in the reason of the jobs it cancels.
ENDINGS = {
    JobState.DEAD: "ended dead",
    JobState.CANCELLED: "was cancelled",
    JobState.EXPIRED: "expired before it started",
    None: "was deleted before it ended",
}


class Graph(Protocol):
    """One store transaction's view of the dependency edges and the waiting jobs."""

    def open_edges(self, job_id: str) -> list[str]:
        """The jobs with an open edge from ``job_id`` (which is ending), in a stable
        order. The edges stay as they are: an edge from a job that ended is open only
        in storage, and no job ends twice without its edges being closed first."""
        ...

    def open_count(self, job_id: str) -> tuple[int, bool] | None:
        """A waiting job's count of open edges and its ``allow_failures``; None when the
        job is not waiting (cancelled, deleted)."""
        ...

    def count_down(self, job_id: str, open_deps: int) -> None:
        """Store a waiting job's new count (at least 1)."""
        ...

    def load(self, job_id: str) -> JobRecord: ...

    def file_released(self, rec: JobRecord) -> None:
        """Queue a job that waited (its record is ready or scheduled; it gets a new FIFO
        number) and drop its count."""
        ...

    def file_cancelled(self, rec: JobRecord, reason: str) -> None:
        """Store a cancelled job (with ``reason``) and drop its count."""
        ...

    def file_expired(self, rec: JobRecord) -> None:
        """Store a job that expired as it would have been released, and drop its count."""
        ...


@dataclass(frozen=True)
class Admission:
    """How a new job with dependencies enters the store."""

    record: JobRecord  # waiting, cancelled, or queued as given when nothing is open
    open_edges: tuple[bool, ...]  # per dependency, in ``depends_on`` order
    reason: str = ""  # why it is cancelled ("" unless it is)

    @property
    def open_deps(self) -> int:
        # Edges are per job, so a job named twice is waited for once: jobs of one add
        # whose key one holder held all read as that holder in a later job's depends_on.
        open_ids = {dep for dep, is_open in zip(self.record.depends_on, self.open_edges) if is_open}
        return len(open_ids)


# What ``depends_on=`` takes: a job (anything with an ``id``), a job id, or an iterable
# of them (a list, a group's handle); None for none.
Dependencies = Any  # None | str | a job | Iterable[str | a job]


def dependency_ids(depends_on: Dependencies) -> tuple[str, ...]:
    """The job ids ``depends_on`` names, checked (ConfigError: a malformed or repeated
    id, too many of them)."""
    if depends_on is None:
        return ()
    if isinstance(depends_on, str) or hasattr(depends_on, "id"):
        depends_on = [depends_on]
    try:
        items = list(depends_on)
    except TypeError:
        raise ConfigError(
            f"depends_on takes jobs, job ids or a list of them; got {depends_on!r}"
        ) from None
    # A handle's id came from a record this library made: only given ids are checked
    # (a chord's callback names thousands of handles).
    ids = [
        item.record.id if isinstance(getattr(item, "record", None), JobRecord) else item
        for item in items
    ]
    for item, job_id in zip(items, ids):
        if item is job_id and not is_job_id(job_id):
            raise ConfigError(f"depends_on takes jobs or job ids; got {job_id!r}")
    if len(ids) > DEPENDENCIES_MAX:
        raise ConfigError(
            f"depends_on names {len(ids)} jobs; the most one job may wait for is {DEPENDENCIES_MAX}"
        )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        for job_id in ids:
            if job_id in seen:
                raise ConfigError(f"depends_on names job {job_id} twice")
            seen.add(job_id)
    return tuple(ids)


def check_add_order(records: Sequence[JobRecord]) -> None:
    """Refuse (ConfigError) an add in which a job depends on a job that comes later in
    it: every store writes an add in its order, so a dependency must come first."""
    later = {rec.id for rec in records}
    for rec in records:
        later.discard(rec.id)
        for dep in rec.depends_on:
            if dep in later:
                raise ConfigError(f"job {rec.id} depends on job {dep}, which comes after it")


def on_holders(rec: JobRecord, replaced: dict[str, str]) -> JobRecord:
    """``rec`` depending on the holders of the keys of the jobs of its add that were not
    added (``replaced``: their ids -> the holders'), in their places."""
    if not replaced or not rec.depends_on:
        return rec
    return rec.evolve(depends_on=tuple(replaced.get(d, d) for d in rec.depends_on))


def admit(rec: JobRecord, found: Sequence[JobRecord | None], now_ms: int) -> Admission:
    """The entry of ``rec`` given its dependencies as the store holds them now (``found``,
    in ``depends_on`` order; None for a job that does not exist, which is refused:
    ConfigError, and the caller's transaction writes nothing)."""
    # One pass over the states: a chord's callback has a dependency per member.
    found_states = [None if dep is None else dep.state for dep in found]
    if None in found_states:
        missing = rec.depends_on[found_states.index(None)]
        raise ConfigError(f"depends_on names job {missing}, which does not exist")
    if not rec.allow_failures and not FAILED_STATES.isdisjoint(found_states):
        dep = next(d for d in found if d is not None and d.state in FAILED_STATES)
        reason = _reason(dep.id, dep.name, dep.state)
        return Admission(cancelled(rec, reason, now_ms), (False,) * len(found), reason)
    open_edges = tuple(state not in FINISHED_STATES for state in found_states)
    if any(open_edges):
        waiting = rec.evolve()
        waiting.state = JobState.WAITING  # a new job: it enters in this state
        return Admission(waiting, open_edges)
    return Admission(rec, open_edges)


def settle(graph: Graph, job_id: str, name: str, end: JobState | None, now_ms: int) -> None:
    """Apply the end of job ``job_id`` (of task ``name``) to the jobs waiting for it:
    ``end`` is DONE, DEAD, CANCELLED or EXPIRED, or None for a job deleted before it
    ended."""
    pending = [(job_id, name, end, "")]
    while pending:
        dep_id, dep_name, dep_end, cause = pending.pop()
        failed = dep_end is not JobState.DONE
        for dependent in graph.open_edges(dep_id):
            entry = graph.open_count(dependent)
            if entry is None:
                continue  # cancelled by another of its dependencies, or deleted
            open_deps, allow_failures = entry
            if failed and not allow_failures:
                reason = _reason(dep_id, dep_name, dep_end) + cause
                rec = cancelled(graph.load(dependent), reason, now_ms)
                graph.file_cancelled(rec, reason)
                pending.append((rec.id, rec.name, JobState.CANCELLED, cause or _because(reason)))
            elif open_deps > 1:
                graph.count_down(dependent, open_deps - 1)
            else:
                rec = released(graph.load(dependent), now_ms)
                if rec.state is JobState.EXPIRED:
                    graph.file_expired(rec)
                    pending.append((rec.id, rec.name, JobState.EXPIRED, ""))
                else:
                    graph.file_released(rec)


def released(rec: JobRecord, now_ms: int) -> JobRecord:
    """A waiting job with nothing left open, queued: scheduled while its run-at is
    ahead; ended expired if its deadline has passed (``expiry.is_expired``)."""
    if rec.expires_at_ms is not None and is_expired(rec, now_ms):
        return expired(rec, now_ms)
    state = JobState.SCHEDULED if rec.run_at_ms > now_ms else JobState.READY
    return rec.evolve(state=state)


def cancelled(rec: JobRecord, reason: str, now_ms: int) -> JobRecord:
    """``rec`` ended cancelled now, ``reason`` last in its history (a cancel's text, or
    the dependency that failed)."""
    error = cancel_entry(reason, rec.attempts, now_ms)
    cancelled_rec = rec.evolve(errors=rec.errors + (error,), finished_at_ms=now_ms)
    cancelled_rec.state = JobState.CANCELLED  # new jobs too, which were never waiting
    return cancelled_rec


def _reason(job_id: str, name: str, end: JobState | None) -> str:
    return f"dependency {job_id} ({name}) {ENDINGS.get(end, 'ended')}"


def _because(reason: str) -> str:
    """The root cause, carried down a cancelled chain: every job it cancels names it."""
    return f", because {reason}"
