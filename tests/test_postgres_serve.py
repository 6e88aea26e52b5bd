"""Several ``mpqueue serve`` "hosts" on one PostgreSQL database (GitHub issue 5).

Three servers, each with its own ``MPQUEUE_HOST_ID``, share one schema. Every job runs
exactly once when all live; when one server is SIGKILLed mid-job, the others put its
jobs back (by its pid on this host, or, once host ids make it remote, by its heartbeat
age on the database clock) and every job still finishes, never two runs at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from mpqueue import Queue, StoreError

from .pg_helpers import admin, pg_url  # noqa: F401
from .serve_helpers import ROOT, assert_no_overlap, gone, read_runs, wait_until

HOSTS = ("host-a", "host-b", "host-c")


class Host:
    """One serve process pretending to be on its own host."""

    def __init__(self, url: str, host_id: str, log_path: Path):
        self.log_path = log_path
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                   MPQUEUE_HOST_ID=host_id)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mpqueue", "--path", url, "serve", "--workers", "1",
                 "--poll-interval", "0.2", "--grace", "2", "--prefetch", "0"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def children(self, queue: Queue) -> list[int]:
        for info in queue.store.workers().values():
            if info.get("pid") == self.proc.pid:
                return [pid for pid, _ in info.get("children", ())]
        return []

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def hosts(pg_url, tmp_path) -> Iterator[tuple[Queue, list[Host]]]:
    queue = Queue(pg_url)
    queue.stats()  # create the schema before the servers race to
    started = [Host(pg_url, name, tmp_path / f"{name}.log") for name in HOSTS]
    try:
        wait_until(lambda: all(h.children(queue) for h in started), 30, "three hosts ready")
        yield queue, started
    finally:
        for host in started:
            children = host.children(queue) if host.proc.poll() is None else []
            host.stop()
            for pid in children:
                if not gone(pid):
                    os.kill(pid, signal.SIGKILL)
        queue.close()


@pytest.mark.timeout(60)
def test_three_hosts_share_the_jobs(hosts, tmp_path):
    queue, started = hosts
    marker = tmp_path / "markers.log"
    quick = queue.task_by_name("tests.serve_tasks.quick")
    quick.map([(str(marker), i) for i in range(300)])
    wait_until(lambda: queue.stats()["done"] == 300, 40, "300 jobs done")
    runs = read_runs(marker)
    assert sorted(map(int, runs)) == list(range(300))
    assert all(len(r) == 1 for r in runs.values()), "a job ran twice"
    workers = queue.store.workers()
    assert len(workers) == 3 and all(w["heartbeat_age_ms"] < 10_000 for w in workers.values())


@pytest.mark.timeout(90)
def test_a_killed_host_loses_no_job(hosts, tmp_path):
    queue, started = hosts
    marker = tmp_path / "markers.log"
    sleepy = queue.task_by_name("tests.serve_tasks.sleepy")
    sleepy.map([(str(marker), i, 1.0) for i in range(9)])
    children = {pid: host for host in started for pid in host.children(queue)}

    def busy_host() -> Host | None:  # whichever host runs a job first
        return next((children[r.pid] for rs in read_runs(marker).values() for r in rs
                     if r.pid in children), None)
    victim: Host = wait_until(busy_host, 20, "a host runs a job")
    victim.proc.kill()
    victim.proc.wait(5)
    wait_until(lambda: queue.stats()["done"] == 9, 60,
               "every job done after a host died")
    stats = queue.stats()
    assert stats["processing"] == 0 and stats["dead"] == 0 and stats["total"] == 9
    runs = read_runs(marker)
    assert sorted(map(int, runs)) == list(range(9))
    assert_no_overlap(runs)
    assert all(runs_of[-1].ended for runs_of in runs.values())
    assert str(victim.proc.pid) not in "".join(queue.store.workers())  # unregistered
    for host in started:
        if host is not victim:
            assert host.proc.poll() is None, host.log()[-2000:]


def _restart_database() -> None:
    subprocess.run([str(ROOT / "scripts" / "pg-test-server"), "restart"], check=True,
                   timeout=90, env=os.environ)


def _terminate_connections(url: str) -> None:
    with admin(url) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                     "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("outage", ["restart", "terminate"])
def test_server_survives_losing_the_database(pg_url, tmp_path, outage):
    """The database restarts (or drops every connection) while a server runs jobs: the
    server reconnects with backoff, keeps its outcomes until they commit, and every
    job ends done, none dead, none run twice at the same time."""
    if outage == "restart" and not os.environ.get("MPQUEUE_PG_STATE"):
        if os.environ.get("CI"):
            pytest.fail("CI must run the suite through scripts/test (it owns the server)")
        pytest.skip("restarting needs the throwaway server that scripts/test starts")
    queue = Queue(pg_url)
    marker = tmp_path / "markers.log"
    queue.task_by_name("tests.serve_tasks.sleepy").map(
        [(str(marker), i, 0.05) for i in range(60)])
    host = Host(pg_url, "solo", tmp_path / "solo.log")
    try:
        wait_until(lambda: queue.stats()["done"] >= 15, 30, "some jobs done")
        queue.close()
        _restart_database() if outage == "restart" else _terminate_connections(pg_url)
        queue = Queue(pg_url)
        wait_until(lambda: _stats_or_none(queue) is not None
                   and _stats_or_none(queue)["done"] == 60, 60, "every job done")
        stats = queue.stats()
        assert stats["dead"] == 0 and stats["processing"] == 0, stats
        runs = read_runs(marker)
        assert sorted(map(int, runs)) == list(range(60))
        assert_no_overlap(runs)
        assert host.proc.poll() is None, host.log()[-3000:]
        assert "store unavailable" in host.log(), host.log()[-3000:]
    finally:
        host.stop()
        queue.close()


def _stats_or_none(queue: Queue) -> dict[str, int] | None:
    try:
        return queue.stats()
    except StoreError:
        return None
