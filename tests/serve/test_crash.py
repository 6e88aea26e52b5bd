"""``mpqueue serve`` under crashes: killed children, killed coordinators, pid reuse.

Real processes, real signals, real LMDB in tmp_path (issue 3). Job bodies are in serve_tasks.py and
leave start/tick/end markers that show which process ran what, and when.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from mpqueue.identity import Identity, current
from mpqueue.records import now_ms
from mpqueue.serve.recovery import reclaim_dead
from mpqueue.store.lmdb import keys

from ..support.serve_helpers import assert_no_overlap, env, gone, pids_of, servers, wait_until  # noqa: F401


@pytest.mark.timeout(60)
def test_sigkill_of_a_child_retries_only_its_job(env, servers):
    server = servers(env.path, "--workers", "2")
    server.wait_ready(env.queue, 2)
    sleepy = env.task("sleepy")
    victim = sleepy.delay(str(env.marker), "victim", 1.5)
    bystander = sleepy.delay(str(env.marker), "bystander", 1.5)
    runs = wait_until(lambda: (r := env.runs()) and len(r) == 2 and r, 10, "both started")
    victim_pid, bystander_pid = runs["victim"][0].pid, runs["bystander"][0].pid
    assert victim_pid != bystander_pid  # one job per child
    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    wait_until(lambda: env.stats()["done"] == 2, 20, "both jobs done")
    rec = env.record(victim)
    assert rec.attempts == 2
    (error,) = rec.errors
    assert error.kind == "crash" and error.message == "worker killed by signal 9"
    assert error.type == "WorkerCrashed" and error.attempt == 1
    other = env.record(bystander)
    assert other.attempts == 1 and other.errors == ()

    runs = env.runs()
    first, retry = runs["victim"]
    assert not first.ended and first.pid == victim_pid and first.last < killed_at
    assert retry.ended and retry.pid != victim_pid and retry.start > killed_at
    (only,) = runs["bystander"]  # never restarted
    assert only.ended and only.pid == bystander_pid
    assert_no_overlap(runs)
    assert gone(victim_pid) and not gone(bystander_pid)  # the bystander's child lives on
    assert env.stats()["processing"] == 0


@pytest.mark.timeout(90)
def test_job_that_kills_its_child_is_dead_lettered_among_1000(env, servers):
    """1,000 normal jobs plus one that SIGKILLs its own worker on every attempt (and
    one that calls os._exit)."""
    quick = env.task("quick")
    marker = str(env.marker)
    normal = quick.map([(marker, i) for i in range(500)])
    killer = env.task("suicide").delay(marker, "killer")
    exiter = env.task("hard_exit").delay(marker, "exiter")  # os._exit(7) every time
    normal += quick.map([(marker, i) for i in range(500, 1000)])
    server = servers(env.path, "--workers", "2", "--until-empty")
    assert server.wait(75) == 1  # a job ended dead

    rec = env.record(killer)
    assert rec.state.value == "dead" and rec.attempts == 3  # retries=2
    assert [e.kind for e in rec.errors] == ["crash"] * 3
    assert all("signal 9" in e.message for e in rec.errors)
    dead_reason = env.queue.store.env.read(  # the dead-letter entry keeps the reason
        lambda tx: tx.get(keys.DB_DEAD, keys.dead_key(killer.id))
    )
    assert dead_reason is not None and b"signal 9" in dead_reason

    rec = env.record(exiter)
    assert rec.state.value == "dead" and rec.attempts == 3
    assert [e.message for e in rec.errors] == ["worker exited with code 7"] * 3
    assert all(e.kind == "crash" for e in rec.errors)

    jobs = {j.id: j for j in env.queue.list()}
    assert all(jobs[j.id].state == "done" and jobs[j.id].attempts == 1 for j in normal)
    runs = env.runs()
    assert len(runs["killer"]) == len(runs["exiter"]) == 3
    assert all(len(runs[str(i)]) == 1 for i in range(1000))  # none restarted
    stats = env.stats()
    assert (stats["done"], stats["dead"], stats["processing"]) == (1000, 2, 0)


@pytest.mark.timeout(90)
def test_sigkill_of_the_coordinator_kills_its_children_and_a_new_server_recovers(env, servers):
    """The coordinator dies holding 50 claimed jobs; its children must die with it,
    and a new server runs every job to done without running one twice at once."""
    count = 50
    marker = str(env.marker)
    # A burst of instant jobs first: it drives the adaptive prefetch up, so the server
    # then claims the sleeping jobs in bulk (2 workers alone would hold only a few).
    env.task("quick").map([(marker, f"warm{i}") for i in range(400)])
    jobs = env.task("sleepy").map([(marker, i, 0.4) for i in range(count)])
    first = servers(env.path, "--workers", "2")
    wait_until(
        lambda: (s := env.stats())["done"] == 400 and s["processing"] == count,
        30,
        f"warm-up done and {count} sleeping jobs claimed",
    )
    children = first.children(env.queue)
    assert len(children) == 2
    first.send(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait(5)

    wait_until(lambda: all(gone(pid) for pid in children), 5, "orphans gone")
    orphans_gone_s = time.monotonic() - killed_at
    assert orphans_gone_s < 1.0, orphans_gone_s
    assert env.stats()["processing"] == count  # nobody has taken them back yet

    second = servers(env.path, "--workers", "2", "--until-empty")
    assert second.wait(60) == 0
    recovered_s = time.monotonic() - killed_at
    assert f"put back {count} job(s), killed 0 orphan(s)" in second.log()
    stats = env.stats()
    assert (stats["done"], stats["processing"]) == (400 + count, 0), stats
    assert all(env.record(j).state.value == "done" for j in jobs)
    runs = env.runs()
    assert_no_overlap(runs)
    assert all(any(r.ended for r in runs[str(i)]) for i in range(count))
    interrupted = [r for tag_runs in runs.values() for r in tag_runs if not r.ended]
    assert all(r.pid in children for r in interrupted)
    late = [r for r in interrupted if r.last > killed_at + 0.1]
    assert not late, late  # no orphan kept ticking after its coordinator died
    print(
        f"coordinator SIGKILLed holding {count} claimed jobs: orphans gone after "
        f"{orphans_gone_s * 1000:.0f} ms; all done {recovered_s:.1f} s after the kill"
    )


@pytest.mark.timeout(150)
def test_two_coordinators_one_killed_repeatedly(env, servers):
    """10,000 short jobs, two servers on one store; one is SIGKILLed and restarted
    again and again. Every job ends done and no job ever ran twice at once."""
    count = 10_000
    marker = str(env.marker)
    env.task("sleepy").map([(marker, i, 0.002) for i in range(count)])
    steady = servers(env.path, "--workers", "2")
    victims = []
    kills = 0
    while kills < 10 and env.stats()["done"] < count - 1000:
        victim = servers(env.path, "--workers", "2")
        victims.append(victim)
        if kills % 3 == 2:  # now and then, kill it while it is still starting
            wait_until(lambda: victim.registration(env.queue), 20, "victim registered")
        else:
            victim.wait_ready(env.queue, 2)
            start_done = env.stats()["done"]
            wait_until(lambda: env.stats()["done"] > start_done + 300, 20, "progress")
        victim.send(signal.SIGKILL)
        victim.wait(5)
        kills += 1
    wait_until(lambda: env.stats()["done"] >= count, 90, "all done")
    steady.send(signal.SIGTERM)
    assert steady.wait(30) == 0
    stats = env.stats()
    assert (stats["done"], stats["processing"], stats["dead"]) == (count, 0, 0), stats
    runs = env.runs()
    assert len(runs) == count and all(any(r.ended for r in rs) for rs in runs.values())
    assert_no_overlap(runs)
    assert kills >= 3, kills
    victim_children = set().union(*(v.seen_children for v in victims))
    assert victim_children & pids_of(runs)  # the killed servers did run jobs
    print(
        f"{count} jobs, {kills} coordinator kills, "
        f"{sum(len(rs) > 1 for rs in runs.values())} jobs ran more than once"
    )


@pytest.mark.timeout(30)
def test_reclaim_with_a_reused_pid_requeues_and_kills_nothing(env):
    """A processing entry names a live process (this test) with another start time:
    that coordinator is dead, its job goes back, and this process is not killed."""
    job = env.task("quick").delay(str(env.marker), "x")
    me = current()
    impostor = Identity(me.host, me.boot, me.pidns, os.getpid(), me.started_ms - 60_000)
    store = env.queue.store
    (claimed,) = store.claim(impostor.server_id, 1, now_ms())
    assert claimed.id == job.id and claimed.attempts == 1
    # It also registered this process as one of its children, with the wrong start time.
    store.register_server(
        impostor.server_id,
        {
            "pid": os.getpid(),
            "heartbeat_ms": now_ms(),
            "children": [(os.getpid(), psutil.Process().create_time() - 60.0)],
        },
    )

    assert reclaim_dead(store, "someone-else") == [job.id]
    rec = env.record(job)
    assert rec.state.value == "ready" and rec.attempts == 0
    assert store.claims() == [] and impostor.server_id not in store.servers()
    assert psutil.Process().is_running()  # still here: nothing killed us


@pytest.mark.timeout(30)
def test_reclaim_leaves_a_live_coordinator_alone(env):
    job = env.task("quick").delay(str(env.marker), "x")
    me = current()
    store = env.queue.store
    store.claim(me.server_id, 1, now_ms())
    assert reclaim_dead(store, "someone-else") == []
    assert env.record(job).state.value == "processing"
