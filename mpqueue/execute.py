"""Running one claimed job in this process: the rule that turns a record into an Outcome.

A server's child (``worker.py``) and ``Queue.run_pending`` both run jobs through
``Executor``, so a job fails, retries or is dead-lettered for the same reasons
wherever it runs: a bad signature (checked before anything is unpickled), an unknown
task, a payload that cannot be unpickled, an exception or ``Retry`` from the task, a
result that cannot be pickled or is too big.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from .errors import PayloadError, Retry, SerializationError, TaskNotFound
from .job import ErrorInfo, JobRecord, Outcome, now_ms
from .protocol import MAX_RESULT
from .registry import resolve
from .serializer import dump_result, load_callable, load_payload
from .signing import verify

# How a task function is called: (record, function, args, kwargs) -> its value.
Call = Callable[[JobRecord, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]


class JobTimeout(BaseException):
    """Raised inside a job by SIGALRM when its soft time limit passes (in a child).

    A BaseException so that ``except Exception`` in user code does not swallow it
    (a bare ``except:`` still can; the coordinator's hard kill covers that).
    """


def call_plainly(
    rec: JobRecord, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call the task function with no time limit."""
    return fn(*args, **kwargs)


class Executor:
    """Runs claimed jobs, one at a time, and says how each ended.

    Parameters
    ----------
    worker_id: the server id holding the claims (named in every Outcome).
    secret: when set, only jobs signed with it are run.
    call: how the task function is called (a child arms the job's time limit here).
    passes: exceptions that leave ``run`` instead of failing the job (in-process, a
        Ctrl-C must stop the caller, not fail one job).
    """

    def __init__(
        self,
        worker_id: str,
        secret: bytes | None,
        *,
        call: Call = call_plainly,
        passes: tuple[type[BaseException], ...] = (),
    ):
        self.worker_id = worker_id
        self.secret = secret
        self.call = call
        self.passes = passes
        self.funcs: dict[Any, Callable[..., Any]] = {}  # loaded once per name or callable

    def run(self, job_id: str, rec: JobRecord | None) -> Outcome:
        """Run the job (``rec`` None: it vanished before it could run); never raises
        for anything the job does, except the ``passes`` exceptions."""
        if rec is None:  # deleted while queued: nothing to run
            lost = ErrorInfo("JobNotFound", "job vanished", kind="lost")
            return Outcome.failed(job_id, self.worker_id, lost, retryable=False)
        if self.secret is not None and not verify(
            self.secret, rec.name, rec.payload, rec.func, rec.signature
        ):
            # checked before anything of the job is unpickled: that is the point
            error = ErrorInfo(
                "BadSignature",
                "bad signature: the job is unsigned or not "
                "signed with this server's secret (MPQUEUE_SECRET)",
                attempt=rec.attempts,
                at_ms=now_ms(),
                kind="payload",
            )
            return Outcome.failed(job_id, self.worker_id, error, retryable=False)
        try:
            fn = self._callable(rec)
            args, kwargs = load_payload(rec.payload, job_id=job_id)
        except (PayloadError, TaskNotFound) as exc:
            retryable = isinstance(exc, TaskNotFound)  # a deploy may fix an import
            kind = "payload" if isinstance(exc, PayloadError) else "exception"
            return self._failed(rec, _error(exc, rec, kind), retryable=retryable)
        return self._call(rec, fn, args, kwargs)

    def _call(
        self, rec: JobRecord, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Outcome:
        try:
            value = self.call(rec, fn, args, kwargs)
        except self.passes:
            raise
        except JobTimeout:
            error = ErrorInfo(
                "JobTimeout",
                f"job exceeded its timeout of {rec.timeout_s} s",
                traceback.format_exc(),
                rec.attempts,
                now_ms(),
                "timeout",
            )
            return self._failed(rec, error)
        except Retry as exc:
            return self._failed(rec, _error(exc, rec, "retry"), retry_delay_s=exc.delay_s)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the job failed
            return self._failed(rec, _error(exc, rec, "exception"))
        try:
            result = dump_result(value)
            if len(result) > MAX_RESULT:
                raise SerializationError(
                    f"the result pickles to {len(result)} bytes, over the {MAX_RESULT}-byte limit",
                    job_id=rec.id,
                )
        except SerializationError as exc:
            return self._failed(rec, _error(exc, rec, "exception"), retryable=False)
        return Outcome.done(rec.id, self.worker_id, result)

    def _callable(self, rec: JobRecord) -> Callable[..., Any]:
        key = rec.func if rec.func is not None else rec.name
        fn = self.funcs.get(key)
        if fn is None:
            if rec.func is not None:
                fn = load_callable(rec.func, job_id=rec.id)
            else:
                found: Any = resolve(rec.name)
                fn = getattr(found, "fn", found)  # a Task wraps the plain function
            self.funcs[key] = fn
        return fn

    def _failed(
        self,
        rec: JobRecord,
        error: ErrorInfo,
        *,
        retryable: bool = True,
        retry_delay_s: float | None = None,
    ) -> Outcome:
        return Outcome.failed(
            rec.id, self.worker_id, error, retryable=retryable, retry_delay_s=retry_delay_s
        )


def _error(exc: BaseException, rec: JobRecord, kind: str) -> ErrorInfo:
    return ErrorInfo(
        type(exc).__name__, str(exc), traceback.format_exc(), rec.attempts, now_ms(), kind
    )
