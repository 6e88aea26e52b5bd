"""Concurrency limits with real servers: three ``mpqueue serve`` processes on one store
with a task limited to two running jobs, SIGKILLed (with their children) at random and
restarted, never run a third job at once, and every job ends done."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import psutil
import pytest

from mpqueue import Queue

from ..support.helpers import wait_until
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import location, servers  # noqa: F401

JOBS = int(os.environ.get("MPQUEUE_LIMIT_TEST_JOBS", "500"))


def _kill_tree(server) -> None:
    """SIGKILL a server and every process it started, as a machine's crash would."""
    try:
        victims = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        victims = []
    server.proc.kill()
    server.proc.wait(10)
    for proc in victims:
        try:
            proc.kill()
        except psutil.Error:
            pass


@pytest.mark.timeout(300)
def test_servers_killed_at_random_never_run_more_than_the_limit(
    location: str, tmp_path: Path, servers
) -> None:
    path = location
    slots = tmp_path / "slots"
    slots.mkdir()
    rng = random.Random(15)
    with Queue(path) as queue:
        task = queue.task_by_name("tests.support.serve_tasks.slotted")
        queue.limit_task(task, concurrency=2)
        task.map([(str(slots), i, 0.03) for i in range(JOBS)])
        running = [servers(path, "--workers", "2") for _ in range(3)]
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:  # kill one at random, start a new one
            time.sleep(rng.uniform(0.3, 1.2))
            victim = running.pop(rng.randrange(len(running)))
            _kill_tree(victim)
            running.append(servers(path, "--workers", "2"))
            limit = queue.limits()[0]
            assert limit.running <= 2, limit
        wait_until(lambda: queue.stats()["done"] == JOBS, 180, f"{JOBS} jobs done")
        assert not (slots / "over").exists(), (slots / "over").read_text()
        assert queue.limits()[0].running == 0
        assert queue.check().code == 0
