"""Helpers for the ``mpqueue serve`` process tests: real servers, markers, waiting.

``servers`` is a fixture (import it into a test module) that starts
``python -m mpqueue --path P serve ...`` subprocesses and, at teardown, kills every
one still running together with its worker processes, even when the test failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from mpqueue import Queue

from .helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]  # workers import tests.support.serve_tasks from here


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie nobody reaps counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Server:
    """One ``mpqueue serve`` subprocess; its output goes to a log file."""

    def __init__(self, path: str, args: tuple[str, ...], log_path: Path):
        self.path = path
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mpqueue", "--path", path, "serve", *args],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.seen_children: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def send(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"serve pid {self.pid} still running after {timeout} s; log:\n{self.log()[-3000:]}"
            ) from None

    def registration(self, queue: Queue) -> dict[str, Any] | None:
        """This server's entry in the store's worker registry, if it wrote one."""
        for info in queue.store.servers().values():
            if info.get("pid") == self.pid:
                self.seen_children.update(pid for pid, _ in info.get("children", ()))
                return info
        return None

    def children(self, queue: Queue) -> list[int]:
        info = self.registration(queue)
        return [pid for pid, _ in info["children"]] if info else []

    def wait_ready(self, queue: Queue, workers: int, timeout: float = 20.0) -> list[int]:
        """Wait until the server registered ``workers`` ready children; their pids."""

        def ready() -> list[int] | None:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}"
                )
            pids = self.children(queue)
            return pids if len(pids) >= workers else None

        return wait_until(ready, timeout, f"serve pid {self.pid} ready")  # type: ignore

    def kill_everything(self) -> None:
        """Teardown: SIGKILL the server and every process it started."""
        victims = set(self.seen_children)
        try:
            victims.update(p.pid for p in psutil.Process(self.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        for pid in victims:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``start(path, *serve_args)`` starts a server; all are killed at teardown."""
    started: list[Server] = []

    def start(path: str, *args: str) -> Server:
        server = Server(path, args, tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill_everything()


# ---- markers written by tests/serve_tasks.py --------------------------------------------


@dataclass
class Run:
    """One run of one job body, as its marker lines tell it."""

    tag: str
    pid: int
    start: float
    last: float  # the last moment the run was seen alive (end, tick or start)
    ended: bool = False


def read_runs(marker: Path) -> dict[str, list[Run]]:
    """Every run per tag, in start order."""
    runs: dict[str, list[Run]] = defaultdict(list)
    current: dict[tuple[str, int], Run] = {}
    if not marker.exists():
        return runs
    for line in marker.read_text(encoding="ascii").splitlines():
        what, tag, pid_text, t_text = line.split()
        pid, t = int(pid_text), float(t_text)
        if what == "start":
            run = current[(tag, pid)] = Run(tag, pid, t, t)
            runs[tag].append(run)
            continue
        run = current[(tag, pid)]
        run.last = max(run.last, t)
        run.ended = run.ended or what == "end"
    for tag_runs in runs.values():
        tag_runs.sort(key=lambda r: r.start)
    return runs


def assert_no_overlap(runs: dict[str, list[Run]]) -> None:
    """No job ran in two places at once: each run was last seen before the next began."""
    for tag, tag_runs in runs.items():
        for before, after in zip(tag_runs, tag_runs[1:]):
            assert before.last < after.start, (
                f"job {tag} ran twice at once: pid {before.pid} seen until "
                f"{before.last:.3f}, pid {after.pid} started at {after.start:.3f}"
            )


def pids_of(runs: dict[str, list[Run]]) -> set[int]:
    return {run.pid for tag_runs in runs.values() for run in tag_runs}


class Env:
    """A store in tmp_path, a Queue on it (in the test process) and a marker file."""

    def __init__(self, tmp_path: Path):
        self.path = str(tmp_path / "store")
        self.queue = Queue(self.path)
        self.marker = tmp_path / "markers.log"

    def task(self, name: str) -> Any:
        return self.queue.task_by_name(f"tests.support.serve_tasks.{name}")

    def runs(self) -> dict[str, list[Run]]:
        return read_runs(self.marker)

    def stats(self) -> dict[str, int]:
        return self.queue.stats()

    def record(self, job: Any) -> Any:
        return self.queue.store.get(job.id)


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    made = Env(tmp_path)
    try:
        yield made
    finally:
        made.queue.close()


@pytest.fixture(params=["lmdb", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store location on each backend: an LMDB directory, or a PostgreSQL schema (a
    test module using it imports ``pg_url`` too)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "store")
