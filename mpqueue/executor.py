"""``Executor``: a durable ``concurrent.futures.Executor`` on a store.

Every call is a job in the store, so work survives a crash of the script, of a worker or
of the server. While it is open the Executor serves the store itself, with one
``mpqueue serve`` child process, unless a live server already serves it. One watcher
thread turns finished records into finished futures: it reads the records of pending
jobs, oldest first, and stops a pass after a run of unfinished ones (servers run jobs
about in the order they were enqueued), so a pass costs about what finished since the
last one, not one read per pending job; a slower sweep over the rest catches the jobs
that finished out of order.

The server is started, watched and stopped by ``serve/launcher.py``; it stops when the
Executor shuts down or when this process dies, however it dies.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from .errors import ConfigError, ExecutorBroken, JobNotFound
from .handle import finished_value
from .limits import check_int
from .location import is_memory
from .queue import Queue
from .records import FINISHED_STATES, Ending
from .registry import check_name, task_name
from .serve.launcher import ServerLauncher
from .task import Task, TaskOptions

log = logging.getLogger("mpqueue.executor")

WATCH_MIN_S = 0.001  # the pause between passes right after a job finished
WATCH_MAX_S = 0.05  # ... doubling up to this while nothing finishes
READ_CHUNK = 8  # records read per store call in a pass
UNFINISHED_RUN = 8  # a pass stops after this many unfinished records in a row
HEAD_IDS = 4096  # the most records one pass reads
SWEEP_IDS = 64  # records the sweep reads beyond the pass, at most every SWEEP_EVERY_S
SWEEP_EVERY_S = 0.1
SERVE_CHECK_S = 1.0  # how often the watcher checks that a live server serves the store


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` whose calls are durable jobs.

    ``future.result()`` re-raises a job's failure as ``JobFailed`` (the remote error's
    type, message and traceback are in its ``error``), not as the original exception:
    nothing from a job is unpickled but its return value. Every future has the
    ``job_id`` of its job.

    Parameters
    ----------
    queue
        A ``Queue``, or its location: an LMDB directory or a ``postgresql://`` URL
        (default ``$MPQUEUE_PATH``, else ``./mpqueue-data``). A ``memory://`` store cannot
        be served by another process and is refused.
    max_workers
        Worker processes of the server this Executor starts (default: the CPU count).
        No server is started while a live one already serves the store.
    task_options
        Options of the jobs of plain callables, as for ``@queue.task``: ``retries``
        (default 3: a crashed worker costs an attempt, so an item that segfaults once
        still succeeds), ``timeout``, ``priority``, ``backoff``, ``backoff_cap``. A
        ``Task`` passed to ``submit`` or ``map`` keeps its own options.

    Raises
    ------
    ConfigError
        For a memory store, a bad ``max_workers`` or a bad option.
    """

    def __init__(
        self,
        queue: Queue | str | os.PathLike[str] | None = None,
        max_workers: int | None = None,
        **task_options: Any,
    ):
        if "name" in task_options:
            raise ConfigError("Executor takes no name: each job is named after its callable")
        self.options = TaskOptions.from_kwargs(task_options)
        workers = (os.cpu_count() or 1) if max_workers is None else max_workers
        self.max_workers = check_int("max_workers", workers, 1, 4096)
        self._owns_queue = not isinstance(queue, Queue)
        self.queue = queue if isinstance(queue, Queue) else Queue(queue)
        if is_memory(self.queue.path):
            raise ConfigError(
                f"Executor needs a store that a server process can reach; "
                f"{self.queue.path!r} lives in this process's memory (use a directory "
                f"or a postgresql:// URL)"
            )
        self._shutdown_lock = threading.Lock()
        self._closed = False
        self._watcher = _Watcher(self.queue, ServerLauncher(self.queue, self.max_workers))
        try:
            self._watcher.begin()  # raises what starting a server raised
        except BaseException:
            if self._owns_queue:
                self.queue.close()
            raise

    # ---- enqueueing ---------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture:
        """Enqueue ``fn(*args, **kwargs)`` as one job; its future.

        An importable function is stored by name (the workers import it), anything else
        (a lambda, a closure, a function of ``__main__``) by value. A ``Task`` keeps its
        name and options.
        """
        with self._shutdown_lock:
            self._refuse_if_closed()
            job = self.queue.enqueue(self._task(fn), args, kwargs)
            return self._watcher.track([job.id])[0]

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        key: Callable[..., str] | None = None,
    ) -> Iterator[Any]:
        """``fn`` over the items of ``iterables``, enqueued as one job per item in one
        transaction; the results come back in order.

        ``key``, called with each item's arguments, returns a str that names its job:
        while a job of ``fn`` with that key exists and is neither dead nor cancelled, the
        item reuses it instead of adding another, so a script run again after a crash
        computes only what is missing.
        ``timeout``: seconds from this call after which the iterator raises
        TimeoutError. ``chunksize`` is accepted for compatibility: every item is a job.
        """
        if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
            raise ConfigError(f"chunksize must be an integer >= 1; got {chunksize!r}")
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = list(zip(*iterables))
        with self._shutdown_lock:
            self._refuse_if_closed()
            task = self._task(fn)
            jobs = task.map(calls, key=key)
            futures = self._watcher.track([job.id for job in jobs])
        return _results_in_order(futures, deadline, self._watcher)

    def _task(self, fn: Callable[..., Any]) -> Task:
        if isinstance(fn, Task):
            return Task(self.queue, fn.fn, fn.name, fn.config)
        if not callable(fn):
            raise ConfigError(f"Executor needs a callable; got {fn!r}")
        return Task(self.queue, fn, check_name(task_name(fn)), self.options)

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self.queue.batching:  # its jobs would not exist until the block ends
            raise ConfigError(
                "an Executor's calls cannot be made inside queue.batch() on its queue: "
                "their futures would wait for jobs written only when the block ends"
            )
        self._watcher.raise_if_broken()

    # ---- ending ---------------------------------------------------------------------------
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls. ``cancel_futures``: cancel every pending future (its job is
        deleted: a queued one never runs, see ``JobFuture``). ``wait``: return once every
        other future is done and the server this Executor started has stopped; without
        it that happens in the background (while the interpreter runs)."""
        with self._shutdown_lock:
            self._closed = True
        if cancel_futures:
            self._watcher.cancel_queued()
        self._watcher.close()
        if not wait:
            return  # what is still pending at interpreter exit is abandoned (see below)
        self._watcher.join()
        if self._owns_queue:
            self.queue.close()


def _results_in_order(
    futures: list[JobFuture], deadline: float | None, watcher: _Watcher
) -> Iterator[Any]:
    """Each future's result in turn; leaving early (an error, a timeout, the iterator
    closed) cancels every future not yet read, as the standard library does, and their
    jobs in one store transaction (one by one, a running job's cancel could stop it
    before the cancels of the jobs queued behind it reach its worker)."""
    futures.reverse()  # popped from the end, so the list lets go of each result once read
    try:
        while futures:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            result = futures[-1].result(left)
            futures.pop()
            yield result
    finally:
        watcher.cancel_futures(futures, _CANCELLED)


_CANCELLED = "its Executor future was cancelled"
_SHUT_DOWN = "its Executor was shut down with cancel_futures=True"


class JobFuture(concurrent.futures.Future[Any]):
    """A future on one job; ``cancel()`` cancels the job (``Queue.cancel``): a queued
    one never runs, a running one is stopped by its server.

    A record cannot tell a job waiting at a worker (servers hand workers several jobs
    ahead) from a running one, so a future stays pending, and can be cancelled, until
    its job has finished.
    """

    def __init__(self, job_id: str, on_cancel: Callable[[JobFuture], None]):
        super().__init__()
        self.job_id = job_id
        self._on_cancel = on_cancel

    def cancel(self) -> bool:
        if not super().cancel():
            return False
        self._on_cancel(self)
        return True


class _Watcher:
    """The thread that finishes futures from the store, and keeps the store served."""

    def __init__(self, queue: Queue, launcher: ServerLauncher):
        self.queue = queue
        self.launcher = launcher
        self.pending: dict[str, JobFuture] = {}  # submission order: oldest first
        self.lock = threading.Lock()  # guards pending: whoever pops a future finishes it
        self.wake = threading.Event()
        self.closing = False  # shut down: end once nothing is pending
        self.abandoned = False  # end now
        self.broken: ExecutorBroken | None = None
        self.sweep_at = 0  # where in pending the next sweep starts
        self.swept_s = 0.0
        self.thread = threading.Thread(target=self._run, name="mpqueue-executor", daemon=True)
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    # ---- called by the Executor -----------------------------------------------------------
    def begin(self) -> None:
        self.thread.start()
        self._started.wait()
        if self._start_error is not None:
            self.thread.join()
            raise self._start_error

    def track(self, job_ids: Sequence[str]) -> list[JobFuture]:
        futures = [JobFuture(job_id, self._cancelled) for job_id in job_ids]
        with self.lock:
            for future in futures:
                # A keyed job already tracked (the same key twice) shares its future.
                self.pending.setdefault(future.job_id, future)
            shared = [self.pending.get(f.job_id, f) for f in futures]
        self.wake.set()
        return shared

    def cancel_queued(self) -> None:
        """Cancel every pending future, and their jobs in one store transaction."""
        with self.lock:
            futures = list(self.pending.values())
        self.cancel_futures(futures, _SHUT_DOWN)

    def cancel_futures(self, futures: Sequence[JobFuture], reason: str) -> None:
        """Cancel the futures not done yet, and their jobs in one store transaction."""
        ids = [f.job_id for f in futures if concurrent.futures.Future.cancel(f) and self._forget(f)]
        if ids:
            self.queue.cancel(*ids, reason=reason)
            self.wake.set()

    def close(self) -> None:
        self.closing = True
        self.wake.set()

    def abandon(self) -> None:
        self.abandoned = True
        self.wake.set()

    def join(self) -> None:
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join()

    def raise_if_broken(self) -> None:
        if self.broken is not None:
            raise self.broken

    def _cancelled(self, future: JobFuture) -> None:
        """A future was cancelled: cancel its job (a running one is stopped)."""
        if self._forget(future):
            self.queue.cancel(future.job_id, reason=_CANCELLED)
            self.wake.set()

    def _forget(self, future: JobFuture) -> bool:
        """Stop tracking a cancelled future; False if another call did first."""
        with self.lock:
            owned = self.pending.get(future.job_id) is future
            if owned:
                del self.pending[future.job_id]
                future.set_running_or_notify_cancel()  # wait() and as_completed() see it
        return owned

    # ---- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.launcher.ensure_served()
        except BaseException as exc:  # handed to the constructor's caller
            self._start_error = exc
            self._started.set()
            return
        _RUNNING.add(self)
        self._started.set()
        try:
            self._watch()
        finally:
            self.launcher.stop()
            _RUNNING.discard(self)

    def _watch(self) -> None:
        pause = WATCH_MIN_S
        checked = time.monotonic()
        while not self.abandoned and not (self.closing and not self.pending):
            try:
                finished = self._pass() if self.pending else 0
                if time.monotonic() - checked >= SERVE_CHECK_S:
                    checked = time.monotonic()
                    self._check_served()
            except Exception:  # a failing store: its futures wait, the thread goes on
                log.exception("reading the store failed; trying again")
                finished = 0
            pause = WATCH_MIN_S if finished else min(pause * 2, WATCH_MAX_S)
            self.wake.wait(pause if self.pending else SERVE_CHECK_S)
            self.wake.clear()

    def _check_served(self) -> None:
        try:
            self.launcher.ensure_served()
        except ExecutorBroken as exc:
            self.broken = exc
            self._fail_all(exc)

    def _pass(self) -> int:
        """Read the oldest pending records until a run of unfinished ones, then maybe
        sweep further on; returns how many futures finished."""
        finished = unfinished = kept = 0
        while kept < HEAD_IDS and unfinished < UNFINISHED_RUN:
            with self.lock:  # the finished ones left pending: the unfinished come next
                chunk = list(itertools.islice(self.pending, kept, kept + READ_CHUNK))
            for job_id, record in zip(chunk, self._read(chunk)):
                done = self._settle(job_id, record)
                finished += done
                kept += not done
                unfinished = 0 if done else unfinished + 1
            if len(chunk) < READ_CHUNK:
                break
        return finished + self._sweep(kept)

    def _sweep(self, skip: int) -> int:
        """Every SWEEP_EVERY_S, read SWEEP_IDS more records past the ``skip`` the pass
        read, from where the last sweep stopped (a job that finished behind a run of
        unfinished ones is seen here, or when the pass reaches it)."""
        if time.monotonic() - self.swept_s < SWEEP_EVERY_S:
            return 0
        self.swept_s = time.monotonic()
        with self.lock:
            start = max(skip, self.sweep_at)
            if start >= len(self.pending):
                start = skip
            ids = list(itertools.islice(self.pending, start, start + SWEEP_IDS))
        self.sweep_at = start + len(ids)
        return sum(self._settle(job_id, rec) for job_id, rec in zip(ids, self._read(ids)))

    def _read(self, job_ids: Sequence[str]) -> list[Ending | None]:
        # Endings, not records: only state, result and last error are decoded.
        return self.queue.store.endings(job_ids) if job_ids else []

    def _settle(self, job_id: str, record: Ending | None) -> bool:
        """Finish the future of ``job_id`` if its ending says the job ended; True if so."""
        if record is not None and record.state not in FINISHED_STATES:
            return False
        with self.lock:
            future = self.pending.pop(job_id, None)
        if future is None:  # cancelled meanwhile, or settled by the sweep
            return False
        if future.set_running_or_notify_cancel():  # False: cancelled meanwhile
            if record is None:
                future.set_exception(JobNotFound(f"job {job_id} no longer exists (deleted?)"))
            else:
                _set_outcome(future, job_id, record)
        return True

    def _fail_all(self, exc: BaseException) -> None:
        with self.lock:
            futures = list(self.pending.values())
            self.pending.clear()
        for future in futures:
            if future.set_running_or_notify_cancel():  # False: cancelled meanwhile
                future.set_exception(exc)


def _set_outcome(future: concurrent.futures.Future[Any], job_id: str, ending: Ending) -> None:
    try:
        future.set_result(finished_value(job_id, ending))
    except Exception as exc:  # JobFailed, or a result that cannot be loaded
        future.set_exception(exc)


# Watchers still running at interpreter exit (of Executors not shut down, or shut down
# without waiting, even if the Executor itself is gone) stop their servers then, without
# waiting for their pending futures: those jobs stay in the store.
_RUNNING: set[_Watcher] = set()


@atexit.register
def _abandon_running_watchers() -> None:
    for watcher in list(_RUNNING):
        watcher.abandon()
        watcher.join()
