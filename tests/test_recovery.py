"""Killing a dead coordinator's leftover children must not stall the server that does it."""

from __future__ import annotations

import subprocess
import time

import psutil
import pytest

from mpqueue.recovery import kill_orphans


@pytest.mark.timeout(30)
def test_kill_orphans_does_not_wait_for_a_zombie_to_be_reaped() -> None:
    # A process that is not our child (its parent shell exits at once), as a dead
    # coordinator's worker is not the child of the server that cleans up after it.
    shell = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!"], stdout=subprocess.PIPE,
                             text=True)
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
