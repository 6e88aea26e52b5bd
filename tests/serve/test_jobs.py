"""``mpqueue serve`` and misbehaving jobs: timeouts, exits, bad results, bad payloads.

Real processes and real signals (issue 3). Job bodies are in serve_tasks.py.
"""

from __future__ import annotations

import sys
import time

import pytest

from mpqueue.records import JobRecord, JobState, new_job_id, now_ms

from ..support.serve_helpers import env, gone, servers, wait_until  # noqa: F401

TIMEOUT_S = 1.0  # the timeout= of the timeout tasks in serve_tasks.py
TIMEOUT_GRACE_S = 0.5
SLACK_S = 0.75  # process start-up, polling and a noisy 2-core machine


def _finished(env, job, timeout):
    return wait_until(
        lambda: (r := env.record(job)).state in (JobState.DONE, JobState.DEAD) and r,
        timeout,
        f"job {job.id} finished",
    )


@pytest.mark.timeout(60)
def test_timeouts_stop_only_the_job_that_ran_over(env, servers):
    """A Python loop (soft limit), a bare ``except:`` that swallows the soft limit and a
    long C call (both need the hard kill) each end as a timeout within timeout + grace;
    a neighbour running meanwhile in the other child is not disturbed."""
    server = servers(env.path, "--workers", "2", "--timeout-grace", str(TIMEOUT_GRACE_S))
    server.wait_ready(env.queue, 2)
    marker = str(env.marker)
    neighbour = env.task("sleepy").delay(marker, "neighbour", 6.0)
    wait_until(lambda: "neighbour" in env.runs(), 10, "neighbour started")
    killed: list[int] = []
    for name, hard in (("busy_loop", False), ("swallow_timeout", True), ("long_c_call", True)):
        # Wait for two ready children (a killed one is replaced), so the job goes to
        # the idle one rather than queueing behind the neighbour.
        wait_until(
            lambda: len(set(server.children(env.queue)) - set(killed)) == 2,
            10,
            "two ready children",
        )
        job = env.task(name).delay(marker, name)
        rec = _finished(env, job, 10)
        seen_s = time.monotonic()
        (run,) = env.runs()[name]
        took_s = seen_s - run.start
        limit_s = TIMEOUT_S + (TIMEOUT_GRACE_S if hard else 0.0) + SLACK_S
        assert took_s < limit_s, (name, took_s)
        assert took_s >= TIMEOUT_S - 0.05, (name, took_s)
        assert rec.state is JobState.DEAD and rec.attempts == 1
        (error,) = rec.errors
        assert error.kind == "timeout" and error.type == "JobTimeout", error
        assert ("killed" in error.message) == hard, error.message
        if hard:
            wait_until(lambda: gone(run.pid), 5, "timed-out worker killed")
            killed.append(run.pid)
        else:
            assert not gone(run.pid)  # the soft limit keeps the worker
        print(f"{name}: ended {took_s:.2f} s after it started")
    rec = _finished(env, neighbour, 15)
    assert rec.state is JobState.DONE and rec.attempts == 1 and rec.errors == ()
    (run,) = env.runs()["neighbour"]
    assert run.ended and run.pid not in killed
    with open(env.marker, encoding="ascii") as fh:
        assert any(line.startswith("swallowed swallow_timeout") for line in fh)  # it did


@pytest.mark.timeout(60)
def test_timeout_kill_charges_only_the_running_job_not_the_queued_one(env, servers):
    """With one worker the next job (with a time limit of its own) waits in the same
    child behind a job that is killed for its timeout: it is put back uncharged and
    runs once, in the replacement child."""
    marker = str(env.marker)
    stuck = env.task("swallow_timeout").delay(marker, "stuck")
    queued = env.task("quick_with_timeout").delay(marker, "queued")
    server = servers(env.path, "--workers", "1", "--timeout-grace", str(TIMEOUT_GRACE_S))
    rec = _finished(env, queued, 20)
    assert rec.state is JobState.DONE, rec.errors
    assert rec.attempts == 1 and rec.errors == ()
    rec = _finished(env, stuck, 5)
    assert rec.state is JobState.DEAD and rec.errors[-1].kind == "timeout"
    assert env.runs()["queued"][0].pid != env.runs()["stuck"][0].pid
    assert server.proc.poll() is None  # still serving


@pytest.mark.timeout(60)
def test_jobs_that_exit_interrupt_or_return_junk_fail_cleanly(env, servers, tmp_path):
    marker = str(env.marker)
    # An argument whose class lives in a module the server cannot import.
    (tmp_path / "only_here.py").write_text("class Thing:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import only_here  # type: ignore[import-not-found]

        unloadable = env.task("echo").delay(marker, "unloadable", only_here.Thing())
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_here", None)
    # A record whose payload bytes are garbage, written through the store.
    now = now_ms()
    garbage = JobRecord(
        id=new_job_id(),
        name="tests.support.serve_tasks.echo",
        state=JobState.READY,
        payload=b"\x01not a pickle",
        run_at_ms=now,
        created_at_ms=now,
        max_retries=3,
    )
    env.queue.store.add([garbage])
    bad = {
        name: env.task(name).delay(marker, name)
        for name in ("exit_3", "keyboard_interrupt", "unpicklable_result")
    }
    normal = env.task("quick").map([(marker, i) for i in range(20)])

    server = servers(env.path, "--workers", "2", "--until-empty")
    assert server.wait(30) == 1  # some jobs ended dead; the server itself is fine

    expected = {
        "exit_3": ("SystemExit", "3"),
        "keyboard_interrupt": ("KeyboardInterrupt", "pressed in a job"),
        "unpicklable_result": ("SerializationError", "cannot pickle"),
    }
    for name, job in bad.items():
        rec = env.record(job)
        (error,) = rec.errors
        assert rec.state is JobState.DEAD and rec.attempts == 1, name
        assert error.type == expected[name][0] and expected[name][1] in error.message
        assert error.kind == "exception" and error.traceback, name
    assert "_thread.lock" in env.record(bad["unpicklable_result"]).errors[0].message
    for job_id in (unloadable.id, garbage.id):  # straight to dead, not retried (retries=3)
        rec = env.queue.store.get(job_id)
        (error,) = rec.errors
        assert rec.state is JobState.DEAD and rec.attempts == 1
        assert error.kind == "payload" and error.type == "PayloadError"
        assert "cannot unpickle the payload" in error.message
    assert "only_here" in env.queue.store.get(unloadable.id).errors[0].message
    assert "unloadable" not in env.runs()  # the body never ran
    assert all(env.record(j).state is JobState.DONE and env.record(j).attempts == 1 for j in normal)
    stats = env.stats()
    assert (stats["done"], stats["dead"], stats["processing"]) == (20, 5, 0)
    log = server.log()
    assert all(job.id in log for job in bad.values())


@pytest.mark.timeout(60)
def test_soft_timeout_racing_the_hard_kill(env, servers):
    """--timeout-grace 0: the child's own timeout report and the coordinator's kill
    land at the same moment. Whichever wins, each job is charged once, as a timeout,
    and the server keeps going."""
    marker = str(env.marker)
    looping = env.task("busy_loop").map([(marker, f"loop{i}") for i in range(6)])
    normal = env.task("quick").map([(marker, i) for i in range(10)])
    server = servers(env.path, "--workers", "2", "--until-empty", "--timeout-grace", "0")
    assert server.wait(40) == 1
    for job in looping:
        rec = env.record(job)
        assert rec.state is JobState.DEAD and rec.attempts == 1
        assert [e.kind for e in rec.errors] == ["timeout"]
    assert all(env.record(j).state is JobState.DONE and env.record(j).attempts == 1 for j in normal)
    assert "Traceback" not in server.log()
