"""``Job``: the handle users get back, a snapshot of a record plus the queue it came
from (``refresh()`` re-reads it, ``result()`` waits for it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from .cancellation import CancelReport
from .errors import JobCancelled, JobExpired, JobFailed, JobNotFound
from .records import Ending, ErrorInfo, JobRecord, JobState, Progress
from .serializer import load_payload, load_result
from .store.base import Store


class JobSource(Protocol):
    """What a handle needs from its queue (``Queue`` is one)."""

    @property
    def store(self) -> Store: ...

    def wait_finished(self, job_id: str, timeout: float | None) -> JobRecord: ...

    def cancel(self, *job_ids: str, reason: str | None = None) -> CancelReport: ...


@dataclass
class Job:
    """A user's handle on one job: a snapshot of its record.

    Attributes are as of the moment the handle was made; ``refresh()`` re-reads them
    and ``result()`` waits for the job to finish.
    """

    record: JobRecord
    queue: JobSource = field(repr=False)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def state(self) -> str:
        return self.record.state.value

    @property
    def attempts(self) -> int:
        return self.record.attempts

    @property
    def priority(self) -> int:
        return self.record.priority

    @property
    def errors(self) -> tuple[ErrorInfo, ...]:
        return self.record.errors

    @property
    def error(self) -> ErrorInfo | None:
        """The last failure, or None if the job never failed."""
        return self.record.errors[-1] if self.record.errors else None

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The ids of the jobs this one waits for (or waited for), in order."""
        return self.record.depends_on

    @property
    def key(self) -> str | None:
        """The job's unique key (``key=``), or None."""
        return self.record.key

    def dependents(self) -> list[str]:
        """The ids of the jobs that depend on this one, read from the store."""
        return self.queue.store.dependents(self.id)

    @property
    def expires_at(self) -> datetime | None:
        """The job's deadline to start (``expires=``), or None if it never expires."""
        deadline = self.record.expires_at_ms
        return None if deadline is None else datetime.fromtimestamp(deadline / 1000, timezone.utc)

    @property
    def run_at(self) -> datetime:
        return datetime.fromtimestamp(self.record.run_at_ms / 1000, tz=timezone.utc)

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.record.created_at_ms / 1000, tz=timezone.utc)

    def args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The job's positional and keyword arguments, unpickled."""

        if not self.record.payload:  # a listed job: listings leave the payload out
            self.refresh()
        return load_payload(self.record.payload, job_id=self.id)

    def refresh(self) -> Job:
        """Re-read this job from the store; raises JobNotFound if it was deleted."""
        record = self.queue.store.get(self.id)
        if record is None:
            raise JobNotFound(f"job {self.id} no longer exists")
        self.record = record
        return self

    def result(self, timeout: float | None = None) -> Any:
        """Wait until the job is done and return its value.

        Raises JobFailed (with the remote traceback) if the job ended dead,
        JobCancelled (a JobFailed) if it was cancelled, JobExpired (a JobFailed) if it
        was not started by its deadline (``expires=``), TimeoutError if ``timeout``
        seconds pass first, JobNotFound if it was deleted.
        """

        self.record = self.queue.wait_finished(self.id, timeout)
        rec = self.record
        return finished_value(rec.id, Ending(rec.state, rec.result, self.error))

    @property
    def progress(self) -> Progress | None:
        """The job's last progress report (``current_job().progress``), read from the
        store now; None if it has reported none."""
        return self.queue.store.progress([self.id])[0]

    def cancel(self, reason: str | None = None) -> bool:
        """Cancel this job (see ``Queue.cancel``): True if it ended cancelled now or,
        running, is being stopped by its server; False if it had ended already.
        Raises JobNotFound if it no longer exists. The handle is refreshed."""
        report = self.queue.cancel(self.id, reason=reason)
        if report.missing:
            raise JobNotFound(f"job {self.id} no longer exists")
        self.refresh()
        return bool(report.cancelled or report.requested)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (no payload bytes), for the command line."""
        rec = self.record
        return {
            "id": rec.id,
            "name": rec.name,
            "state": rec.state.value,
            "queue": rec.queue,
            "priority": rec.priority,
            "attempts": rec.attempts,
            "max_retries": rec.max_retries,
            "timeout_s": rec.timeout_s,
            "run_at_ms": rec.run_at_ms,
            "created_at_ms": rec.created_at_ms,
            "finished_at_ms": rec.finished_at_ms,
            "errors": [e.__dict__ for e in rec.errors],
            "depends_on": list(rec.depends_on),
            "key": rec.key,
            "expires_at_ms": rec.expires_at_ms,
        }


def finished_value(job_id: str, ending: Ending) -> Any:
    """The value of a finished job, unpickled from its ending (``Job.result`` and the
    ``Executor``'s futures both read results here, the one place that unpickles them).

    Raises JobFailed (with the remote traceback) for a dead job, JobCancelled for a
    cancelled one, JobExpired for an expired one, PayloadError for a result that cannot
    be loaded.
    """
    if ending.state is JobState.DEAD:
        raise JobFailed(job_id, ending.error)
    if ending.state is JobState.CANCELLED:
        raise JobCancelled(job_id, ending.error)
    if ending.state is JobState.EXPIRED:
        raise JobExpired(job_id, ending.error)
    return load_result(ending.result or b"", job_id=job_id)
