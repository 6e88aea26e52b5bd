"""Running claimed jobs in this process: the rule that turns a record into an Outcome.

A server's child (``serve/child.py``) and ``Queue.run_pending`` (``run_pending`` below) both
run jobs through ``TaskRunner``, so a job fails, retries or is dead-lettered for the
same reasons wherever it runs: a bad signature (checked before anything is
unpickled), an unknown task, a payload that cannot be unpickled, an exception (retried
as the task's ``retry_on``/``no_retry_on`` allow), ``Retry`` or ``Fail`` from the task, a
result that cannot be pickled or is too big. And a claimed job that waited past its
deadline (``expires=``, behind a server's prefetch or a batch) is not started at all: it
ends ``expired`` (see expiry.py).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from . import current as running_job
from .errors import (
    Cancelled,
    Fail,
    JobCancelled,
    JobExpired,
    JobFailed,
    PayloadError,
    Retry,
    SerializationError,
    TaskNotFound,
)
from .expiry import is_expired
from .hooks import NO_HOOKS, HookEvent, Hooks, HookTable, fire, hooks_of
from .identity import current
from .outcomes import CANCELLED, DONE, RETRIED, ending
from .previews import of_value as preview_of_value
from .records import PASS_ONE, Ending, ErrorInfo, JobRecord, JobState, Outcome, now_ms
from .registry import resolve
from .retry import retry_allowed
from .serializer import dump_result, load_callable, load_payload, load_result
from .serve.protocol import MAX_RESULT
from .signing import verify
from .store.base import Store

RUN_PENDING_BATCH = 64  # jobs run_pending claims at once (the rest stay ready for others)

# How a task function is called: (record, function, args, kwargs) -> its value.
Call = Callable[[JobRecord, Callable[..., Any], tuple[Any, ...], dict[str, Any]], Any]
# How the endings of a job's dependencies are read (one read each: ``Store.endings``).
Fetch = Callable[[Sequence[str]], list[Ending | None]]


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


class TaskRunner:
    """Runs claimed jobs, one at a time, and says how each ended.

    Parameters
    ----------
    server_id: the server id holding the claims (named in every Outcome).
    secret: when set, only jobs signed with it are run.
    call: how the task function is called (a child arms the job's time limit here).
    passes: exceptions that leave ``run`` instead of failing the job (in-process, a
        Ctrl-C must stop the caller, not fail one job).
    fetch: reads the records of a workflow job's dependencies, whose results it takes.
    progress: where the running job's progress reports go (``current.Sink``).
    hooks: the hooks of jobs whose queue cannot be found by their task's name (tasks
        stored by value, submitted callables); a server's child has none.
    """

    def __init__(
        self,
        server_id: str,
        secret: bytes | None,
        *,
        fetch: Fetch,
        call: Call = call_plainly,
        passes: tuple[type[BaseException], ...] = (),
        progress: running_job.Sink | None = None,
        hooks: Hooks | None = None,
    ):
        self.progress = progress
        self.server_id = server_id
        self.secret = secret
        self.fetch = fetch
        self.call = call
        self.passes = passes
        self.hooks = hooks
        # Loaded once per name or callable: the function and its queue's hooks.
        self.funcs: dict[Any, tuple[Callable[..., Any], HookTable]] = {}

    def run(self, job_id: str, rec: JobRecord | None) -> Outcome:
        """Run the job (``rec`` None: it vanished before it could run); never raises
        for anything the job does, except the ``passes`` exceptions."""
        if rec is None:  # deleted while queued: nothing to run
            lost = ErrorInfo("JobNotFound", "job vanished", kind="lost")
            return Outcome.failed(job_id, self.server_id, lost, retryable=False)
        if rec.expires_at_ms is not None and is_expired(rec, now_ms(), claimed=True):
            # Claimed in time, but it waited behind others (a prefetch, a batch) past
            # its deadline: it must not start now.
            return Outcome.expired(job_id, self.server_id)
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
            return Outcome.failed(job_id, self.server_id, error, retryable=False)
        try:
            fn, on = self._callable(rec)
            args, kwargs = load_payload(rec.payload, job_id=job_id)
            if rec.pass_results:
                args = (self._inputs(rec), *args)
        except (PayloadError, TaskNotFound) as exc:
            retryable = isinstance(exc, TaskNotFound)  # a deploy may fix an import
            kind = "payload" if isinstance(exc, PayloadError) else "exception"
            return self._failed(rec, _error(exc, rec, kind), retryable=retryable)
        if on:  # the one check a job of a queue without hooks pays
            return self._call_hooked(on, rec, fn, args, kwargs)
        return self._call(rec, fn, args, kwargs)[0]

    def _call_hooked(
        self,
        on: HookTable,
        rec: JobRecord,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Outcome:
        """``_call`` with the queue's hooks around it (see hooks.py)."""
        started = HookEvent("start", rec.id, rec.name, rec.attempts, self.server_id, args, kwargs)
        fire(on, started, self.passes)
        outcome, value = self._call(rec, fn, args, kwargs)
        how = ending(rec, outcome)
        if how == DONE:
            fire(on, replace(started, event="success", result=value), self.passes)
        elif how == CANCELLED:
            fire(on, replace(started, event="cancelled", exception=value), self.passes)
        else:
            failed = replace(started, event="failure", exception=value)
            fire(on, failed, self.passes)
            then = "retry" if how == RETRIED else "dead"
            fire(on, replace(failed, event=then), self.passes)
        return outcome

    def _call(
        self, rec: JobRecord, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Outcome, Any]:
        """Call the task; returns the outcome and what the call returned (done) or the
        exception that failed it."""
        try:
            value = self._invoke(rec, fn, args, kwargs)
        except self.passes:
            raise
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the job failed
            return self._raised(rec, exc), exc
        try:
            result = dump_result(value)
            if len(result) > MAX_RESULT:
                raise SerializationError(
                    f"the result pickles to {len(result)} bytes, over the {MAX_RESULT}-byte limit",
                    job_id=rec.id,
                )
        except SerializationError as exc:
            return self._failed(rec, _error(exc, rec, "exception"), retryable=False), exc
        return Outcome.done(rec.id, self.server_id, result, preview_of_value(value)), value

    def _raised(self, rec: JobRecord, exc: BaseException) -> Outcome:
        """The outcome of a call that raised ``exc`` (called while it is handled, so the
        traceback is at hand)."""
        if isinstance(exc, JobTimeout):
            error = ErrorInfo(
                "JobTimeout",
                f"job exceeded its timeout of {rec.timeout_s} s",
                traceback.format_exc(),
                rec.attempts,
                now_ms(),
                "timeout",
            )
            return self._failed(rec, error)
        if isinstance(exc, Retry):  # retried whatever retry_on says: the task asked for it
            return self._failed(rec, _error(exc, rec, "retry"), retry_delay_s=exc.delay_s)
        if isinstance(exc, Cancelled):  # its cancel came while it ran: the store ends it so
            return self._failed(rec, _error(exc, rec, "cancelled"), retryable=False)
        if isinstance(exc, Fail):
            return self._failed(rec, _error(exc, rec, "fail"), retryable=False)
        # Matched by the names of its classes: nothing of the user's is imported here.
        retryable = retry_allowed(exc, rec.retry_on, rec.no_retry_on)
        return self._failed(rec, _error(exc, rec, "exception"), retryable=retryable)

    def _invoke(
        self, rec: JobRecord, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """The task's call, with ``current_job()`` set to it."""
        running_job.started(rec, self.progress)
        try:
            return self.call(rec, fn, args, kwargs)
        finally:
            running_job.ended()

    def _inputs(self, rec: JobRecord) -> Any:
        """The results of the job's dependencies, read in one go (a chain's step takes
        the one result, a chord's callback the list, a failure's JobFailed in its place
        where the job allows failures). PayloadError if one is gone or unreadable."""
        values = []
        for job_id, dep in zip(rec.depends_on, self.fetch(rec.depends_on)):
            if dep is None:
                raise PayloadError(
                    f"the result of dependency {job_id} is gone (deleted or expired)",
                    job_id=rec.id,
                )
            if dep.state is JobState.DONE:
                values.append(load_result(dep.result or b"", job_id=job_id))
            elif dep.state is JobState.CANCELLED:
                values.append(JobCancelled(job_id, dep.error))
            elif dep.state is JobState.EXPIRED:
                values.append(JobExpired(job_id, dep.error))
            else:
                values.append(JobFailed(job_id, dep.error))
        return values[0] if rec.pass_results == PASS_ONE else values

    def _callable(self, rec: JobRecord) -> tuple[Callable[..., Any], HookTable]:
        """The job's function and its queue's hooks (loaded once per name or callable;
        a first job of a queue runs its child_start hooks first)."""
        key = rec.func if rec.func is not None else rec.name
        loaded = self.funcs.get(key)
        if loaded is None:
            if rec.func is not None:
                fn = load_callable(rec.func, job_id=rec.id)
                hooks = self.hooks
            else:
                found: Any = resolve(rec.name)
                fn = getattr(found, "fn", found)  # a Task wraps the plain function
                hooks = hooks_of(found, self.hooks)
            if hooks is not None:
                hooks.child_started()
            loaded = self.funcs[key] = (fn, NO_HOOKS if hooks is None else hooks.table)
        return loaded

    def _failed(
        self,
        rec: JobRecord,
        error: ErrorInfo,
        *,
        retryable: bool = True,
        retry_delay_s: float | None = None,
    ) -> Outcome:
        return Outcome.failed(
            rec.id, self.server_id, error, retryable=retryable, retry_delay_s=retry_delay_s
        )


def run_pending(
    store: Store, secret: bytes | None, limit: int | None = None, hooks: Hooks | None = None
) -> int:
    """Run every due job of ``store`` in this process, as a server would, until none is
    due (or ``limit`` runs were made); returns how many runs it made.

    Jobs are claimed under this process's server id, so a server's recovery leaves
    them alone while this process lives. A claimed job whose deadline (``expires=``)
    passed while the batch ran ends expired, not run. Each outcome is committed as soon
    as its job ends; a failed job with retries left is rescheduled with backoff (so it is not due
    again at once). No time limit is enforced: a job's ``timeout`` needs a child
    process to stop it. A Ctrl-C (KeyboardInterrupt) in a job puts back the jobs of
    the batch that have not finished, uncharged, and is raised again. ``hooks``: those of
    jobs whose task's queue cannot be found by its name (see ``TaskRunner``).
    """
    runner = TaskRunner(
        current().server_id,
        secret,
        fetch=store.endings,
        passes=(KeyboardInterrupt,),
        progress=lambda job_id, report: store.record_progress({job_id: report}),
        hooks=hooks,
    )
    runs = 0
    while limit is None or runs < limit:
        now = now_ms()
        store.promote_due(now)
        batch = RUN_PENDING_BATCH if limit is None else min(RUN_PENDING_BATCH, limit - runs)
        claimed = store.claim(runner.server_id, batch, now)
        if not claimed:
            break
        for ran, rec in enumerate(claimed):
            try:
                outcome = _run_in_process(runner, rec)
            except BaseException:
                late = claimed[ran:]
                store.finish([Outcome.released(r.id, runner.server_id) for r in late], now_ms())
                raise
            store.finish([outcome], now_ms())
            runs += outcome.kind != "expired"  # past its deadline: not run
    return runs


def _run_in_process(runner: TaskRunner, rec: JobRecord) -> Outcome:
    """``runner.run``, where what would crash a child (an error the rule does not
    map, raised while the job is loaded) fails the job as a crash would: retried at
    once, here with the exception that caused it."""
    try:
        return runner.run(rec.id, rec)
    except Exception as exc:
        error = _error(exc, rec, "crash")
        return Outcome.failed(rec.id, runner.server_id, error, retry_delay_s=0.0)


def _error(exc: BaseException, rec: JobRecord, kind: str) -> ErrorInfo:
    return ErrorInfo(
        type(exc).__name__, str(exc), traceback.format_exc(), rec.attempts, now_ms(), kind
    )
