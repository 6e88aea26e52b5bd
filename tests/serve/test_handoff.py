"""Hand-off: an idle server offers its free children, and a producer's enqueue claims a
new ready job for one of them directly and wakes that child (no claim commit of the
server's, and no hop through the server, between the enqueue and the start). Whatever
happens to that child or its server, a handed job is never lost."""

from __future__ import annotations

import signal

import psutil
import pytest

from mpqueue import Queue
from mpqueue.store.lmdb import keys

from ..support.helpers import wait_until
from ..support.serve_helpers import Env, Run, assert_no_overlap, env, gone, servers  # noqa: F401


def offers(queue: Queue) -> dict[str, list[int]]:
    """The offers index as stored: server id -> pids of the idle children offered."""

    def read(tx):  # type: ignore[no-untyped-def]
        return {
            keys.decode_worker_key(k): keys.decode_offer(v)[2] for k, v in tx.scan(keys.DB_OFFERS)
        }

    return queue.store.env.read(read)  # type: ignore[attr-defined, no-any-return]


def wait_offering(queue: Queue, children: int) -> str:
    """Wait until one server offers ``children`` idle children; its server id."""

    def offered() -> str | None:
        found = [w for w, pids in offers(queue).items() if len(pids) == children]
        return found[0] if found else None

    return wait_until(offered, 20, f"a server offering {children} child(ren)")  # type: ignore


@pytest.mark.timeout(60)
def test_idle_server_gets_jobs_handed_and_runs_them(env: Env, servers) -> None:
    server = servers(env.path, "--workers", "2", "--import", "tests.support.serve_tasks")
    children = server.wait_ready(env.queue, 2)
    server_id = wait_offering(env.queue, 2)
    offered = offers(env.queue)[server_id]
    assert sorted(offered) == sorted(children)
    echo = env.task("echo")
    first = echo.delay(str(env.marker), "a", 1)
    # claimed for that server's first offered child by the enqueue itself
    assert first.state == "processing" and first.attempts == 1
    assert [(c.server_id, c.child_pid) for c in env.queue.store.claims()] in (
        [(server_id, offered[0])],
        [],
    )
    assert first.result(timeout=20) == 1
    assert [r.pid for r in env.runs()["a"]] == [offered[0]]  # run by that very child
    # once idle again it offers both slots; two jobs take both, a third goes to ready
    # (the first two hold their children for 2 s, so no slot frees up in between)
    wait_offering(env.queue, 2)
    sleepy = env.task("sleepy")
    jobs = [sleepy.delay(str(env.marker), f"b{i}", 2.0) for i in range(2)]
    jobs.append(echo.delay(str(env.marker), "b2", 2))
    assert [j.state for j in jobs[:2]] == ["processing", "processing"]
    assert jobs[2].state == "ready"
    assert [j.result(timeout=20) for j in jobs] == ["b0", "b1", 2]
    assert all(len(runs) == 1 for runs in env.runs().values())
    assert env.record(jobs[0]).attempts == 1


@pytest.mark.timeout(60)
def test_handed_job_runs_when_the_wake_up_is_lost(env: Env, servers) -> None:
    server = servers(
        env.path,
        "--workers",
        "1",
        "--import",
        "tests.support.serve_tasks",
        "--poll-interval",
        "0.3",
    )
    server.wait_ready(env.queue, 1)
    wait_offering(env.queue, 1)
    env.queue.store.waker.hint = lambda child_pid, job_id: None  # the datagram is lost
    job = env.task("echo").delay(str(env.marker), "lost", 7)
    assert job.state == "processing"
    assert job.result(timeout=20) == 7  # re-sent to the child by the server's safety poll
    assert len(env.runs()["lost"]) == 1


@pytest.mark.timeout(90)
def test_job_handed_to_a_child_that_dies_first_is_put_back_and_run(env: Env, servers) -> None:
    server = servers(env.path, "--workers", "1", "--import", "tests.support.serve_tasks")
    (child,) = server.wait_ready(env.queue, 1)
    server_id = wait_offering(env.queue, 1)
    # Freeze the server so it cannot see its child die and withdraw the offer, and the
    # child so it cannot take the job; the enqueue hands the job to it, then it dies.
    server.send(signal.SIGSTOP)
    try:
        psutil.Process(child).suspend()
        job = env.task("echo").delay(str(env.marker), "recalled", 9)
        assert job.state == "processing"
        assert [(c.server_id, c.child_pid) for c in env.queue.store.claims()] == [
            (server_id, child)
        ]
        psutil.Process(child).kill()
        wait_until(lambda: gone(child), 10, "the child to exit")
    finally:
        server.send(signal.SIGCONT)
    # the server sees the exit, recalls the job and runs it in the new child, uncharged
    assert job.result(timeout=30) == 9
    assert env.record(job).attempts == 1
    (run,) = env.runs()["recalled"]
    assert run.pid != child
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0


@pytest.mark.timeout(90)
def test_child_runs_a_handed_job_ahead_of_its_queue_and_the_server_keeps_count(
    env: Env, servers
) -> None:
    """The server queues jobs on a child that it still thinks idle while that child
    has a hand-off waiting: the child runs the hand-off first, and the server's list of
    what the child holds follows (it would fail the server's order check otherwise)."""
    server = servers(
        env.path, "--workers", "1", "--import", "tests.support.serve_tasks", "--prefetch", "4"
    )
    (child,) = server.wait_ready(env.queue, 1)
    server_id = wait_offering(env.queue, 1)
    sleepy = env.task("sleepy")
    psutil.Process(child).suspend()  # it cannot take the hand-off or say "took" yet
    try:
        first = sleepy.delay(str(env.marker), "h1", 0.2)
        assert first.state == "processing"
        queued = sleepy.map([(str(env.marker), f"q{i}", 0.05) for i in range(3)])
        # the server claims those for the same (only) child and sends them down its pipe
        wait_until(
            lambda: len(env.queue.store.claims(server_id)) == 4,
            20,
            "the server to claim the mapped jobs",
        )
    finally:
        psutil.Process(child).resume()
    late = env.task("echo").delay(str(env.marker), "late", 4)
    assert [j.result(timeout=30) for j in [first, *queued, late]] == ["h1", "q0", "q1", "q2", 4]
    runs = env.runs()
    assert all(len(runs[t]) == 1 for t in ("h1", "q0", "q1", "q2", "late"))
    assert runs["h1"][0].start < min(runs[f"q{i}"][0].start for i in range(3))
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0  # a server that lost count would have crashed
    assert env.stats()["processing"] == 0


@pytest.mark.timeout(90)
def test_no_hand_off_ahead_of_ready_jobs(env: Env, servers) -> None:
    """Jobs that reach ready while a server still offers a child (it has not claimed
    them yet) keep their place: the next one-job enqueue queues behind them instead of
    being handed to that child."""
    server = servers(env.path, "--workers", "1", "--import", "tests.support.serve_tasks")
    server.wait_ready(env.queue, 1)
    wait_offering(env.queue, 1)
    server.send(signal.SIGSTOP)  # it cannot claim the map below before the enqueue
    try:
        sleepy = env.task("sleepy")
        older = sleepy.map([(str(env.marker), f"old{i}", 0.02) for i in range(2)])
        newer = sleepy.delay(str(env.marker), "new", 0.02)
        assert newer.state == "ready"  # not handed off, though a child is offered
    finally:
        server.send(signal.SIGCONT)
    assert [j.result(timeout=30) for j in [*older, newer]] == ["old0", "old1", "new"]
    runs = env.runs()
    assert runs["old0"][0].start < runs["old1"][0].start < runs["new"][0].start
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0


@pytest.mark.timeout(90)
def test_no_hand_off_to_a_killed_server(env: Env, servers) -> None:
    """Issue 10, item 6: its offer outlives a SIGKILLed server, but the enqueue sees
    its child is gone: the job is queued ready, for the next server to claim."""
    doomed = servers(
        env.path, "--workers", "1", "--lease", "1", "--import", "tests.support.serve_tasks"
    )
    children = doomed.wait_ready(env.queue, 1)
    server_id = wait_offering(env.queue, 1)
    doomed.send(signal.SIGKILL)
    doomed.wait(10)

    def child_gone_or_beat_stale() -> bool:
        # A zombie child passes the enqueue's one-syscall liveness check; where nobody
        # reaps it (a container without an init), the stale heartbeat still tells.
        reaped = not any(psutil.pid_exists(pid) for pid in children)
        return reaped or env.queue.store.servers()[server_id]["heartbeat_age_ms"] > 1000

    wait_until(child_gone_or_beat_stale, 10, "its child reaped or its heartbeat stale")
    assert server_id in offers(env.queue)
    job = env.task("echo").delay(str(env.marker), "orphan", 5)
    assert job.state == "ready"
    assert env.queue.store.claims() == [] and server_id not in offers(env.queue)
    rescuer = servers(env.path, "--workers", "1", "--import", "tests.support.serve_tasks")
    assert job.result(timeout=30) == 5
    assert env.record(job).attempts == 1
    assert [r.pid for r in env.runs()["orphan"]] == rescuer.children(env.queue)
    rescuer.send(signal.SIGTERM)
    assert rescuer.wait(30) == 0


@pytest.mark.timeout(90)
def test_no_hand_off_to_a_frozen_server(env: Env, servers) -> None:
    """A SIGSTOPped server's children live on, but its heartbeat goes stale: once it is
    older than the server's lease, the enqueue queues the job ready instead."""
    frozen = servers(
        env.path, "--workers", "1", "--lease", "1", "--import", "tests.support.serve_tasks"
    )
    frozen_children = frozen.wait_ready(env.queue, 1)
    server_id = wait_offering(env.queue, 1)
    frozen.send(signal.SIGSTOP)
    try:
        wait_until(
            lambda: env.queue.store.servers()[server_id]["heartbeat_age_ms"] > 1000,
            10,
            "its heartbeat older than its lease",
        )
        assert server_id in offers(env.queue)
        job = env.task("echo").delay(str(env.marker), "frozen", 6)
        assert job.state == "ready"
        assert env.queue.store.claims() == []
        rescuer = servers(env.path, "--workers", "1", "--import", "tests.support.serve_tasks")
        assert job.result(timeout=30) == 6
        (run,) = env.runs()["frozen"]
        assert run.pid not in frozen_children
    finally:
        frozen.send(signal.SIGCONT)
    for server in (rescuer, frozen):
        server.send(signal.SIGTERM)
        assert server.wait(30) == 0


@pytest.mark.timeout(60)
def test_stopping_server_withdraws_its_offer_and_keeps_nothing(env: Env, servers) -> None:
    server = servers(env.path, "--workers", "2", "--import", "tests.support.serve_tasks")
    server.wait_ready(env.queue, 2)
    wait_offering(env.queue, 2)
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0
    assert offers(env.queue) == {}
    job = env.task("echo").delay(str(env.marker), "after", 1)
    assert job.state == "ready"
    assert env.queue.store.claims() == []


@pytest.mark.timeout(60)
def test_poll_only_servers_never_offer(env: Env, servers) -> None:
    server = servers(
        env.path,
        "--workers",
        "1",
        "--poll-only",
        "--poll-interval",
        "0.1",
        "--import",
        "tests.support.serve_tasks",
    )
    server.wait_ready(env.queue, 1)
    job = env.task("echo").delay(str(env.marker), "polled", 3)
    assert job.state == "ready"
    assert job.result(timeout=20) == 3
    assert offers(env.queue) == {}


def produce_one_by_one(path: str, marker: str, prefix: str, count: int) -> None:
    """A producer process: ``count`` one-job enqueues with short idle gaps between them,
    so the servers go idle and offer slots again and again."""
    import random
    import time

    handed = 0
    with Queue(path) as queue:
        task = queue.task_by_name("tests.support.serve_tasks.sleepy")
        for i in range(count):
            job = task.delay(marker, f"{prefix}{i}", 0.002)
            handed += job.state == "processing"
            time.sleep(random.uniform(0.002, 0.015))  # pacing, not waiting for a state
    with open(f"{marker}.{prefix}handed", "w", encoding="ascii") as fh:
        fh.write(str(handed))


def assert_every_job_done_once(env: Env, total: int) -> dict[str, list[Run]]:
    """All ``total`` jobs done and nothing left anywhere; every job ran to its end and no
    two runs of one job overlapped. Returns the runs."""
    stats = env.stats()
    assert (stats["done"], stats["processing"], stats["ready"], stats["dead"]) == (
        total,
        0,
        0,
        0,
    ), stats
    runs = env.runs()
    assert len(runs) == total and all(any(r.ended for r in rs) for rs in runs.values())
    assert_no_overlap(runs)
    return runs


def handed_off(env: Env, prefixes: list[str]) -> int:
    """How many enqueues of the producers with these tag prefixes were handed off."""
    return sum(int(open(f"{env.marker}.{prefix}handed").read()) for prefix in prefixes)


@pytest.mark.timeout(180)
def test_one_by_one_producers_and_a_server_killed_repeatedly(env: Env, servers) -> None:
    """Three producers enqueue one job per call while two servers run and one of them is
    SIGKILLed and restarted: jobs handed to a server that dies are put back, every job
    ends done, and no job ever runs twice at once."""
    import multiprocessing as mp

    from ..support.helpers import join_cleanly, started

    per_producer = 300
    steady = servers(env.path, "--workers", "1", "--import", "tests.support.serve_tasks")
    steady.wait_ready(env.queue, 1)
    ctx = mp.get_context("spawn")
    producers = [
        ctx.Process(
            target=produce_one_by_one, args=(env.path, str(env.marker), f"p{n}-", per_producer)
        )
        for n in range(3)
    ]
    total = 3 * per_producer
    kills = 0

    def producing() -> bool:
        return any(p.is_alive() for p in producers)

    with started(producers):
        while kills < 8 and (producing() or kills < 2):
            victim = servers(env.path, "--workers", "1", "--import", "tests.support.serve_tasks")
            victim.wait_ready(env.queue, 1)
            # kill it while it holds a job, if jobs are still coming
            wait_until(
                lambda: (
                    any(
                        c.server_id.split(":")[3] == str(victim.pid)
                        for c in env.queue.store.claims()
                    )
                    or not producing()
                    or kills >= 4
                ),
                30,
                "the victim to hold a job",
            )
            victim.send(signal.SIGKILL)
            victim.wait(10)
            kills += 1
        join_cleanly(producers, 120, "producer")
    wait_until(lambda: env.stats()["done"] >= total, 90, "every job done")
    steady.send(signal.SIGTERM)
    assert steady.wait(30) == 0
    runs = assert_every_job_done_once(env, total)
    assert kills >= 2
    handed = handed_off(env, [f"p{n}-" for n in range(3)])
    assert handed > 0, "no enqueue was handed to an idle server: the test missed its path"
    print(
        f"{total} jobs, {kills} kills, {handed} handed off, "
        f"{sum(len(rs) > 1 for rs in runs.values())} ran more than once"
    )


@pytest.mark.timeout(180)
def test_one_by_one_producers_while_children_are_killed(env: Env, servers) -> None:
    """Children SIGKILLed at random while producers hand them jobs one by one: a job
    whose child died before it took it is put back uncharged, one that was running is
    charged with the crash and run again; every job ends done, none runs twice at once,
    and the server keeps count throughout (it would crash on a mismatch)."""
    import multiprocessing as mp
    import random

    from ..support.helpers import join_cleanly, started

    per_producer = 200
    server = servers(env.path, "--workers", "2", "--import", "tests.support.serve_tasks")
    server.wait_ready(env.queue, 2)
    ctx = mp.get_context("spawn")
    producers = [
        ctx.Process(
            target=produce_one_by_one, args=(env.path, str(env.marker), f"c{n}-", per_producer)
        )
        for n in range(2)
    ]
    total = 2 * per_producer
    kills = 0
    with started(producers):
        while kills < 12 and any(p.is_alive() for p in producers):
            children = server.children(env.queue)
            if children:
                try:
                    psutil.Process(random.choice(children)).kill()
                    kills += 1
                except psutil.NoSuchProcess:
                    pass  # replaced already: the registry lags behind
            # let the server replace it and get offered again before the next kill
            wait_until(lambda: len(server.children(env.queue)) == 2, 20, "a replacement")
            wait_until(
                lambda: (
                    env.stats()["done"] >= kills * 10 or not any(p.is_alive() for p in producers)
                ),
                60,
                "progress",
            )
        join_cleanly(producers, 120, "producer")
    wait_until(lambda: env.stats()["done"] >= total, 90, "every job done")
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0
    runs = assert_every_job_done_once(env, total)
    assert kills >= 3
    handed = handed_off(env, [f"c{n}-" for n in range(2)])
    assert handed > 0, "no enqueue was handed to an idle child: the test missed its path"
    recalled = server.log().count("before it could take them")
    print(
        f"{total} jobs, {kills} child kills, {handed} handed off, {recalled} recall(s), "
        f"{sum(len(rs) > 1 for rs in runs.values())} ran more than once"
    )
