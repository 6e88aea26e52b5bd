"""``mpqueue serve`` lifecycle: stopping on signals, --until-empty, worker recycling,
wake-ups and schedules. Real processes and real signals (issue 3)."""

from __future__ import annotations

import signal
import statistics
import time

import pytest

from mpqueue.records import JobState

from ..support.serve_helpers import env, gone, servers, wait_until  # noqa: F401


def _state(env, job):
    return env.record(job).state


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["TERM", "INT", "HUP"]
)
def test_signal_lets_running_jobs_finish_and_puts_the_rest_back(env, servers, signum):
    jobs = env.task("sleepy").map([(str(env.marker), i, 1.0) for i in range(12)])
    server = servers(env.path, "--workers", "2", "--grace", "10")
    wait_until(lambda: len(env.runs()) == 2, 20, "two jobs running")
    held = env.stats()["processing"]
    assert held >= 2
    server.send(signum)
    signalled_at = time.monotonic()
    assert server.wait(10) == 0
    stopped_s = time.monotonic() - signalled_at
    assert stopped_s < 2.5, stopped_s  # the two running jobs (1 s) finished, no more

    runs = env.runs()
    assert len(runs) == 2 and all(r.ended for rs in runs.values() for r in rs)
    assert all(r.start < signalled_at for rs in runs.values() for r in rs)  # no new claims
    ran = {int(tag) for tag in runs}
    for i, job in enumerate(jobs):
        rec = env.record(job)
        if i in ran:
            assert rec.state is JobState.DONE and rec.attempts == 1
        else:  # put back as if never claimed
            assert rec.state is JobState.READY and rec.attempts == 0 and rec.errors == ()
    stats = env.stats()
    assert (stats["processing"], stats["done"], stats["ready"]) == (0, 2, 10)
    assert env.queue.store.servers() == {}  # unregistered
    print(f"{signal.Signals(signum).name} with {held} claimed: exit after {stopped_s:.2f} s")


@pytest.mark.timeout(60)
def test_short_grace_kills_running_jobs_and_puts_them_back_uncharged(env, servers):
    jobs = env.task("sleepy").map([(str(env.marker), i, 5.0) for i in range(6)])
    server = servers(env.path, "--workers", "2", "--grace", "0.3")
    running = wait_until(lambda: (r := env.runs()) and len(r) == 2 and r, 20, "running")
    children = {rs[0].pid for rs in running.values()}
    server.send(signal.SIGTERM)
    signalled_at = time.monotonic()
    assert server.wait(10) == 0
    stopped_s = time.monotonic() - signalled_at
    assert stopped_s < 2.0, stopped_s
    wait_until(lambda: all(gone(pid) for pid in children), 5, "children killed")
    runs = env.runs()
    assert not any(r.ended for rs in runs.values() for r in rs)
    for job in jobs:
        rec = env.record(job)
        assert rec.state is JobState.READY and rec.attempts == 0 and rec.errors == ()
    assert env.stats()["processing"] == 0
    print(f"grace 0.3 s: exit after {stopped_s:.2f} s")


@pytest.mark.timeout(60)
def test_second_signal_stops_at_once(env, servers):
    env.task("sleepy").map([(str(env.marker), i, 5.0) for i in range(4)])
    server = servers(env.path, "--workers", "2", "--grace", "30", "--log-level", "info")
    wait_until(lambda: len(env.runs()) == 2, 20, "running")
    server.send(signal.SIGTERM)
    wait_until(lambda: "stopping" in server.log(), 5, "stopping logged")  # an info line
    server.send(signal.SIGINT)
    assert server.wait(5) == 0
    stats = env.stats()
    assert (stats["processing"], stats["ready"], stats["done"]) == (0, 4, 0)


@pytest.mark.timeout(60)
def test_max_tasks_per_child_with_a_backlog_does_not_hang(env, servers):
    """CPython gh-115634: ProcessPoolExecutor(max_tasks_per_child) hangs with a backlog."""
    jobs = env.task("quick").map([(str(env.marker), i) for i in range(20)])
    server = servers(env.path, "--workers", "2", "--until-empty", "--max-tasks-per-child", "2")
    assert server.wait(45) == 0
    assert all(_state(env, j) is JobState.DONE and env.record(j).attempts == 1 for j in jobs)
    runs = env.runs()
    assert all(len(rs) == 1 for rs in runs.values())
    per_pid: dict[int, int] = {}
    for pid in (r.pid for rs in runs.values() for r in rs):
        per_pid[pid] = per_pid.get(pid, 0) + 1
    assert len(per_pid) >= 10 and max(per_pid.values()) <= 2, per_pid


@pytest.mark.timeout(60)
def test_max_memory_per_child_replaces_the_worker_and_names_the_job(env, servers):
    server = servers(env.path, "--workers", "1", "--max-memory-per-child", "150")
    server.wait_ready(env.queue, 1)
    hog = env.task("hog").delay(str(env.marker), "hog", 200)
    wait_until(lambda: _state(env, hog) is JobState.DONE, 20, "hog done")
    hog_pid = env.runs()["hog"][0].pid
    wait_until(lambda: gone(hog_pid), 10, "the bloated worker replaced")
    after = env.task("quick").delay(str(env.marker), "after")
    wait_until(lambda: _state(env, after) is JobState.DONE, 20, "next job done")
    assert env.runs()["after"][0].pid != hog_pid
    log = server.log()
    assert f"job {hog.id} pushed worker {hog_pid} to" in log and "replacing" in log


@pytest.mark.timeout(60)
def test_until_empty_exit_codes_and_pending_retries(env, servers):
    marker = str(env.marker)
    ok = env.task("quick").map([(marker, i) for i in range(10)])
    assert servers(env.path, "--workers", "2", "--until-empty").wait(30) == 0
    assert all(_state(env, j) is JobState.DONE for j in ok)

    # Only a job that fails once, then succeeds after a 0.05 s backoff: the server
    # must wait for the retry rather than leave while it is scheduled.
    flaky = env.task("flaky").delay(marker, "flaky")
    assert servers(env.path, "--workers", "2", "--until-empty").wait(30) == 0
    rec = env.record(flaky)
    assert rec.state is JobState.DONE and rec.attempts == 2 and len(rec.errors) == 1

    failing = env.task("fail").delay(marker, "failing")
    more = env.task("quick").map([(marker, i) for i in range(10, 20)])
    assert servers(env.path, "--workers", "2", "--until-empty").wait(30) == 1
    assert _state(env, failing) is JobState.DEAD
    assert all(_state(env, j) is JobState.DONE for j in more)


@pytest.mark.timeout(60)
def test_idle_server_wakes_up_for_new_and_scheduled_jobs(env, servers):
    server = servers(env.path, "--workers", "2")
    server.wait_ready(env.queue, 2)
    quick = env.task("quick")
    latencies = []
    for i in range(5):
        enqueued = time.monotonic()
        job = quick.delay(str(env.marker), f"wake{i}")
        wait_until(lambda: _state(env, job) is JobState.DONE, 5, "woken job done")
        latencies.append(time.monotonic() - enqueued)
        started_s = env.runs()[f"wake{i}"][0].start - enqueued
        assert started_s < 1.0
    # Without a wake-up a job waits for the next timer (0.5-1 s); with one, milliseconds.
    assert max(latencies) < 1.0 and statistics.median(latencies) < 0.3, latencies

    enqueued = time.monotonic()
    later = quick.schedule((str(env.marker), "later"), delay=0.3)
    wait_until(lambda: _state(env, later) is JobState.DONE, 5, "scheduled job done")
    started_s = env.runs()["later"][0].start - enqueued
    assert 0.3 - 0.002 <= started_s < 1.3, started_s  # ms rounding of run_at
    print(
        f"wake-up latency enqueue->done: "
        f"{', '.join(f'{x * 1000:.1f}' for x in latencies)} ms; "
        f"scheduled +0.3 s job started after {started_s * 1000:.0f} ms"
    )
