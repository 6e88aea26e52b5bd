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

Cancels: the coordinator writes the id of a job to stop on the child's cancel pipe,
then sends SIGUSR2. The handler reads the pipe; if the job is the one running, it
raises ``mpqueue.Cancelled`` in it; a job queued here is skipped when its turn comes.
Only the handler reads that pipe, and it raises only inside the task's own call, so
the child's own reading and writing are never interrupted by it.

Messages (typed values, see protocol): the coordinator sends ``Run`` (job ids, queued
behind what the child holds), ``Handed`` (hand-offs the child may have missed: it runs
those it has not taken yet) and ``Stop``; the child answers ``Ready`` or ``InitError``
once, then ``Took`` for each hand-off it starts, ``ProgressReport`` while a job reports
progress, ``Done`` or ``Failed`` for each job (``Expired`` for one whose deadline passed
before its turn came: see expiry.py), and ``Released`` (what it was sent and did not
run) when told to stop.
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

from .. import hooks, logs
from ..cancellation import cancel_entry
from ..concurrency import TASK, declared
from ..errors import Cancelled, MpqueueError
from ..execute import JobTimeout, TaskRunner
from ..identity import pid_exists
from ..limits import JOB_ID_BYTES
from ..logs import DEFAULT_LOG_FORMAT
from ..records import JobRecord, Progress, now_ms
from ..registry import import_module
from ..store.base import HandOff, Inbox
from . import protocol
from .containment import kill_descendants, kill_group, lead_own_group
from .protocol import (
    Done,
    Expired,
    Failed,
    Handed,
    InitError,
    ProgressReport,
    Ready,
    Released,
    Stop,
    Took,
)

# Hand-offs a child remembers having run: a re-sent one (the coordinator re-sends those
# it has not heard "took" for) is skipped. Far more than can be in flight at once.
_TAKEN_REMEMBERED = 1024
_NO_JOB = "0" * JOB_ID_BYTES  # a well-formed id no job has: a read that finds nothing


@dataclass(frozen=True)
class ChildConfig:
    store_path: str
    mode: str
    coordinator_pid: int
    sys_path: tuple[str, ...]
    imports: tuple[str, ...]
    measure_rss: bool = False  # only with a memory limit: a syscall per job
    server_id: str = ""  # the coordinator's; hand-offs are checked against it
    hand_off: bool = False  # listen for jobs handed to this child by producers
    secret: bytes | None = field(default=None, repr=False)  # run only jobs signed with it
    log_level: str | None = None  # None: logging left alone (warnings reach stderr anyway)
    log_format: str = DEFAULT_LOG_FORMAT


# Signals a child outlives: the coordinator owns shutdown (it decides what happens to a
# running job), and SIGUSR1 has no use here (SIGUSR2 brings cancels). A handler that
# does nothing, not SIG_IGN: an ignored disposition survives exec(), so every program a
# job starts would inherit it and could no longer be stopped with SIGTERM or Ctrl-C.
_OUTLIVED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1)
CANCEL_SIGNAL = signal.SIGUSR2
_CANCELS_REMEMBERED = 10_000  # ids of jobs to skip; more means they went elsewhere


def child_main(conn: Connection, config: ChildConfig, cancel_pipe: Connection) -> None:
    """Entry point of a worker process (started by forkserver or spawn)."""
    lead_own_group()
    for signum in _OUTLIVED_SIGNALS:
        signal.signal(signum, _outlive)
    cancels = _Cancels(cancel_pipe)
    signal.signal(CANCEL_SIGNAL, cancels.on_signal)
    _watch_coordinator(conn, config.coordinator_pid)
    if config.log_level is not None:  # as the server logs: its lines and ours interleave
        logs.setup(config.log_level, config.log_format, config.server_id)
    try:
        runner = _JobRunner(config, cancels)
    except BaseException as exc:  # report why, then die: the coordinator shows it
        # A bad --import is the user's to fix, named in one line; anything else is ours,
        # so its traceback goes along.
        known = isinstance(exc, (MpqueueError, ImportError))
        detail = "" if known else "\n" + traceback.format_exc()
        protocol.write(conn.fileno(), InitError(f"{type(exc).__name__}: {exc}{detail}"))
        return
    me = psutil.Process()
    protocol.write(conn.fileno(), Ready(me.pid, me.create_time(), runner.inbox is not None))
    # After "ready": a slow set-up (a model to load) must not count as a failed start.
    hooks.start_child()
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


class _Cancels:
    """The jobs the coordinator told this child to stop, and the one running now."""

    def __init__(self, pipe: Connection):
        self.pipe = pipe
        self.ids: set[str] = set()
        self.running: str | None = None  # set only while the task's own call runs

    def on_signal(self, signum: int, frame: object) -> None:
        """SIGUSR2: read the ids sent; raise Cancelled if the running job is one."""
        try:
            while self.pipe.poll(0):
                self.ids.add(self.pipe.recv_bytes().decode("ascii", "replace"))
        except (OSError, EOFError):
            return  # the coordinator is gone: the watchdog ends this child
        if len(self.ids) > _CANCELS_REMEMBERED:
            self.ids.clear()
        if self.running is not None and self.running in self.ids:
            self.ids.discard(self.running)
            raise Cancelled()

    def skipped(self, job_id: str) -> Failed | None:
        """The report of a job to stop that has not started: it never will."""
        if not self.ids or job_id not in self.ids:
            return None
        self.ids.discard(job_id)
        error = cancel_entry("cancelled before it started", 0, now_ms())
        return Failed(job_id, error, False, None, 0)

    def call(
        self, rec: JobRecord, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """``_timed_call``, open to a cancel while it runs."""
        self.running = rec.id
        try:
            if self.ids and rec.id in self.ids:  # it came while the job's hooks ran
                self.ids.discard(rec.id)
                raise Cancelled()
            return _timed_call(rec, fn, args, kwargs)
        finally:
            self.running = None


class _JobRunner:
    def __init__(self, config: ChildConfig, cancels: _Cancels):
        for entry in reversed(config.sys_path):
            if entry not in sys.path:
                sys.path.insert(0, entry)
        for module in config.imports:
            import_module(module, "--import")
        from ..store import open_store

        self.store = open_store(config.store_path, mode=config.mode)
        for name, (concurrency, rate) in declared().items():  # the imported tasks' limits
            try:
                self.store.set_limit(TASK, name, concurrency, rate)
            except MpqueueError as exc:  # a store refusing it must not stop the child
                print(f"mpqueue: the limit of {name} was not written: {exc}", file=sys.stderr)
        self.process = psutil.Process() if config.measure_rss else None
        self.server_id = config.server_id
        self.cancels = cancels
        self.pipe_fd = -1  # set by loop()
        self.task_runner = TaskRunner(
            config.server_id,
            config.secret,
            fetch=self.store.endings,
            call=cancels.call,
            progress=self._report_progress,
        )
        self.pid = os.getpid()
        self.hand_off = self.store.hand_off if config.hand_off else None
        self.inbox = None if self.hand_off is None else _open_inbox(self.hand_off)
        self.handed: deque[str] = deque()  # named by a producer or the coordinator
        self.taken: dict[str, None] = {}  # recent hand-offs run (insertion-ordered set)
        signal.signal(signal.SIGALRM, _raise_timeout)

    def loop(self, conn: Connection) -> None:
        pending: deque[str] = deque()
        pipe_fd = self.pipe_fd = conn.fileno()
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

    def _report_progress(self, job_id: str, report: Progress) -> None:
        """The running job's progress, to the coordinator (throttled by current.py)."""
        protocol.write(self.pipe_fd, ProgressReport(job_id, *report))

    def _read_inbox(self) -> None:
        """Take the job ids producers handed to this child."""
        if self.inbox is None:
            return
        job_ids, get_ready = self.inbox.job_ids()
        self.handed.extend(job_ids)
        if get_ready and not job_ids:
            # A job is being committed for us: wake up and warm the read path now, while
            # the producer waits on the disk. Blocking again, not spinning: a spinning
            # child takes the CPU the producer's commit needs.
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

    def _run_handed(self, conn: Connection, job_id: str) -> Done | Failed | Expired | None:
        """Run a job handed to this child, unless it ran it already or the job is no
        longer handed to it (finished, or put back after this child was given up)."""
        if job_id in self.taken or self.hand_off is None:
            return None
        rec = self.hand_off.handed_job(self.server_id, job_id, self.pid)
        if rec is None:
            return None
        self.taken[job_id] = None
        if len(self.taken) > _TAKEN_REMEMBERED:
            del self.taken[next(iter(self.taken))]
        protocol.write(conn.fileno(), Took(job_id))
        return self._run_record(job_id, rec)

    def run(self, job_id: str) -> Done | Failed | Expired:
        return self._run_record(job_id, self.store.get(job_id))

    def _run_record(self, job_id: str, rec: JobRecord | None) -> Done | Failed | Expired:
        skipped = self.cancels.skipped(job_id)
        if skipped is not None:
            return skipped
        outcome = self.task_runner.run(job_id, rec)
        if outcome.kind == "done":
            assert outcome.result is not None  # a done Outcome of the task runner has one
            return Done(outcome.job_id, outcome.result, self._rss(), outcome.preview)
        if outcome.kind == "expired":
            return Expired(job_id)
        assert outcome.error is not None  # every failed Outcome of the task runner has one
        return Failed(job_id, outcome.error, outcome.retryable, outcome.retry_delay_s, self._rss())

    def _rss(self) -> int:
        return 0 if self.process is None else int(self.process.memory_info().rss)


def _open_inbox(hand_off: HandOff) -> Inbox | None:
    """This child's hand-off socket, or None if it cannot have one: then it runs only
    what its server sends (the server offers no hand-off to it), rather than not at all."""
    try:
        return hand_off.inbox()
    except OSError as exc:
        print(
            f"mpqueue worker {os.getpid()}: no hand-off socket ({exc}); jobs come "
            f"through the server only",
            file=sys.stderr,
        )
        return None


def _raise_timeout(signum: int, frame: object) -> None:
    raise JobTimeout()


def _timed_call(
    rec: JobRecord, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """Call a task function under the job's soft time limit (SIGALRM raises JobTimeout
    in it); a job that ran out of time, or was cancelled, leaves nothing running."""
    try:
        try:
            if rec.timeout_s:
                signal.setitimer(signal.ITIMER_REAL, rec.timeout_s)
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except (JobTimeout, Cancelled):
        kill_descendants()
        raise
