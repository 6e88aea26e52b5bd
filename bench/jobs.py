"""Job bodies shared by the benchmarks. Importable, so workers load them by name, and
plain functions, so a bare ProcessPoolExecutor can run the very same code."""

from __future__ import annotations

import os
import time


def noop(x: int) -> int:
    return x


def spin(ms: float) -> float:
    """Keep one core busy for ``ms`` milliseconds of thread CPU time; returns it."""
    start = time.thread_time()
    end = start + ms / 1000
    while time.thread_time() < end:
        pass
    return time.thread_time() - start


def stamp(x: int) -> float:
    """The wall-clock time the job started (for enqueue-to-start latency)."""
    return time.time()


def mark(path: str, tag: str, hold_s: float = 0.0) -> int:
    """Append 'tag pid time' to ``path`` at start, then hold the worker for ``hold_s``."""
    line = f"{tag} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    if hold_s:
        time.sleep(hold_s)
    return os.getpid()


def spin_stamp(ms: float) -> float:
    """``spin(ms)``, returning the wall-clock time the job started (for start rates)."""
    started = time.time()
    spin(ms)
    return started


def nap(seconds: float) -> float:
    """Sleep (no CPU): a job that waits on I/O."""
    time.sleep(seconds)
    return seconds


def loop(iterations: int) -> int:
    """A pure-Python loop of ``iterations`` steps (CPU work whose cost is fixed by its
    argument, not by a clock; bench/executor_bench.py calibrates it)."""
    total = 0
    for step in range(iterations):
        total += step & 7
    return total


def total(values: list[int]) -> int:
    """A chord's callback: the sum of its members' results."""
    return sum(values)


def chain_step(stamps: list[int]) -> list[int]:
    """A chain's step: ``stamps`` (the steps before, each its start and end as
    ``time.time_ns()``) with this step's start and end appended, the end taken last so
    the gap to the next step's start is all the queue's."""
    started = time.time_ns()
    out = [*stamps, started]
    out.append(time.time_ns())
    return out


def spin_until_stopped(path: str) -> None:
    """Spin until stopped (a cancel): writes 'start <ns>' when it begins and 'stop <ns>'
    as the stopping exception leaves it (``time.time_ns()``, one line each)."""
    _note(path, "start")
    try:
        while True:
            pass
    finally:
        _note(path, "stop")


def _note(path: str, what: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{what} {time.time_ns()}\n".encode())
    finally:
        os.close(fd)


# The no-op under three more names: a limit is kept per task name, so a benchmark that
# limits three tasks needs three (bench/queues_bench.py, bench/limits_bench.py).
noop_a = noop_b = noop_c = noop
