"""Huey, the closest embedded peer: a ``SqliteHuey`` with durable settings, the same
job bodies (``bench.jobs``) as Huey tasks, and its consumer as a subprocess.

The consumer imports this module and finds ``huey`` here; the database file comes from
``$MPQUEUE_BENCH_HUEY_DB`` (``HueyConsumer`` sets it). The benchmark process builds its
own ``SqliteHuey`` on the same file with ``make_huey``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from huey import SqliteHuey

from bench import jobs

DB_ENV = "MPQUEUE_BENCH_HUEY_DB"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOB_NAMES = ("noop", "spin", "stamp", "mark")


def make_huey(filename: str) -> tuple[SqliteHuey, dict[str, Any]]:
    """A Huey on ``filename`` with every commit fsynced (``synchronous=FULL``) in WAL
    mode, and the bench job bodies registered on it by name."""
    huey = SqliteHuey("mpqueue-bench", filename=filename, fsync=True, journal_mode="wal")
    tasks = {name: huey.task(name=f"bench.jobs.{name}")(getattr(jobs, name)) for name in JOB_NAMES}
    return huey, tasks


# What ``huey_consumer bench.huey_peer.huey`` loads.
huey, TASKS = make_huey(os.environ[DB_ENV]) if os.environ.get(DB_ENV) else (None, {})


class HueyConsumer:
    """``huey_consumer bench.huey_peer.huey -k process -w N`` on ``filename``, stopped
    (SIGINT, Huey's graceful signal, then SIGKILL) on exit."""

    def __init__(self, filename: str, workers: int, *extra: str):
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env[DB_ENV] = filename
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "huey.bin.huey_consumer",
                "bench.huey_peer.huey",
                "-k",
                "process",
                "-w",
                str(workers),
                "-q",
                *extra,
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()

    def __enter__(self) -> HueyConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_results(
    huey_: SqliteHuey, count: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until ``count`` results are stored (every bench job returns a value)."""
    deadline = time.monotonic() + timeout_s
    while huey_.result_count() < count:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"huey_consumer exited {proc.returncode}: {err[-2000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"huey: {huey_.result_count()} of {count} results after {timeout_s} s"
            )
        time.sleep(0.002)
