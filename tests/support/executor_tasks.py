"""Plain functions (no ``@queue.task``) for the Executor tests (tests/serve/test_executor.py),
as a user would hand them to a ProcessPoolExecutor. Workers import them by name.

Those that take a marker file append ``start``/``end`` lines to it through
``serve_tasks.mark``, so a test can count the runs of each item
(``serve_helpers.read_runs``).
"""

from __future__ import annotations

import os
import signal
import time

from .serve_tasks import mark


def square(x: int) -> int:
    return x * x


def worker_pid(_: object = None) -> int:
    return os.getpid()


def fail(message: str) -> None:
    raise ValueError(message)


def marked(marker: str, tag: object, seconds: float = 0.0) -> object:
    """Marks its start, sleeps ``seconds``, marks its end; returns ``tag``."""
    mark(marker, "start", tag)
    time.sleep(seconds)
    mark(marker, "end", tag)
    return tag


def hold_until(marker: str, tag: object, release: str) -> object:
    """Marks its start, then waits (at most 30 s) until the file ``release`` exists."""
    mark(marker, "start", tag)
    deadline = time.monotonic() + 30.0
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.01)
    mark(marker, "end", tag)
    return tag


def segfault_once(marker: str, tag: object, crash: bool) -> object:
    """With ``crash``, kills its worker with SIGSEGV on its first run (the marker file
    remembers the runs); returns ``tag``."""
    with open(marker, "a+", encoding="ascii") as fh:
        fh.seek(0)
        runs = sum(1 for line in fh if line.split()[:2] == ["start", str(tag)])
    mark(marker, "start", tag)
    if crash and runs == 0:
        os.kill(os.getpid(), signal.SIGSEGV)
    mark(marker, "end", tag)
    return tag
