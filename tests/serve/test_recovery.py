"""Killing a dead coordinator's leftover children must not stall the server that does it."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from mpqueue import Queue
from mpqueue.records import now_ms
from mpqueue.serve.recovery import kill_orphans, reclaim_dead


@pytest.mark.timeout(30)
def test_kill_orphans_does_not_wait_for_a_zombie_to_be_reaped() -> None:
    # A process that is not our child (its parent shell exits at once), as a dead
    # coordinator's worker is not the child of the server that cleans up after it.
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!"], stdout=subprocess.PIPE, text=True)
    assert shell.stdout is not None
    pid = int(shell.stdout.readline())
    shell.wait()
    orphan = psutil.Process(pid)
    try:
        started = time.monotonic()
        assert kill_orphans({"children": [(pid, orphan.create_time())]}) == 1
        took = time.monotonic() - started
        assert not psutil.pid_exists(pid) or orphan.status() == psutil.STATUS_ZOMBIE
        assert took < 0.5, f"kill_orphans blocked {took:.2f} s"
    finally:
        if psutil.pid_exists(pid) and orphan.status() != psutil.STATUS_ZOMBIE:
            orphan.kill()


def test_kill_orphans_leaves_a_reused_pid_alone() -> None:
    me = psutil.Process()
    assert kill_orphans({"children": [(me.pid, me.create_time() - 100)]}) == 0


@pytest.mark.timeout(30)
def test_reclaiming_another_hosts_server_never_kills_a_local_process(store_path) -> None:
    """Issue 10, item 6: the pids a server on another host registered are not ours; a
    local process that happens to have one of them (and its start time) survives."""
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        started = psutil.Process(bystander.pid).create_time()
        other = "elsewhere:0123456789ab:4026531836:4242:1700000000000"
        with Queue(store_path) as queue:
            job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
            assert [r.id for r in queue.store.claim(other, 1, now_ms())] == [job.id]
            queue.store.register_server(
                other,
                {
                    "pid": 4242,
                    "host": "elsewhere",
                    "heartbeat_ms": now_ms() - 60_000,
                    "children": [(bystander.pid, started)],
                },
            )
            assert reclaim_dead(queue.store, "me", lease_s=1.0) == [job.id]
            assert bystander.poll() is None, "a local process was killed"
            assert job.state == "ready" and queue.store.servers() == {}
    finally:
        bystander.kill()
        bystander.wait()
