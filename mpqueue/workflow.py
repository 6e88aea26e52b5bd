"""Workflows built from signatures: ``chain``, ``group`` and ``chord``, and the handle
of a group's jobs (``GroupHandle``).

A workflow is written in one transaction (``Queue.batch``): all of its jobs are in the
store, or none. Its order lives in the store as dependencies (see
``dependencies.py``), so it survives its producer, the servers' crashes and restarts:

- ``chain(a.s(x), b.s(), c.s())``: each step depends on the one before and receives its
  result as its first argument;
- ``group(sigs)``: independent jobs, one handle;
- ``chord(group, callback)``: the callback depends on every member and receives their
  results, as a list in group order, as its first argument (with
  ``allow_failures=True``, a failed member's place holds its ``JobFailed``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

from .cancellation import CancelReport
from .errors import ConfigError, JobFailed
from .handle import Job, finished_value
from .polling import Poll
from .records import FINISHED_STATES, PASS_ALL, PASS_ONE, Ending, JobRecord, JobState
from .serializer import load_result
from .task import Enqueuer, Signature


def _signatures(items: Iterable[Any], what: str) -> list[Signature]:
    sigs = list(items)
    for sig in sigs:
        if not isinstance(sig, Signature):
            raise ConfigError(f"{what} takes signatures (task.s(...)); got {sig!r}")
    if not sigs:
        raise ConfigError(f"{what} needs at least one signature")
    return sigs


def _one_queue(sigs: Sequence[Signature], what: str) -> Enqueuer:
    queue = sigs[0].queue
    if any(sig.queue is not queue for sig in sigs):
        raise ConfigError(f"the tasks of one {what} must belong to one queue")
    return queue


class chain:  # lower case: the names users know from Celery
    """Steps run one after the other; each receives the previous result first."""

    def __init__(self, *steps: Signature):
        self.steps = _signatures(steps, "chain")
        self.queue = _one_queue(self.steps, "chain")

    def delay(self) -> Job:
        """Enqueue every step in one transaction; returns the last step's handle."""
        with self.queue.batch():
            job = self.steps[0].delay()
            for step in self.steps[1:]:
                job = self.queue.enqueue(
                    step.task,
                    step.args,
                    step.kwargs,
                    key=step.key,
                    depends_on=[job],
                    pass_results=PASS_ONE,
                )
        return job


class group:
    """Independent jobs enqueued together, with one handle on all of them."""

    def __init__(self, members: Iterable[Signature]):
        self.members = _signatures(members, "group")
        self.queue = _one_queue(self.members, "group")

    def delay(self) -> GroupHandle:
        """Enqueue every member in one transaction."""
        with self.queue.batch():
            jobs = self._enqueue()
        return GroupHandle(jobs, self.queue)

    def _enqueue(self) -> list[Job]:
        """The members, a run of one task at a time through ``enqueue_many`` (one
        record template per run)."""
        jobs: list[Job] = []
        for task, run in groupby(self.members, key=lambda sig: sig.task):
            sigs = list(run)
            keys = [sig.key for sig in sigs]
            calls = [(sig.args, sig.kwargs) for sig in sigs]
            given = None if all(k is None for k in keys) else keys
            jobs += self.queue.enqueue_many(task, calls, keys=given)
        return jobs


class chord:
    """A group and a callback that runs once with all of the group's results."""

    def __init__(
        self,
        members: group | Iterable[Signature],
        callback: Signature,
        *,
        allow_failures: bool = False,
    ):
        self.group = members if isinstance(members, group) else group(members)
        if not isinstance(callback, Signature):
            raise ConfigError(f"chord's callback must be a signature; got {callback!r}")
        if callback.queue is not self.group.queue:
            raise ConfigError("a chord's callback must belong to its group's queue")
        self.callback = callback
        self.allow_failures = allow_failures

    def delay(self) -> ChordJob:
        """Enqueue the group and the callback in one transaction; returns the
        callback's handle (its ``group`` is the members' handle)."""
        queue = self.group.queue
        with queue.batch():
            members = self.group._enqueue()
            job = queue.enqueue(
                self.callback.task,
                self.callback.args,
                self.callback.kwargs,
                key=self.callback.key,
                depends_on=members,
                pass_results=PASS_ALL,
                allow_failures=self.allow_failures,
            )
        return ChordJob(job.record, job.queue, GroupHandle(members, queue))


@dataclass
class ChordJob(Job):
    """The handle of a chord's callback, with the handle of its group."""

    group: GroupHandle | None = field(default=None, repr=False)


class GroupHandle:
    """The jobs of a group, in group order. Every read is one read transaction."""

    def __init__(self, jobs: Sequence[Job], queue: Any):
        self.jobs = list(jobs)
        self.queue = queue

    @property
    def ids(self) -> list[str]:
        return [job.id for job in self.jobs]

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def _records(self, ids: Sequence[str]) -> list[JobRecord | None]:
        return self.queue.store.get_many(ids)  # type: ignore[no-any-return]

    def cancel(self, reason: str | None = None) -> CancelReport:
        """Cancel every member that has not ended, in one transaction (see
        ``Queue.cancel``): queued ones at once, running ones by their servers. A chord's
        callback is cancelled with its members, unless it allows failures."""
        return self.queue.cancel(*self.ids, reason=reason)  # type: ignore[no-any-return]

    def progress(self) -> dict[str, int]:
        """Counts of the members by outcome, from one read: ``done``, ``dead``,
        ``cancelled``, ``expired``, ``pending`` (not ended yet; a deleted member counts
        here too) and ``total``."""
        counts = {"done": 0, "dead": 0, "cancelled": 0, "expired": 0, "pending": 0}
        counts["total"] = len(self.jobs)
        for ending in self.queue.store.endings(self.ids):
            state = None if ending is None else ending.state
            counts[state.value if state in FINISHED_STATES else "pending"] += 1
        return counts

    def as_completed(self, timeout: float | None = None) -> Iterator[Job]:
        """Yield each member's handle (refreshed) as it ends, in the order they end;
        TimeoutError if ``timeout`` seconds pass before all have."""
        pending = {job.id: job for job in self.jobs}
        poll = Poll(timeout)
        while pending:
            ended = False
            ids = list(pending)
            for job_id, rec in zip(ids, self._records(ids)):
                if rec is None:
                    raise JobFailed(job_id, "the job was deleted (or expired) before it ended")
                if rec.state in FINISHED_STATES:
                    job = pending.pop(job_id)
                    job.record = rec
                    ended = True
                    yield job
            if ended:
                poll.reset()
                continue
            if poll.expired():
                raise TimeoutError(f"{len(pending)} of {len(self.jobs)} jobs still running")
            poll.sleep()

    def results(self, timeout: float | None = None) -> list[Any]:
        """Every member's result in group order, once all have ended. Raises JobFailed
        (JobCancelled for a cancelled one, JobExpired for an expired one) naming the
        first member, in group order, that did not end done; TimeoutError if
        ``timeout`` seconds pass first."""
        for _ in self.as_completed(timeout):
            pass
        for job in self.jobs:
            if job.record.state is not JobState.DONE:
                finished_value(job.id, _ending(job.record))  # raises its failure
        return [load_result(job.record.result or b"", job_id=job.id) for job in self.jobs]


def _ending(rec: JobRecord) -> Ending:
    return Ending(rec.state, rec.result, rec.errors[-1] if rec.errors else None)
