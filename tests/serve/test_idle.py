"""An idle server sleeps: it neither spins nor polls the store in a tight loop."""

from __future__ import annotations

import time

import psutil
import pytest

from mpqueue import Queue

from ..support.serve_helpers import Env, env, servers  # noqa: F401

IDLE_SAMPLE_S = 1.5
MAX_IDLE_CPU = 0.10  # of one core; a spinning loop uses ~1.0, a sleeping one ~0.002


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "args", [(), ("--mode", "legacy"), ("--poll-only",)], ids=["wake-ups", "legacy", "poll-only"]
)
def test_idle_server_uses_almost_no_cpu(env: Env, servers, args) -> None:
    server = servers(env.path, "--workers", "1", "--poll-interval", "0.2", *args)
    with Queue(env.path, mode="legacy" if "legacy" in args else "optimized") as queue:
        server.wait_ready(queue, 1)  # (a queue of the server's mode: no layout migration)
    coordinator = psutil.Process(server.pid)
    before = coordinator.cpu_times()
    time.sleep(IDLE_SAMPLE_S)  # measuring an interval: nothing to wait for
    after = coordinator.cpu_times()
    used = (after.user + after.system - before.user - before.system) / IDLE_SAMPLE_S
    assert used < MAX_IDLE_CPU, f"idle coordinator used {used:.0%} of a core"
