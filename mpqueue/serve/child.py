"""The child side of ``serve``: one process per worker slot.

A child opens its own store (never one inherited across fork), then loops: take job
ids from its pipe, load each job by id, run it, send the outcome back. The coordinator
commits outcomes; a child never writes to the store, so a SIGKILL here can never leave
half an outcome behind.

Hand-off (LMDB, servers that are woken): a producer may claim a new job for an idle
child directly and send its id to the child's own datagram socket (after a "get
ready" sent during its commit). The child runs such a job before anything queued on
its pipe, and first tells the coordinator (``Took``), so the coordinator's list of what
each child holds stays in the child's running order.

Messages (typed values, see protocol): the coordinator sends ``Run`` (job ids, queued
behind what the child holds), ``Handed`` (hand-offs the child may have missed: it runs
those it has not taken yet) and ``Stop``; the child answers ``Ready`` or ``InitError``
once, then ``Took`` for each hand-off it starts, ``Done`` or ``Failed`` for each job,
and ``Released`` (what it was sent and did not run) when told to stop.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import psutil

from ..errors import MpqueueError, PayloadError, Retry, SerializationError, TaskNotFound
from ..identity import pid_exists
from ..limits import JOB_ID_BYTES
from ..records import ErrorInfo, JobRecord, now_ms
from ..registry import import_module, resolve
from ..serializer import dump_result, load_callable, load_payload
from ..signing import verify
from ..store.base import Inbox, Store
from . import protocol
from .containment import kill_descendants, kill_group, lead_own_group
from .protocol import Done, Failed, Handed, InitError, Ready, Released, Stop, Took

# Hand-offs a child remembers having run: a re-sent one (the coordinator re-sends those
# it has not heard "took" for) is skipped. Far more than can be in flight at once.
_TAKEN_REMEMBERED = 1024
_NO_JOB = "0" * JOB_ID_BYTES  # a well-formed id no job has: a read that finds nothing


class JobTimeout(BaseException):
    """Raised inside a job by SIGALRM when its soft time limit passes.

    A BaseException so that ``except Exception`` in user code does not swallow it
    (a bare ``except:`` still can; the coordinator's hard kill covers that).
    """


@dataclass(frozen=True)
class ChildConfig:
    store_path: str
    mode: str
    coordinator_pid: int
    sys_path: tuple[str, ...]
    imports: tuple[str, ...]
    measure_rss: bool = False  # only when a memory limit is set: psutil costs ~15 us/job
    server_id: str = ""  # the coordinator's; hand-offs are checked against it
    hand_off: bool = False  # listen for jobs handed to this child by producers
    secret: bytes | None = field(default=None, repr=False)  # run only jobs signed with it


# Signals a child outlives: the coordinator owns shutdown (it decides what happens to a
# running job), and SIGUSR1/SIGUSR2 have no use here. A handler that does nothing, not
# SIG_IGN: an ignored disposition survives exec(), so every program a job starts would
# inherit it and could no longer be stopped with SIGTERM or Ctrl-C.
_OUTLIVED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def child_main(conn: Connection, config: ChildConfig) -> None:
    """Entry point of a worker process (started by forkserver or spawn)."""
    lead_own_group()
    for signum in _OUTLIVED_SIGNALS:
        signal.signal(signum, _outlive)
    _watch_coordinator(conn, config.coordinator_pid)
    try:
        runner = _JobRunner(config)
    except BaseException as exc:  # report why, then die: the coordinator shows it
        # A bad --import is the user's to fix, named in one line; anything else is ours,
        # so its traceback goes along.
        known = isinstance(exc, (MpqueueError, ImportError))
        detail = "" if known else "\n" + traceback.format_exc()
        protocol.write(conn.fileno(), InitError(f"{type(exc).__name__}: {exc}{detail}"))
        return
    me = psutil.Process()
    protocol.write(conn.fileno(), Ready(me.pid, me.create_time(), runner.inbox is not None))
    runner.loop(conn)
    kill_descendants()  # recycled or stopped: what its jobs started ends with it


def _watch_coordinator(conn: Connection, coordinator_pid: int) -> None:
    """Exit at once when the coordinator dies, so no orphan keeps running a job that a
    new coordinator is about to hand out again. The pipe's hang-up is the signal; the
    pid check is a backstop in case the socket is somehow held open elsewhere."""

    def watch() -> None:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLRDHUP)
        while True:
            events = poller.poll(500)
            # POLLNVAL: a job closed the pipe's fd; nothing can be reported any more
            hung_up = any(
                ev & (select.POLLHUP | select.POLLRDHUP | select.POLLERR | select.POLLNVAL)
                for _, ev in events
            )
            if hung_up or not pid_exists(coordinator_pid):
                kill_descendants()  # what this child's jobs started goes with it,
                kill_group(os.getpid())  # (without a subreaper: the group; and us)
                os._exit(70)

    threading.Thread(target=watch, name="mpqueue-watchdog", daemon=True).start()


def _outlive(signum: int, frame: object) -> None:
    """The handler for ``_OUTLIVED_SIGNALS``: the signal changes nothing."""


class _JobRunner:
    def __init__(self, config: ChildConfig):
        for entry in reversed(config.sys_path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        for module in config.imports:
            import_module(module, "--import")
        from ..store import open_store

        self.store = open_store(config.store_path, mode=config.mode)
        self.funcs: dict[Any, Callable[..., Any]] = {}
        self.process = psutil.Process() if config.measure_rss else None
        self.server_id = config.server_id
        self.secret = config.secret
        self.pid = os.getpid()
        self.inbox = _open_inbox(self.store) if config.hand_off else None
        self.handed: deque[str] = deque()  # named by a producer or the coordinator
        self.taken: dict[str, None] = {}  # recent hand-offs run (insertion-ordered set)
        signal.signal(signal.SIGALRM, _raise_timeout)

    def loop(self, conn: Connection) -> None:
        pending: deque[str] = deque()
        pipe_fd = conn.fileno()
        poller = select.poll()
        poller.register(pipe_fd, select.POLLIN)
        if self.inbox is not None:
            poller.register(self.inbox.fileno(), select.POLLIN)
        while True:
            # One poll per job, as Connection.poll(0) alone cost before hand-off; it
            # blocks only when there is nothing to run.
            ready = poller.poll(0 if pending or self.handed else None)
            for fd, _ in ready:
                if fd != pipe_fd:
                    self._read_inbox()
                elif self._read_pipe(conn, pending):
                    return
            if self.handed:
                outcome = self._run_handed(conn, self.handed.popleft())
                if outcome is not None:
                    protocol.write(pipe_fd, outcome)
            elif pending:
                protocol.write(pipe_fd, self.run(pending.popleft()))

    def _read_inbox(self) -> None:
        """Take the job ids producers handed to this child."""
        if self.inbox is None:
            return
        job_ids, get_ready = self.inbox.job_ids()
        self.handed.extend(job_ids)
        if get_ready and not job_ids:
            # A job is being committed for us: wake up and warm the read path now, while
            # the producer waits on the disk (measured: -0.2 ms idle latency on this
            # 2-vCPU VM; spinning instead of blocking again slowed the producer's fsync
            # 4x).
            self.store.get(_NO_JOB)

    def _read_pipe(self, conn: Connection, pending: deque[str]) -> bool:
        """Take every message waiting on the pipe; True once told to stop."""
        while True:
            command = protocol.receive_command(conn)
            if isinstance(command, Stop):
                protocol.write(conn.fileno(), Released(list(pending)))
                if self.inbox is not None:
                    self.inbox.close()
                return True
            (self.handed if isinstance(command, Handed) else pending).extend(command.job_ids)
            if not conn.poll(0):
                return False

    def _run_handed(self, conn: Connection, job_id: str) -> Done | Failed | None:
        """Run a job handed to this child, unless it ran it already or the job is no
        longer handed to it (finished, or put back after this child was given up)."""
        if job_id in self.taken:
            return None
        rec = self.store.handed_job(self.server_id, job_id, self.pid)
        if rec is None:
            return None
        self.taken[job_id] = None
        if len(self.taken) > _TAKEN_REMEMBERED:
            del self.taken[next(iter(self.taken))]
        protocol.write(conn.fileno(), Took(job_id))
        return self._run_record(job_id, rec)

    def run(self, job_id: str) -> Done | Failed:
        return self._run_record(job_id, self.store.get(job_id))

    def _run_record(self, job_id: str, rec: JobRecord | None) -> Done | Failed:
        if rec is None:  # deleted while queued: nothing to run, nothing to commit
            return self._failed(
                job_id, ErrorInfo("JobNotFound", "job vanished", kind="lost"), retryable=False
            )
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
            return self._failed(job_id, error, retryable=False)
        try:
            fn = self._callable(rec)
            args, kwargs = load_payload(rec.payload, job_id=job_id)
        except (PayloadError, TaskNotFound) as exc:
            retryable = isinstance(exc, TaskNotFound)  # a deploy may fix an import
            kind = "payload" if isinstance(exc, PayloadError) else "exception"
            return self._failed(job_id, _error(exc, rec, kind), retryable=retryable)
        return self._call(rec, fn, args, kwargs)

    def _call(
        self, rec: JobRecord, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Done | Failed:
        try:
            try:
                if rec.timeout_s:
                    signal.setitimer(signal.ITIMER_REAL, rec.timeout_s)
                value = fn(*args, **kwargs)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except JobTimeout:
            kill_descendants()  # a job that ran out of time leaves nothing running
            err = ErrorInfo(
                "JobTimeout",
                f"job exceeded its timeout of {rec.timeout_s} s",
                traceback.format_exc(),
                rec.attempts,
                now_ms(),
                "timeout",
            )
            return self._failed(rec.id, err)
        except Retry as exc:
            return self._failed(rec.id, _error(exc, rec, "retry"), retry_delay_s=exc.delay_s)
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: the job failed
            return self._failed(rec.id, _error(exc, rec, "exception"))
        try:
            result = dump_result(value)
            if len(result) > protocol.MAX_RESULT:
                raise SerializationError(
                    f"the result pickles to {len(result)} bytes, over "
                    f"the {protocol.MAX_RESULT}-byte limit",
                    job_id=rec.id,
                )
        except SerializationError as exc:
            return self._failed(rec.id, _error(exc, rec, "exception"), retryable=False)
        return Done(rec.id, result, self._rss())

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
        job_id: str,
        error: ErrorInfo,
        *,
        retryable: bool = True,
        retry_delay_s: float | None = None,
    ) -> Failed:
        return Failed(job_id, error, retryable, retry_delay_s, self._rss())

    def _rss(self) -> int:
        return 0 if self.process is None else int(self.process.memory_info().rss)


def _open_inbox(store: Store) -> Inbox | None:
    """This child's hand-off socket, or None if it cannot have one: then it runs only
    what its server sends (the server offers no hand-off to it), rather than not at all."""
    try:
        return store.inbox()
    except OSError as exc:
        print(
            f"mpqueue worker {os.getpid()}: no hand-off socket ({exc}); jobs come "
            f"through the server only",
            file=sys.stderr,
        )
        return None


def _raise_timeout(signum: int, frame: object) -> None:
    raise JobTimeout()


def _error(exc: BaseException, rec: JobRecord, kind: str) -> ErrorInfo:
    return ErrorInfo(
        type(exc).__name__, str(exc), traceback.format_exc(), rec.attempts, now_ms(), kind
    )
