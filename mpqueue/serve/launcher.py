"""Running ``mpqueue serve`` as a child process, for an ``Executor``: started while no
live server serves the store, stopped with the Executor, and never outliving it.

The server must stop when the process that started it dies, even by SIGKILL, and stop
gracefully: a first SIGTERM lets its running jobs finish, a second one kills them. Linux
sends a chosen signal to a child when the thread that started it ends
(``PR_SET_PDEATHSIG``), but in a process with several threads it may send it once per
thread that dies while the child is being handed on: two SIGTERMs. So the server gets
its SIGTERM from a small single-threaded parent, the *keeper*, which is SIGKILLed (any
number of times) when the starting thread ends:

    Executor's watcher thread --(SIGKILL at its death)--> keeper --(one SIGTERM)--> serve

The keeper also forwards the Executor's own SIGTERM once, and exits with the server.
Elsewhere than Linux there is no death signal: the Executor stops its server at exit.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Protocol

import psutil

from ..errors import ExecutorBroken
from ..identity import server_dead
from ..records import now_ms
from ..signing import SECRET_ENV
from .settings import DEFAULT_GRACE_S

log = logging.getLogger("mpqueue.executor")

STOP_WAIT_S = DEFAULT_GRACE_S + 10.0  # SIGTERM, then this long before SIGKILL
FAILED_STARTS = 3  # servers that exited before registering, in a row: give up
# The Executor's server claims further ahead than serve's defaults (64 queued per child,
# 256 per transaction). The prefetch window still holds each child to about 50 ms of
# work, so only jobs under ~1 ms get more: a map of tiny items then pays one durable
# commit per ~1,000 outcomes and claims instead of per ~130, which is what bounded it.
# (bench/executor_bench: 10,000 no-op items, bench/RESULTS.md.)
EXECUTOR_PREFETCH = 1024
EXECUTOR_BATCH = 1024
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

# The keeper: starts the server (argv) with SIGTERM as its death signal, forwards one
# SIGTERM to it, exits with its code. Single-threaded, so its death signals just once.
KEEPER = """\
import signal, subprocess, sys
hook = None
if sys.platform.startswith("linux"):
    import ctypes
    prctl = ctypes.CDLL(None).prctl
    def hook():
        prctl(1, signal.SIGTERM)
server = subprocess.Popen(sys.argv[1:], preexec_fn=hook)
def forward(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server.send_signal(signal.SIGTERM)
signal.signal(signal.SIGTERM, forward)
code = server.wait()
sys.exit(code if code >= 0 else 128 - code)
"""


class ServedQueue(Protocol):
    """What the launcher needs of a ``Queue``."""

    path: str
    mode: str
    secret: bytes | None

    @property
    def store(self) -> Any: ...


class ServerLauncher:
    """The ``mpqueue serve`` process an Executor runs while no other server serves its
    store."""

    def __init__(self, queue: ServedQueue, workers: int):
        self.queue = queue
        self.workers = workers
        self.keeper: subprocess.Popen[bytes] | None = None
        self.registered = False  # the current server was seen in the store's registry
        self.failed_starts = 0

    def ensure_served(self) -> None:
        """Start a server if neither ours nor another live one serves the store.

        Raises ExecutorBroken when the servers started keep exiting before they register."""
        servers = self.queue.store.servers()
        if self.keeper is not None:
            if self.keeper.poll() is None:
                self.registered = self.registered or self._ours_registered(servers)
                return
            self._count_exit(self.keeper.returncode)
            self.keeper = None
        now = now_ms()
        if any(not server_dead(sid, info, now) for sid, info in servers.items()):
            return
        self.keeper = self._start()
        self.registered = False

    def _ours_registered(self, servers: dict[str, dict[str, Any]]) -> bool:
        assert self.keeper is not None
        try:
            ours = {p.pid for p in psutil.Process(self.keeper.pid).children()}
        except psutil.Error:
            return False
        return any(info.get("pid") in ours for info in servers.values())

    def _count_exit(self, code: int) -> None:
        log.warning("the mpqueue serve process of this Executor exited with code %s", code)
        self.failed_starts = 0 if self.registered else self.failed_starts + 1
        if self.failed_starts >= FAILED_STARTS:
            raise ExecutorBroken(
                f"mpqueue serve exited {FAILED_STARTS} times (last code {code}) before "
                f"serving {self.queue!r}; its log is on stderr"
            )

    def _start(self) -> subprocess.Popen[bytes]:
        serve = [sys.executable, "-m", "mpqueue", "--mode", self.queue.mode, "serve"]
        serve += ["--workers", str(self.workers), "--log-level", "warning"]
        serve += ["--prefetch", str(EXECUTOR_PREFETCH), "--batch", str(EXECUTOR_BATCH)]
        return subprocess.Popen(
            [sys.executable, "-c", KEEPER, *serve],
            env=server_env(self.queue),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C at the terminal is the script's, not the server's
            preexec_fn=_killed_with_this_thread(),
        )

    def stop(self) -> None:
        """SIGTERM our server and wait for it: it finishes or puts back its jobs."""
        keeper, self.keeper = self.keeper, None
        if keeper is None or keeper.poll() is not None:
            return
        keeper.send_signal(signal.SIGTERM)
        try:
            keeper.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            log.warning("mpqueue serve ignored SIGTERM for %.0f s; killing it", STOP_WAIT_S)
            keeper.kill()  # its death signal stops the server at once
            keeper.wait()


def server_env(queue: ServedQueue) -> dict[str, str]:
    """The server's environment: the store in ``$MPQUEUE_PATH`` (a URL's password stays
    out of ``ps``), the secret, and this interpreter's import path, so the workers import
    what this process can (as a spawned multiprocessing child would)."""
    env = dict(os.environ, MPQUEUE_PATH=queue.path)
    cwd = os.getcwd()
    env["PYTHONPATH"] = os.pathsep.join(cwd if entry == "" else entry for entry in sys.path)
    if queue.secret is not None:
        env[SECRET_ENV] = queue.secret.decode("utf-8", "surrogateescape")
    else:
        env.pop(SECRET_ENV, None)
    return env


def _killed_with_this_thread() -> Callable[[], None] | None:
    """A pre-exec hook that asks Linux to SIGKILL the child when the thread that started
    it ends: when the Executor's watcher stops, or when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes  # only here: every worker imports this package

    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before fork, not after
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # died before the hook ran: nobody will signal us
            os._exit(1)

    return hook
