"""Rate limits with real servers: three ``mpqueue serve`` processes on one store, a task
limited to RATE starts a second: over about ten seconds no second of claims holds more
than RATE, and the servers wait for the rate without polling in between."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from mpqueue import Queue

from ..support.helpers import wait_until
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import location, read_runs, servers  # noqa: F401

RATE = 8  # starts per second
JOBS = 80  # ten seconds' worth at the rate
SLEEPY = "tests.support.serve_tasks.sleepy"


def _most_in_a_window(times_ms: list[int], window_ms: int) -> int:
    """The most of ``times_ms`` inside any half-open window of ``window_ms``."""
    times = sorted(times_ms)
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window_ms:
            first += 1
        most = max(most, last - first + 1)
    return most


@pytest.mark.timeout(120)
def test_three_servers_never_start_more_than_the_rate(location: str, tmp_path: Path, servers):
    marker = tmp_path / "marker"
    with Queue(location) as queue:
        task = queue.task_by_name(SLEEPY)
        queue.limit_task(task, rate=f"{RATE}/s")
        jobs = task.map([(str(marker), i, 0.2) for i in range(JOBS)])
        began = time.monotonic()
        running = [servers(location, "--workers", "2") for _ in range(3)]
        claimed_at: dict[str, int] = {}

        def all_done() -> bool:
            # Each job stays claimed for its 0.2 s run: every claim is seen here.
            for claim in queue.store.claims():
                claimed_at.setdefault(claim.job_id, claim.claimed_at_ms)
            return queue.stats()["done"] == JOBS

        cpu_before = [psutil.Process(s.pid).cpu_times() for s in running]
        wait_until(all_done, 90, f"{JOBS} jobs done", interval=0.02)
        wall = time.monotonic() - began
        cpu = [
            sum(psutil.Process(s.pid).cpu_times()[:2]) - sum(before[:2])
            for s, before in zip(running, cpu_before)
        ]
    assert set(claimed_at) == {job.id for job in jobs}
    assert _most_in_a_window(list(claimed_at.values()), 1000) <= RATE
    # the rate held the run back: without it six workers finish in about 3 s
    assert wall >= JOBS / RATE - 1.5, wall
    # the children started what was claimed: each job ran once
    runs = read_runs(marker)
    assert sorted(runs) == sorted(str(i) for i in range(JOBS))
    assert all(len(r) == 1 for r in runs.values())
    # waiting for the rate, a server sleeps: its coordinator used a fraction of a core
    assert max(cpu) < 0.3 * wall, (cpu, wall)
