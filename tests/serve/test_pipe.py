"""What a job writes on its worker's pipe can cost that job, never the server (issue 10).

A job runs in the worker child and can write any bytes to any fd it has, the pipe to
its server included. Each case here writes something that is not a message (or closes
the pipe) and then sleeps: a server that believed the bytes, or waited for the rest of
an announced frame, would crash or wait on it; one that treats them as the child's
crash kills that child at once, charges the job and goes on serving.
"""

from __future__ import annotations

import signal

import pytest

from ..support.serve_helpers import env, servers, wait_until  # noqa: F401

ATTACKS = [
    "garbage",
    "old_huge_header",
    "huge_header",
    "wrong_job",
    "released_twice",
    "bad_shape",
    "close",
]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("attack", ATTACKS)
def test_bad_bytes_on_the_pipe_are_that_jobs_crash(env, servers, attack):
    server = servers(env.path, "--workers", "2")
    server.wait_ready(env.queue, 2)
    bad = env.task("pipe_attack").delay(str(env.marker), attack, env.path)
    good = [env.task("quick").delay(str(env.marker), f"good{i}") for i in range(10)]

    # Two attempts (retries=1), each would sleep 30 s if the server waited on it.
    wait_until(lambda: env.record(bad).state == "dead", 25, f"{attack} job dead")
    wait_until(lambda: all(env.record(j).state == "done" for j in good), 20, "every other job done")
    rec = env.record(bad)
    assert rec.attempts == 2
    assert [e.kind for e in rec.errors] == ["crash", "crash"]
    expected = "closed its pipe" if attack == "close" else "message"
    if attack == "close":  # the child notices first and exits; either way it is a crash
        assert all(e.type == "WorkerCrashed" for e in rec.errors)
    else:
        assert all(expected in e.message for e in rec.errors), rec.errors

    # The server is still serving, and stops cleanly.
    late = env.task("quick").delay(str(env.marker), "late")
    wait_until(lambda: env.record(late).state == "done", 20, "a job after the attack done")
    assert server.proc.poll() is None, server.log()[-3000:]
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0, server.log()[-3000:]
    assert "Traceback" not in server.log(), server.log()[-3000:]


@pytest.mark.timeout(90)
def test_a_server_restarted_over_a_bad_job_serves_the_rest(env, servers):
    """The job that broke the pipe is charged, so a restart does not meet it again and
    again: it ends dead after its retries, and --until-empty finishes the rest."""
    env.task("pipe_attack").delay(str(env.marker), "garbage")
    good = [env.task("quick").delay(str(env.marker), f"good{i}") for i in range(20)]
    server = servers(env.path, "--workers", "2", "--until-empty")
    assert server.wait(60) == 1, server.log()[-3000:]  # 1: a job ended dead
    assert all(env.record(j).state == "done" for j in good)
    assert env.stats()["dead"] == 1
