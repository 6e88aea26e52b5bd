"""Control under ``mpqueue serve`` (issue 13): cancelling jobs, and progress reports.

A running job's cancel reaches its child through the server: a pure-Python loop stops
at the cancel's exception, a bare ``except:`` and a long C call are killed after the
grace. Neighbours are not touched. Job bodies are in serve_tasks.py.
"""

from __future__ import annotations

import signal
import time

import pytest

from mpqueue import JobCancelled, JobExpired, Queue
from mpqueue.records import JobState, now_ms

from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import env, gone, servers, wait_until  # noqa: F401

GRACE_S = 0.5  # --timeout-grace: how long a cancelled job has to stop
SLACK_S = 2.0  # a noisy 2-core machine: start-up, polling, scheduling


def _ended(env, job, timeout=15.0):
    return wait_until(
        lambda: (
            (r := env.record(job)).state in (JobState.DONE, JobState.DEAD, JobState.CANCELLED) and r
        ),
        timeout,
        f"job {job.id} ended",
    )


def _started(env, tag, timeout=15.0):
    return wait_until(lambda: env.runs().get(tag), timeout, f"{tag} started")[0]


@pytest.mark.timeout(120)
def test_cancel_stops_the_running_job_and_only_it(env, servers):
    """A Python loop stops by the exception (its child lives on), a bare ``except:`` and
    a long C call by the kill after the grace; each ends cancelled after one attempt
    (its retries unused), and a neighbour running meanwhile finishes uncharged."""
    server = servers(env.path, "--workers", "2", "--timeout-grace", str(GRACE_S))
    server.wait_ready(env.queue, 2)
    marker = str(env.marker)
    neighbour = env.task("sleepy").delay(marker, "neighbour", 12.0)
    _started(env, "neighbour")
    for name, killed in (("spin", False), ("swallow_everything", True), ("c_call", True)):
        wait_until(lambda: len(server.children(env.queue)) == 2, 15, "two ready children")
        job = env.task(name).delay(marker, name)
        run = _started(env, name)
        asked = time.monotonic()
        assert job.cancel(reason="wrong parameter") is True
        rec = _ended(env, job)
        took_s = time.monotonic() - asked
        assert rec.state is JobState.CANCELLED, rec
        assert rec.attempts == 1 and rec.result is None
        last = rec.errors[-1]
        assert last.kind == "cancelled" and "wrong parameter" in last.message, last
        assert "cancelled by" in last.message
        assert took_s < (GRACE_S if killed else 0) + SLACK_S, (name, took_s)
        wait_until(lambda: gone(run.pid) == killed or not killed, 10, f"{name}'s child gone")
        assert gone(run.pid) == killed, (name, run.pid)
        with pytest.raises(JobCancelled, match="wrong parameter"):
            job.result(timeout=1)
    assert _ended(env, neighbour, 30).state is JobState.DONE
    rec = env.record(neighbour)
    assert rec.attempts == 1 and not rec.errors
    assert [r.pid for r in env.runs()["neighbour"]] == [env.runs()["neighbour"][0].pid]
    assert env.queue.check().code == 0
    store = env.queue.store
    assert not any(store.cancel_requests(server_id) for server_id in store.servers())


@pytest.mark.timeout(60)
def test_a_job_queued_at_a_child_is_skipped(env, servers):
    """A job prefetched by a busy child, cancelled before its turn, never starts."""
    server = servers(env.path, "--workers", "1")
    server.wait_ready(env.queue, 1)
    marker = str(env.marker)
    first = env.task("sleepy").delay(marker, "first", 2.0)
    _started(env, "first")
    second = env.task("quick").delay(marker, "second")
    wait_until(lambda: env.record(second).state is JobState.PROCESSING, 10, "second claimed")
    report = env.queue.cancel(second.id)
    assert report.requested == [second.id]
    assert _ended(env, second).state is JobState.CANCELLED
    assert _ended(env, first).state is JobState.DONE
    assert "second" not in env.runs()


@pytest.mark.timeout(120)
def test_cancel_racing_completion_ends_each_job_once(env, servers):
    """200 short jobs, every other one cancelled while it is queued, claimed, running or
    just finished: the first commit wins. A cancel that found the job queued or running
    ends it cancelled, without a result; one that found it ended changed nothing; the
    jobs never cancelled are done. Never both a result and a cancel."""
    server = servers(env.path, "--workers", "2")
    server.wait_ready(env.queue, 2)
    marker = str(env.marker)
    sleepy = env.task("sleepy")
    jobs, found = [], {}
    for i in range(200):
        jobs.append(sleepy.delay(marker, f"j{i}", 0.002 * (i % 5)))
        if i % 2:  # the one before, by now anywhere from queued to done
            report = env.queue.cancel(jobs[-2].id)
            found.update(dict.fromkeys(report.cancelled, "cancelled"))
            found.update(dict.fromkeys(report.requested, "requested"))
            found.update(dict.fromkeys(report.finished, "finished"))
    assert len(found) == 100
    for job in jobs:
        rec = _ended(env, job, 60)
        if found.get(job.id) in ("cancelled", "requested"):
            assert rec.state is JobState.CANCELLED and rec.result is None, rec
            assert rec.errors[-1].kind == "cancelled"
        else:
            assert rec.state is JobState.DONE and rec.result is not None, (found.get(job.id), rec)
            assert not any(e.kind == "cancelled" for e in rec.errors)
    print({kind: list(found.values()).count(kind) for kind in set(found.values())})
    assert env.stats()["processing"] == 0
    assert env.queue.check().code == 0


@pytest.mark.timeout(90)
def test_cancel_on_a_dead_server_ends_the_job_cancelled(env, servers):
    """A job whose server was SIGKILLed, cancelled before any recovery: the next server
    puts it back as cancelled, and it never runs again."""
    first = servers(env.path, "--workers", "1")
    first.wait_ready(env.queue, 1)
    marker = str(env.marker)
    job = env.task("sleepy").delay(marker, "orphan", 30.0)
    run = _started(env, "orphan")
    first.send(signal.SIGKILL)
    first.wait(10)
    wait_until(lambda: gone(run.pid), 10, "its child gone with it")
    assert env.queue.cancel(job.id).requested == [job.id]
    second = servers(env.path, "--workers", "1")
    second.wait_ready(env.queue, 1)
    assert _ended(env, job, 30).state is JobState.CANCELLED
    assert len(env.runs()["orphan"]) == 1


@pytest.mark.timeout(90)
def test_cancel_on_postgres_from_another_host_reaches_the_job(
    pg_url, servers, tmp_path, monkeypatch
):
    """A server on "host-a" runs the job; a cancel made on "host-b" stops it through
    NOTIFY: it ends cancelled within the grace, its neighbour untouched."""
    from ..support.serve_helpers import Env

    monkeypatch.setenv("MPQUEUE_HOST_ID", "host-a")
    server = servers(pg_url, "--workers", "2", "--timeout-grace", str(GRACE_S))
    monkeypatch.setenv("MPQUEUE_HOST_ID", "host-b")
    pg = Env(tmp_path)
    pg.queue = type(pg.queue)(pg_url)
    try:
        server.wait_ready(pg.queue, 2)
        marker = str(pg.marker)
        neighbour = pg.task("sleepy").delay(marker, "neighbour", 4.0)
        job = pg.task("swallow_everything").delay(marker, "victim")
        run = _started(pg, "victim")
        asked = time.monotonic()
        assert job.cancel(reason="from host-b") is True
        rec = _ended(pg, job)
        assert time.monotonic() - asked < GRACE_S + SLACK_S
        assert rec.state is JobState.CANCELLED and "on host-b" in rec.errors[-1].message
        wait_until(lambda: gone(run.pid), 10, "the victim's child killed")
        assert _ended(pg, neighbour, 30).state is JobState.DONE
        assert pg.record(neighbour).attempts == 1
    finally:
        pg.queue.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pacing", [(), ("--poll-only",)], ids=["woken", "poll-only"])
def test_a_running_jobs_progress_reaches_the_store(env, servers, tmp_path, pacing):
    """A job reporting progress in a tight loop: its report shows while it runs (through
    the coordinator's commits, a server that only polls too), and its last one once it
    is done."""
    server = servers(env.path, "--workers", "1", *pacing)
    server.wait_ready(env.queue, 1)
    release = tmp_path / "release"
    job = env.task("report_progress").delay(str(env.marker), "p", str(release))
    first = wait_until(lambda: job.progress, 15, "a progress report")
    assert env.record(job).state is JobState.PROCESSING
    assert first.message.startswith("step ")
    later = wait_until(
        lambda: (p := job.progress) is not None and p.done > first.done and p, 15, "a later one"
    )
    assert later.at_ms >= first.at_ms
    release.touch()
    rec = _ended(env, job)
    assert rec.state is JobState.DONE
    last = job.progress
    assert last.message == "finished" and last.done == last.total


def _expired_unrun(env, late, after):
    """Once ``after`` is done (run once): ``late`` ended expired, uncharged, at or after
    its deadline, and never ran. Returns ``late``'s record."""
    rec = wait_until(
        lambda: (r := env.record(after)).state is JobState.DONE and r, 30, "the job after"
    )
    assert rec.attempts == 1
    gone = env.record(late)
    assert gone.state is JobState.EXPIRED, gone
    assert gone.attempts == 0 and gone.errors[-1].kind == "expired"
    assert gone.finished_at_ms >= gone.expires_at_ms
    assert "late" not in env.runs() and "after" in env.runs()
    return gone


@pytest.mark.timeout(120)
def test_a_job_behind_a_busy_worker_expires_and_never_runs(env, servers):
    """Expiry under a real server that claims only for a free worker (``--prefetch
    0``): a job whose deadline passes while the only worker is busy ends expired at the
    server's next claim, never runs, and the job behind it runs as usual."""
    server = servers(env.path, "--workers", "1", "--prefetch", "0")
    server.wait_ready(env.queue, 1)
    marker = str(env.marker)
    env.task("sleepy").delay(marker, "busy", 4.0)
    _started(env, "busy")
    late = env.task("quick").delay(marker, "late", expires=1.0)
    after = env.task("quick").delay(marker, "after")
    assert late.state == "ready" and late.expires_at is not None
    _expired_unrun(env, late, after)
    with pytest.raises(JobExpired, match="not started by its deadline"):
        late.result(timeout=5)
    assert env.stats()["expired"] == 1


@pytest.fixture(params=["lmdb", "postgres"])
def store_env(request, tmp_path):
    """``env`` on LMDB, or on PostgreSQL (a schema of its own)."""
    from ..support.serve_helpers import Env

    made = Env(tmp_path)
    if request.param == "postgres":
        made.queue.close()
        made.path = request.getfixturevalue("pg_url")
        made.queue = Queue(made.path)
    try:
        yield made
    finally:
        made.queue.close()


@pytest.mark.timeout(90)
def test_a_paused_task_waits_while_the_others_run(store_env, servers):
    """Under a real server: a job of the paused task that was running finishes, the
    task's queued jobs stay ready while other tasks' jobs (queued after them) run, and
    the resume lets them run."""
    env = store_env
    server = servers(env.path, "--workers", "2")
    server.wait_ready(env.queue, 2)
    marker, sleepy, quick = str(env.marker), env.task("sleepy"), env.task("quick")
    running = sleepy.delay(marker, "running", 1.0)
    _started(env, "running")
    assert env.queue.pause(sleepy).changed
    held = [sleepy.delay(marker, f"held-{i}", 0.0) for i in range(2)]
    free = [quick.delay(marker, f"free-{i}") for i in range(3)]
    for job in [running, *free]:
        assert _ended(env, job).state is JobState.DONE
    assert [env.record(job).state for job in held] == [JobState.READY] * 2
    assert not any(f"held-{i}" in env.runs() for i in range(2))
    assert env.queue.resume(sleepy).changed
    for job in held:
        assert _ended(env, job).state is JobState.DONE
    assert env.queue.check().code == 0


@pytest.mark.timeout(120)
def test_a_prefetched_job_past_its_deadline_at_its_turn_expires_and_never_runs(
    store_env, servers, tmp_path
):
    """With the default prefetch, a server claims a job ahead of its turn, before its
    deadline, into the buffer of its only (busy) child. Its turn comes after the
    deadline: the child does not start it, it ends expired (uncharged), and the job
    behind it in the same buffer runs."""
    server = servers(store_env.path, "--workers", "1")
    server.wait_ready(store_env.queue, 1)
    marker, release = str(store_env.marker), tmp_path / "release"
    busy = store_env.task("hold").delay(marker, "busy", str(release))
    _started(store_env, "busy")
    late = store_env.task("quick").delay(marker, "late", expires=3.0)
    after = store_env.task("quick").delay(marker, "after")
    deadline_ms = late.record.expires_at_ms
    for job in (late, after):  # prefetched: claimed by the server, queued at the child
        wait_until(lambda j=job: store_env.record(j).state is JobState.PROCESSING, 15, "prefetched")
    claimed = store_env.record(late)
    assert claimed.attempts == 1 and now_ms() < deadline_ms  # claimed in time
    wait_until(lambda: now_ms() > deadline_ms, 10, "the late job's deadline")
    release.touch()
    assert _expired_unrun(store_env, late, after).expires_at_ms == deadline_ms
    assert _ended(store_env, busy).state is JobState.DONE
    with pytest.raises(JobExpired, match="not started by its deadline"):
        late.result(timeout=5)
    stats = store_env.stats()
    assert stats["expired"] == 1 and stats["processing"] == 0
    assert store_env.queue.check().code == 0
