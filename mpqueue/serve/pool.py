"""Worker slots: one child process per slot, each with its own pipe.

Not a ``ProcessPoolExecutor``: when one of its children dies it fails every in-flight
future and terminates the bystanders (BrokenProcessPool). Here a slot
knows exactly which job its child is running, so a crash or a timeout kill charges
that job alone and the other children never notice.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ..errors import ConfigError, ProtocolError
from ..location import is_url
from ..logs import DEFAULT_LOG_FORMAT
from ..signing import resolve_secret
from . import protocol
from .child import ChildConfig, child_main
from .containment import kill_group, kill_tree
from .protocol import InitError, Ready, Report, Run, Stop

START_TIMEOUT_S = 60.0
HELPERS_STOP_TIMEOUT_S = 5.0  # most ``stop_helpers`` waits for the forkserver and tracker


_READ_CHUNK = 1 << 18


@contextmanager
def _main_hidden() -> Iterator[None]:
    """Start children without re-running the parent's ``__main__`` in them.

    multiprocessing normally re-imports the main script in every spawned or
    forkserver child. Workers never need it (tasks defined there travel by value), and
    re-running a script's top level in each worker would enqueue its jobs again or
    start servers inside servers; it also fails outright for ``python -`` (stdin).
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    saved: dict[str, Any] = {
        k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


@dataclass
class Slot:
    """One child and the jobs sent to it, in order: the head is running."""

    process: Any
    conn: Connection
    cancels: Connection | None = None  # job ids to stop, read by the child's SIGUSR2 handler
    pid: int = 0
    started: float = 0.0  # the child's create_time, for pid-reuse checks
    ready: bool = False
    retiring: bool = False
    killed: bool = False  # killed on purpose (timeout): its queue is released
    jobs_run: int = 0
    inflight: deque[str] = field(default_factory=deque)
    head_since: float = 0.0  # monotonic time the head job started
    inbox: bytearray = field(default_factory=bytearray)
    poller: Any = None
    fault: str | None = None  # why the server gave up on this child, if it did
    eof_at: float | None = None  # monotonic time its pipe reached end of file
    hand_off: bool = False  # it listens for jobs handed to it by producers

    def read_messages(self) -> list[Report]:
        """Every complete message the child has sent so far.

        Reads the pipe in bursts and splits the frames here: Connection.recv costs two
        reads and a poll per message, a third of the server's per-job overhead when
        jobs are short. Raises ProtocolError for bytes that are not a message; an end
        of file sets ``eof_at`` (the child closed its end or is exiting).
        """
        if self.fault is not None or self.eof_at is not None:
            return []  # nothing more from it is believed (or can come)
        if self.poller is None:
            self.poller = select.poll()
            self.poller.register(self.conn.fileno(), select.POLLIN)
        fd = self.conn.fileno()
        while self.poller.poll(0):
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                self.eof_at = time.monotonic()
                break
            self.inbox += chunk
        return protocol.split_frames(self.inbox)

    def fail(self, reason: str) -> None:
        """The child broke the protocol (or its pipe): kill it; its exit charges the
        job it was running with ``reason``."""
        if self.fault is None:
            self.fault = reason
            self.inbox.clear()
        self.kill()

    @property
    def sentinel(self) -> int:
        return int(self.process.sentinel)

    def send_jobs(self, job_ids: list[str], now: float) -> None:
        if not self.inflight:
            self.head_since = now
        self.inflight.extend(job_ids)
        protocol.send_command(self.conn, Run(job_ids))

    def send_cancels(self, job_ids: list[str]) -> None:
        """Tell the child to stop these jobs (running, or queued at it): the ids down its
        cancel pipe, all of them, then one SIGUSR2, whose handler reads the pipe (see
        child.py)."""
        if self.cancels is None or not self.ready:
            return
        try:
            for job_id in job_ids:
                self.cancels.send_bytes(job_id.encode("ascii"))
            os.kill(self.pid, signal.SIGUSR2)
        except OSError:
            pass  # it just died: its exit puts its jobs back, and the store cancels them

    def took(self, job_id: str, now: float) -> None:
        """The child started a job handed to it. It runs those before anything queued,
        and says so only between two jobs, after the last one's outcome: everything
        listed here has not started yet, so the new job is the head."""
        self.inflight.appendleft(job_id)
        self.head_since = now

    def pop_head(self, job_id: str, now: float) -> None:
        if not self.inflight or self.inflight[0] != job_id:
            raise ProtocolError(
                f"child {self.pid} reported {job_id}, expected "
                f"{self.inflight[0] if self.inflight else None}"
            )
        self.inflight.popleft()
        self.jobs_run += 1
        self.head_since = now

    def retire(self) -> None:
        """Ask the child to finish its current job, hand back the rest and exit."""
        if not self.retiring:
            self.retiring = True
            try:
                protocol.send_command(self.conn, Stop())
            except OSError:
                pass  # already gone: its sentinel will tell

    def kill(self) -> None:
        """SIGKILL the child and every process its jobs started (see containment)."""
        kill_tree(self.process.pid, self.started if self.ready else None)
        try:
            self.process.kill()
        except (OSError, AttributeError):
            pass


class Pool:
    """Starts and replaces children; the coordinator decides when."""

    def __init__(
        self,
        store_path: str,
        mode: str,
        imports: tuple[str, ...],
        measure_rss: bool = False,
        server_id: str = "",
        hand_off: bool = False,
        log_level: str | None = None,
        log_format: str = DEFAULT_LOG_FORMAT,
    ):
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["mpqueue.serve.child"])
        location = store_path if is_url(store_path) else os.path.abspath(store_path)
        self.config = ChildConfig(
            location,
            mode,
            os.getpid(),
            tuple(sys.path),
            imports,
            measure_rss,
            server_id,
            hand_off,
            resolve_secret(None),
            log_level,
            log_format,
        )
        self.slots: list[Slot] = []

    def start_slot(self) -> Slot:
        parent_end, child_end = self.ctx.Pipe(duplex=True)
        cancels_in, cancels_out = self.ctx.Pipe(duplex=False)
        process = self.ctx.Process(
            target=child_main,
            args=(child_end, self.config, cancels_in),
            name="mpqueue-worker",
            daemon=True,
        )
        with _main_hidden():
            process.start()
        child_end.close()  # the child holds its own copy; ours would mask its hang-up
        cancels_in.close()
        slot = Slot(process, parent_end, cancels_out)
        self.slots.append(slot)
        return slot

    def start(self, count: int) -> None:
        """Start ``count`` children and wait until each reports ready."""
        new = [self.start_slot() for _ in range(count)]
        deadline = time.monotonic() + START_TIMEOUT_S
        for slot in new:
            self.await_ready(slot, deadline)

    def await_ready(self, slot: Slot, deadline: float) -> None:
        """Wait for a new child's first message; raises ConfigError if it cannot start."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                slot.kill()
                raise ConfigError(f"worker process did not start within {START_TIMEOUT_S} s")
            multiprocessing.connection.wait([slot.conn, slot.sentinel], remaining)
            try:
                messages = slot.read_messages()
            except ProtocolError as exc:
                slot.kill()
                raise ConfigError(
                    f"worker process sent a malformed message while starting: {exc}"
                ) from None
            if messages:
                self.on_ready(slot, messages[0])
                return
            if slot.eof_at is not None or not slot.process.is_alive():
                slot.process.join(1)
                raise ConfigError(
                    f"worker process died while starting (exit code {slot.process.exitcode})"
                )

    def on_ready(self, slot: Slot, message: Report) -> None:
        """A child's first message: ready (with its pid), or why it could not start."""
        if isinstance(message, InitError):
            raise ConfigError(f"worker process failed to start: {message.text}")
        if not isinstance(message, Ready):
            raise ConfigError(f"worker process sent {protocol.tag(message)!r} before 'ready'")
        slot.pid, slot.started, slot.hand_off = message.pid, message.create_time, message.has_inbox
        slot.ready = True

    def remove(self, slot: Slot) -> None:
        """Forget a child that has exited (or is being killed), and kill what its jobs
        left running in its process group: a crashed, recycled or stopped child's
        descendants must not outlive it."""
        self.slots.remove(slot)
        slot.conn.close()
        if slot.cancels is not None:
            slot.cancels.close()
        slot.process.join(timeout=1)
        kill_group(slot.process.pid)

    def children(self) -> list[tuple[int, float]]:
        return [(s.pid, s.started) for s in self.slots if s.ready]

    def kill_all(self) -> None:
        for slot in self.slots:
            slot.kill()


def stop_helpers(timeout_s: float = HELPERS_STOP_TIMEOUT_S) -> bool:
    """Stop this process's forkserver and resource tracker and wait until they exit.

    Left alone, both end only when this interpreter exits, a moment after ``serve``
    returned; a supervisor that waits for the main pid would then see them outlive it.
    Call it once the children are gone (the forkserver is restarted if a pool starts
    again). The tracker exits when every holder of its pipe has: a process a job started
    that kept it open can hold it up, so the wait is bounded. Returns False if they had
    not exited after ``timeout_s``.
    """
    from multiprocessing import forkserver, resource_tracker

    helpers = (
        getattr(forkserver, "_forkserver", None),
        getattr(resource_tracker, "_resource_tracker", None),
    )

    def stop_all() -> None:
        for helper in helpers:
            stop = getattr(helper, "_stop", None)  # private, but the only stop there is
            if stop is None:
                continue
            try:
                stop()
            except OSError:
                pass  # already gone (and reaped)

    waiter = threading.Thread(target=stop_all, name="mpqueue-stop-helpers", daemon=True)
    waiter.start()
    waiter.join(timeout_s)
    return not waiter.is_alive()
