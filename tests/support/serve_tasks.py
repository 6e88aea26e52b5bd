"""Job bodies for the ``mpqueue serve`` process tests (tests/serve/).

Workers import these by name (``tests.support.serve_tasks.sleepy``), so the server must run
with /work/main on its path. Every job takes a marker file and a tag and appends
one line per event to that file, one ``O_APPEND`` write per line so lines from many
processes never interleave:

    start <tag> <pid> <monotonic>     the job body began
    tick  <tag> <pid> <monotonic>     still running (long jobs, every TICK_S)
    end   <tag> <pid> <monotonic>     the job body is about to return

``time.monotonic()`` is CLOCK_MONOTONIC, one clock for every process on the host, so
the test can order events across processes (tests/serve_helpers.py parses them).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from mpqueue import Fail, Queue

queue = Queue()  # never opened here: tests enqueue these tasks on their own queue

TICK_S = 0.05
_HOARD: list[bytes] = []  # memory a job keeps after it returns


def mark(marker: str, what: str, tag: object) -> None:
    line = f"{what} {tag} {os.getpid()} {time.monotonic():.6f}\n".encode()
    fd = os.open(marker, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _sleep_ticking(marker: str, tag: object, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(TICK_S, left))
        mark(marker, "tick", tag)


@queue.task
def sleepy(marker: str, tag: object, seconds: float) -> object:
    """Sleeps ``seconds`` (ticking, so a run that outlives its owner shows up)."""
    mark(marker, "start", tag)
    _sleep_ticking(marker, tag, seconds)
    mark(marker, "end", tag)
    return tag


@queue.task
def quick(marker: str, tag: object) -> object:
    mark(marker, "start", tag)
    mark(marker, "end", tag)
    return tag


@queue.task(retries=2, backoff=0.05)
def suicide(marker: str, tag: object) -> None:
    """Kills its own worker on every attempt."""
    mark(marker, "start", tag)
    os.kill(os.getpid(), signal.SIGKILL)


@queue.task(retries=2, backoff=0.05)
def hard_exit(marker: str, tag: object) -> None:
    mark(marker, "start", tag)
    os._exit(7)


@queue.task(timeout=1.0, retries=0)
def busy_loop(marker: str, tag: object) -> None:
    mark(marker, "start", tag)
    while True:
        pass


def _spin_swallowing(marker: str, tag: object) -> None:
    """Spin, and with a bare ``except:`` eat whatever is raised in the loop."""
    mark(marker, "start", tag)
    while True:
        try:
            while True:
                pass
        except:  # noqa: E722 - the point of the test
            mark(marker, "swallowed", tag)


@queue.task(timeout=1.0, retries=0)
def swallow_timeout(marker: str, tag: object) -> None:
    """A bare ``except:`` eats the soft-timeout exception; only a kill stops it."""
    _spin_swallowing(marker, tag)


@queue.task(timeout=1.0, retries=0)
def long_c_call(marker: str, tag: object) -> bytes:
    """One C call that runs for minutes and never returns to the eval loop."""
    mark(marker, "start", tag)
    return hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 10**9)


@queue.task(timeout=1.0, retries=0)
def quick_with_timeout(marker: str, tag: object) -> object:
    """A job with a time limit that it never comes near."""
    mark(marker, "start", tag)
    mark(marker, "end", tag)
    return tag


@queue.task(retries=0)
def exit_3(marker: str, tag: object) -> None:
    mark(marker, "start", tag)
    sys.exit(3)


@queue.task(retries=0)
def keyboard_interrupt(marker: str, tag: object) -> None:
    mark(marker, "start", tag)
    raise KeyboardInterrupt("pressed in a job")


@queue.task(retries=0)
def unpicklable_result(marker: str, tag: object) -> Any:
    mark(marker, "start", tag)
    return threading.Lock()


@queue.task(retries=3)
def echo(marker: str, tag: object, value: Any = None) -> Any:
    """Returns its argument (used with arguments that cannot be unpickled)."""
    mark(marker, "start", tag)
    return value


@queue.task(retries=0)
def fail(marker: str, tag: object) -> None:
    mark(marker, "start", tag)
    raise RuntimeError(f"job {tag} fails")


@queue.task(retries=2, backoff=0.05, backoff_cap=0.05)
def flaky(marker: str, tag: object) -> object:
    """Fails on its first run, succeeds on the next (counts its runs in the marker)."""
    mark(marker, "start", tag)
    with open(marker, encoding="ascii") as fh:
        runs = sum(1 for line in fh if line.split()[:2] == ["start", str(tag)])
    if runs < 2:
        raise RuntimeError("first run fails")
    mark(marker, "end", tag)
    return tag


@queue.task(retries=0)
def hog(marker: str, tag: object, megabytes: int) -> int:
    """Allocates ``megabytes`` and keeps them (a module global) after returning."""
    mark(marker, "start", tag)
    _HOARD.append(b"x" * (megabytes << 20))  # filled, so every page is resident
    mark(marker, "end", tag)
    return os.getpid()


def _pipes() -> list[int]:
    """The fds of this worker's pipes to its server (a job can find them too)."""
    import gc
    from multiprocessing.connection import Connection

    return [o.fileno() for o in gc.get_objects() if isinstance(o, Connection) and not o.closed]


@queue.task(retries=1, backoff=0.05, backoff_cap=0.05)
def pipe_attack(marker: str, tag: str, store: str = "") -> None:
    """Writes bytes that are not a message to its worker's pipe, or closes it; ``tag``
    says which (and is the marker tag)."""
    mark(marker, "start", tag)
    for fd in _pipes():
        if tag == "close":
            os.close(fd)
        elif tag == "garbage":  # a 5-byte pickle frame as multiprocessing frames them
            os.write(fd, b"\x00\x00\x00\x05hello")
        elif tag == "old_huge_header":  # multiprocessing's header of a 2 GiB frame
            os.write(fd, b"\x7f\xff\xff\xf0")
        elif tag == "huge_header":  # this protocol's magic, an impossible length
            from mpqueue.serve import protocol

            os.write(fd, protocol.HEADER.pack(protocol.MAGIC, protocol.MAX_FRAME + 1))
        elif tag == "wrong_job":  # a well-formed outcome of a job it was never sent
            from mpqueue.serve import protocol

            os.write(fd, protocol.encode(protocol.Done("0" * 32, b"", 0)))
        elif tag == "released_twice":  # its own id twice: a right shape, a wrong content
            from mpqueue.serve import protocol

            with Queue(store) as jobs:
                own = [j.id for j in jobs.list(name="tests.support.serve_tasks.pipe_attack")]
            os.write(fd, protocol.frame(("released", tuple(own * 2))))
        elif tag == "bad_shape":
            from mpqueue.serve import protocol

            os.write(fd, protocol.frame(("done", 5, "x")))
        else:
            raise ValueError(tag)
    time.sleep(30)  # a server that believed the bytes would wait on this job


def _start_sleeper(pid_file: str) -> None:
    """Start a ``sleep 300`` descendant and publish its pid (written whole, then
    renamed, so the test never reads half a number). A pid file ending in ``.daemon``
    gets a daemon instead: its own session (setsid), its parent shell gone."""
    if pid_file.endswith(".daemon"):
        subprocess.run(
            ["sh", "-c", f"setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {pid_file}.tmp"],
            check=True,
        )
    else:
        sleeper = subprocess.Popen(["sleep", "300"])
        with open(pid_file + ".tmp", "w", encoding="ascii") as fh:
            fh.write(str(sleeper.pid))
    os.rename(pid_file + ".tmp", pid_file)


@queue.task(retries=0)
def spawn_sleeper(marker: str, tag: object, pid_file: str, seconds: float) -> object:
    """Starts a grandchild that would outlive the job, then sleeps ``seconds``."""
    mark(marker, "start", tag)
    _start_sleeper(pid_file)
    _sleep_ticking(marker, tag, seconds)
    mark(marker, "end", tag)
    return tag


@queue.task(timeout=0.5, retries=0)
def spawn_sleeper_and_hang(marker: str, tag: object, pid_file: str) -> None:
    """Starts a grandchild, then swallows its soft timeout: only the hard kill ends it."""
    mark(marker, "start", tag)
    _start_sleeper(pid_file)
    while True:
        try:
            time.sleep(60)
        except BaseException:  # noqa: B036 - the point of the test
            mark(marker, "swallowed", tag)


@queue.task(timeout=0.5, retries=0)
def spawn_sleeper_and_time_out(marker: str, tag: object, pid_file: str) -> None:
    """Starts a grandchild, then runs into its soft timeout (the worker lives on)."""
    mark(marker, "start", tag)
    _start_sleeper(pid_file)
    time.sleep(60)


# ---- workflows (tests/serve/test_workflows.py) ------------------------------------------


@queue.task
def chain_step(value: tuple[int, ...], marker: str, index: int, seconds: float) -> tuple[int, ...]:
    """One step of a chain: appends its index to what the step before returned, so the
    last result shows every step and its order. Marker tag ``step<index>``."""
    tag = f"step{index}"
    mark(marker, "start", tag)
    _sleep_ticking(marker, tag, seconds)
    mark(marker, "end", tag)
    return (*value, index)


@queue.task
def chord_member(marker: str, index: int, seconds: float) -> int:
    """A member of a chord: a short pause, then ``index`` squared."""
    mark(marker, "start", index)
    time.sleep(seconds)
    mark(marker, "end", index)
    return index * index


def _describe(value: Any) -> Any:
    """A chord input as a plain value: a failed member's JobFailed (which does not
    pickle back) as ("failed", its job id, its error's type and message)."""
    from mpqueue import JobFailed

    if isinstance(value, JobFailed):
        error = value.error
        return ("failed", value.job_id, getattr(error, "type", ""), getattr(error, "message", ""))
    return value


@queue.task
def chord_total(results: list[Any], runs_dir: str) -> list[Any]:
    """A chord's callback: writes what it received to a file of its own per run (named
    by pid and clock, so two runs never share one) and returns it."""
    received = [_describe(value) for value in results]
    name = os.path.join(runs_dir, f"{os.getpid()}-{time.monotonic_ns()}.txt")
    with open(name + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(repr(received))
    os.rename(name + ".tmp", name)  # whole or absent: the test never reads half a run
    return received


# ---- cancelling (tests/serve/test_cancel.py): no timeouts, retries left ----------------
@queue.task(retries=3)
def spin(marker: str, tag: object) -> None:
    """A pure-Python loop: a cancel's exception stops it."""
    mark(marker, "start", tag)
    while True:
        pass


@queue.task(retries=3)
def swallow_everything(marker: str, tag: object) -> None:
    """A bare ``except:`` swallows the cancel's exception; only the kill stops it."""
    _spin_swallowing(marker, tag)


@queue.task(retries=3)
def c_call(marker: str, tag: object) -> bytes:
    """One C call that runs for minutes without returning to the eval loop: the
    cancel's signal handler never runs, only the kill stops it."""
    mark(marker, "start", tag)
    return hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 10**9)


# ---- what is retried (tests/serve/test_retry_rules.py) -----------------------------------
FAST = {"retries": 3, "backoff": 0.02, "backoff_cap": 0.02}  # four runs, quickly


class Transient(OSError):
    """An error worth retrying (an OSError: ``retry_on=(OSError,)`` covers it)."""


def _raise(kind: str) -> None:
    errors: dict[str, BaseException] = {
        "value": ValueError("bad value"),
        "key": KeyError("missing"),
        "transient": Transient("try again"),
        "runtime": RuntimeError("failed"),
        "fail": Fail("given up"),
    }
    raise errors[kind]


@queue.task(**FAST, no_retry_on=(ValueError,))
def refuses_values(marker: str, tag: object, kind: str) -> None:
    """A ValueError ends the job at once; anything else is retried."""
    mark(marker, "start", tag)
    _raise(kind)


@queue.task(**FAST, retry_on=(OSError,))
def retries_io(marker: str, tag: object, kind: str) -> None:
    """Only an OSError (a Transient) is retried."""
    mark(marker, "start", tag)
    _raise(kind)


@queue.task(**FAST)
def retries_anything(marker: str, tag: object, kind: str) -> None:
    """No lists: every exception is retried, but ``Fail`` ends the job at once."""
    mark(marker, "start", tag)
    _raise(kind)


@queue.task(retries=1, backoff=0.02, backoff_cap=0.02, retry_on=(KeyError,))
def crashes_despite_lists(marker: str, tag: object) -> None:
    """Kills its own worker: a crash is retried whatever ``retry_on`` says."""
    mark(marker, "start", tag)
    os.kill(os.getpid(), signal.SIGKILL)


@queue.task(timeout=0.5, retries=1, backoff=0.02, backoff_cap=0.02, retry_on=(KeyError,))
def times_out_despite_lists(marker: str, tag: object) -> None:
    """Runs past its time limit: a timeout is retried whatever ``retry_on`` says."""
    mark(marker, "start", tag)
    while True:
        pass


@queue.task
def report_progress(marker: str, tag: object, release: str) -> int:
    """Reports progress in a tight loop until ``release`` exists; returns the count."""
    from mpqueue import current_job

    job = current_job()
    assert job is not None
    mark(marker, "start", tag)
    count = 0
    while not os.path.exists(release):
        count += 1
        job.progress(count, None, f"step {count}")
    job.progress(count, count, "finished")
    return count


@queue.task(retries=0)
def hold(marker: str, tag: object, release: str, limit_s: float = 60.0) -> object:
    """Runs until ``release`` exists (at most ``limit_s``): keeps its worker busy for
    exactly as long as the test needs."""
    mark(marker, "start", tag)
    deadline = time.monotonic() + limit_s
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(TICK_S)
    mark(marker, "end", tag)
    return tag


def slotted(slot_dir: str, tag: object, seconds: float) -> object:
    """Hold one of the two slot files (``flock``) for ``seconds``; a job that finds both
    taken appends its tag to ``over`` in ``slot_dir``: a third job ran at once. A killed
    holder's lock goes with its process."""
    import fcntl

    for slot in ("slot-0", "slot-1"):
        fd = os.open(os.path.join(slot_dir, slot), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            time.sleep(seconds)
            return tag
        finally:
            os.close(fd)  # releases the lock
    mark(os.path.join(slot_dir, "over"), "over", tag)
    return tag
