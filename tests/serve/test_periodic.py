"""Periodic jobs with real servers: an every-second schedule, three ``mpqueue serve``
processes on one LMDB store, SIGKILLed and restarted at random (issue 15). Every slot
is enqueued exactly once; with ``catch_up="all"`` none is missing, and with "latest"
none is enqueued twice."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter

import pytest

from mpqueue import Queue
from mpqueue.records import now_ms

from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import Server, env, servers, wait_until  # noqa: F401

MODULE = "tests.support.periodic_tasks"
ALL = f"{MODULE}.every_second_all"
LATEST = f"{MODULE}.every_second_latest"
SERVE_ARGS = ("--workers", "1", "--import", MODULE, "--log-level", "warning")


def slot_counts(queue: Queue, name: str) -> Counter[int]:
    return Counter(rec.run_at_ms for rec in queue.store.list(name=name))


@pytest.mark.timeout(60)
def test_an_every_second_schedule_fires_on_time(env, servers):
    server = servers(env.path, *SERVE_ARGS)
    server.wait_ready(env.queue, 1)
    wait_until(lambda: len(slot_counts(env.queue, ALL)) >= 4, 15, "four slots fired")
    jobs = [r for r in env.queue.store.list(name=ALL)]
    late_ms = sorted(r.created_at_ms - r.run_at_ms for r in jobs)
    assert late_ms[len(late_ms) // 2] < 300, f"enqueued late after its slot: {late_ms}"
    wait_until(lambda: env.stats()["done"] >= 4, 15, "the jobs ran")
    (row,) = [r for r in env.queue.schedules() if r.name == ALL]
    assert row.declarers and not row.retired


@pytest.mark.timeout(60)
def test_a_server_with_no_periodic_declares_and_fires_nothing(env, servers):
    server = servers(env.path, *SERVE_ARGS, "--no-periodic")
    server.wait_ready(env.queue, 1)
    # A job of ours done means the server's loop went round several times (a periodic
    # server declares in the round that registers its ready children).
    job = env.task("quick").delay(str(env.marker), "x")
    wait_until(lambda: env.stats()["done"] == 1, 20, "the job ran")
    assert env.queue.store.get(job.id).state.value == "done"
    assert env.queue.schedules() == []
    assert slot_counts(env.queue, ALL) == Counter()


@pytest.mark.timeout(120)
def test_three_servers_killed_at_random_enqueue_every_slot_exactly_once(env, servers):
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    running: list[Server | None] = [servers(env.path, *SERVE_ARGS) for _ in range(3)]
    started = time.monotonic()
    blackout_done = False
    while time.monotonic() - started < 24:
        time.sleep(rng.uniform(0.3, 1.5))
        i = rng.randrange(3)
        if not blackout_done and time.monotonic() - started > 10:
            # Every server down at once for a few seconds: the slots of the gap are
            # caught up as each schedule's catch_up says.
            for j, server in enumerate(running):
                if server is not None:
                    server.proc.send_signal(signal.SIGKILL)
                    server.proc.wait(10)
                    running[j] = None
            time.sleep(3)
            blackout_done = True
        server = running[i]
        if server is not None:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(10)
            running[i] = None
        else:
            running[i] = servers(env.path, *SERVE_ARGS)
    for i, server in enumerate(running):
        if server is None:
            running[i] = servers(env.path, *SERVE_ARGS)
    end_ms = now_ms()
    wait_until(
        lambda: max(slot_counts(env.queue, ALL), default=0) >= end_ms + 2000,
        30,
        "the servers fire on after the killing",
    )
    for server in running:
        assert server is not None
        server.send(signal.SIGTERM)
    for server in running:
        assert server is not None
        server.wait(30)

    every = slot_counts(env.queue, ALL)
    twice = {slot: n for slot, n in every.items() if n > 1}
    assert not twice, f"slots enqueued more than once (seed {seed}): {twice}"
    first, last = min(every), max(every)
    missing = sorted(set(range(first, last + 1, 1000)) - set(every))
    assert not missing, f"catch_up='all' missed slots (seed {seed}): {missing}"
    assert last - first >= 20_000  # the whole run, but the first server's start

    latest = slot_counts(env.queue, LATEST)
    twice = {slot: n for slot, n in latest.items() if n > 1}
    assert not twice, f"slots enqueued more than once (seed {seed}): {twice}"
    # "latest" skips a slot only when no server fired while it was the latest one. One
    # fire transaction enqueues both schedules (same spec, same servers): where the
    # "all" schedule's job of a slot was enqueued within that slot's second, a server
    # fired then, and the "latest" one must have that slot too.
    on_time = {
        rec.run_at_ms
        for rec in env.queue.store.list(name=ALL)
        if rec.created_at_ms - rec.run_at_ms < 1000
    }
    skipped = sorted(on_time - set(latest))
    assert not skipped, f"catch_up='latest' skipped slots a server fired (seed {seed}): {skipped}"
    assert len(on_time) >= 10  # the servers were up for much of the run


@pytest.mark.timeout(90)
def test_two_servers_on_postgresql_enqueue_every_slot_exactly_once(pg_url, servers):
    with Queue(pg_url) as queue:
        first, second = servers(pg_url, *SERVE_ARGS), servers(pg_url, *SERVE_ARGS)
        wait_until(lambda: len(slot_counts(queue, ALL)) >= 3, 30, "three slots fired")
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        fired = len(slot_counts(queue, ALL))
        wait_until(lambda: len(slot_counts(queue, ALL)) >= fired + 2, 15, "the survivor fires")
        first = servers(pg_url, *SERVE_ARGS)
        end_ms = now_ms()
        wait_until(lambda: max(slot_counts(queue, ALL), default=0) >= end_ms + 3000, 30, "on after")
        for server in (first, second):
            server.send(signal.SIGTERM)
        for server in (first, second):
            server.wait(30)
        every = slot_counts(queue, ALL)
        assert set(every.values()) == {1}, every
        assert sorted(every) == list(range(min(every), max(every) + 1, 1000))
        assert set(slot_counts(queue, LATEST).values()) == {1}
