"""The mpqueue exception tree.

Every error mpqueue raises on purpose derives from ``MpqueueError``, so callers can
catch one class. Foreign errors (``lmdb.Error``, pickling errors) are translated
where they enter and chained as ``__cause__``.

    MpqueueError
    ├── ConfigError          bad option, bad path, bad task registration
    │   └── DuplicateTask    two tasks registered under one name
    ├── TaskNotFound         a task name that cannot be imported or resolved
    ├── SerializationError   arguments, result or payload that cannot be (un)pickled
    │   └── PayloadError     a stored payload that cannot be loaded (never retried)
    ├── StoreError           the store failed (wraps lmdb.Error / driver errors)
    │   ├── StoreFull        the map or the disk is full
    │   └── StoreCorrupt     a store file is damaged (truncated, a bad page)
    ├── JobNotFound          no job with that id
    ├── JobFailed            job.result() on a dead job; carries the remote traceback
    │   ├── JobCancelled     job.result() on a cancelled job (a dependency failed)
    │   └── JobExpired       job.result() on a job that expired before it started
    ├── ExecutorBroken       the servers an Executor started kept exiting before serving
    │                        (also a concurrent.futures.BrokenExecutor)
    ├── Retry                raised by a task to ask for a retry after ``delay_s``
    ├── Fail                 raised by a task to end its job dead at once, unretried
    ├── CorruptRecord        (internal) a stored value that cannot be decoded; the
    │                        stores catch it and show the job as a corrupt stand-in
    └── ProtocolError        (internal) a worker child sent bytes that are not a
                             message; the server treats it as that child's crash

    Cancelled (a BaseException, like KeyboardInterrupt): raised inside a running job
    whose cancel was requested, so that ``except Exception`` does not swallow it
"""

from __future__ import annotations

from concurrent.futures import BrokenExecutor
from typing import Any

from .display import describe


class MpqueueError(Exception):
    """Base class of every error mpqueue raises on purpose."""


class ConfigError(MpqueueError, ValueError):
    """An option, a path or a task registration is invalid."""


class DuplicateTask(ConfigError):
    """A task name is already registered on this queue."""


class TaskNotFound(MpqueueError, LookupError):
    """A task name could not be imported or resolved to a callable."""


class SerializationError(MpqueueError):
    """Arguments, a result or a stored payload could not be (un)pickled.

    ``job_id`` names the job when one is known; ``raw`` keeps the bytes that failed
    to load, so nothing is thrown away.
    """

    def __init__(self, message: str, *, job_id: str | None = None, raw: bytes | None = None):
        super().__init__(message)
        self.job_id = job_id
        self.raw = raw


class PayloadError(SerializationError):
    """A stored job payload cannot be loaded; retrying would not help."""


class StoreError(MpqueueError):
    """The job store failed; the original driver error is chained as ``__cause__``."""


class StoreFull(StoreError):
    """The store cannot grow: its map reached the configured maximum or the disk is full."""


class StoreCorrupt(StoreError):
    """A store file is damaged (truncated, or a page LMDB cannot read); the message
    names the file. Retrying does not help: restore it from a backup."""


class JobNotFound(MpqueueError, KeyError):
    """No job with the given id exists in the store."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "job not found"


class JobFailed(MpqueueError):
    """Raised by ``Job.result()`` when the job ended in the dead-letter queue.

    ``error`` is the last failure (type, message and remote traceback text).
    """

    def __init__(self, job_id: str, error: object):
        self.job_id = job_id
        self.error = error
        super().__init__(f"job {job_id} failed: {error}")


class JobCancelled(JobFailed):
    """Raised by ``Job.result()`` when the job was cancelled; ``error`` says why (the
    dependency that failed, for a job of a workflow)."""

    def __init__(self, job_id: str, error: object):
        super().__init__(job_id, error)
        self.args = (f"job {job_id} was cancelled: {error}",)


class JobExpired(JobFailed):
    """Raised by ``Job.result()`` when the job was not started by its deadline
    (``expires=``); ``error`` says which deadline."""

    def __init__(self, job_id: str, error: object):
        super().__init__(job_id, error)
        self.args = (f"job {job_id} expired: {error}",)


class Cancelled(BaseException):
    """Raised inside a running job when it is cancelled (``job.cancel()``, ``mpqueue
    cancel``). Let it propagate: the job then ends ``cancelled`` at once. A job that
    catches it and goes on is killed after the server's ``--timeout-grace``."""


class ExecutorBroken(MpqueueError, BrokenExecutor):
    """The ``mpqueue serve`` processes an ``Executor`` started exited before serving its
    store, several times in a row; its pending futures fail with this error."""


class Retry(MpqueueError):
    """Raise inside a task to retry the job after ``delay_s`` seconds (counts an attempt)."""

    def __init__(self, delay_s: float | None = None, reason: str = ""):
        if delay_s is not None:
            from .limits import CENTURY_TEXT, DELAY_MAX_S, check_delay  # imports this module

            delay_s = check_delay(delay_s, "Retry delay", DELAY_MAX_S, CENTURY_TEXT)
        self.delay_s = delay_s
        self.reason = reason
        super().__init__(reason or f"retry requested (delay {describe(delay_s)} s)")


class Fail(MpqueueError):
    """Raise inside a task to end the job dead at once, with ``reason`` as its error:
    no retry, whatever retries the job has left (``retry_on`` does not apply)."""

    def __init__(self, reason: str = ""):
        self.reason = reason
        super().__init__(reason)


class CorruptRecord(MpqueueError):
    """A stored record, claim or entry could not be decoded (never leaves a store)."""


class ProtocolError(MpqueueError):
    """A worker child sent something that is not a well-formed message.

    ``messages`` holds the well-formed ones that came before it, still to be handled.
    """

    def __init__(self, reason: str, messages: list[Any] | None = None):
        super().__init__(reason)
        self.messages = messages or []
