"""Opening a store in the other mode migrates its layout: nothing lost or stranded."""

from __future__ import annotations

import signal

import pytest

from mpqueue import Queue
from mpqueue.errors import ConfigError
from mpqueue.records import now_ms
from mpqueue.store.lmdb import keys

from ..support.helpers import claim_all, done, failed
from ..support.serve_helpers import servers  # noqa: F401

HOUR_MS = 3_600_000


def _fill(path: str, mode: str) -> dict[str, list[str]]:
    with Queue(path, mode=mode) as queue:
        add = queue.task_by_name("tests.support.tasks.add")
        noop = queue.task_by_name("tests.support.tasks.noop")
        store = queue.store
        to_finish = add.map([(i, i) for i in range(3)])
        to_kill = noop.map([(i,) for i in range(2)])
        running = add.delay(9, 9)
        claim_all(store, worker="old")
        for job in to_finish:
            done(store, job.id, 1, worker="old")
        for job in to_kill:
            failed(store, job.id, worker="old", retryable=False)
        ready = add.map([(i, -i) for i in range(5)]) + [add.schedule((7, 7), priority=3)]
        due_soon = add.schedule((1, 2), delay=0.001)
        later = [add.schedule((i, 0), delay=3600 + i) for i in range(4)]
        return {
            "done": [j.id for j in to_finish],
            "dead": [j.id for j in to_kill],
            "processing": [running.id],
            "ready": [j.id for j in ready],
            "due_soon": [due_soon.id],
            "later": [j.id for j in later],
            "priority": [ready[-1].id],
        }


@pytest.mark.parametrize("first,then", [("legacy", "optimized"), ("optimized", "legacy")])
def test_migration_keeps_every_job(tmp_path, first, then):
    path = str(tmp_path / "store")
    ids = _fill(path, first)
    all_ids = {j for group in ids.values() for j in group if group is not ids["priority"]}
    with Queue(path, mode=then) as queue:
        store = queue.store
        listed = queue.list()
        assert {j.id for j in listed} == all_ids
        created = [j.record.created_at_ms for j in listed]
        assert created == sorted(created)  # oldest first
        assert len(queue.list(name="tests.support.tasks.add")) == 3 + 1 + 6 + 1 + 4
        assert {j.id for j in queue.list(state="done")} == set(ids["done"])
        assert {j.id for j in queue.list(state="dead")} == set(ids["dead"])
        stats = queue.stats()
        assert stats["total"] == len(all_ids)
        assert stats["done"] == 3 and stats["dead"] == 2 and stats["processing"] == 1
        # every ready job is claimable now, the priority one first
        now = now_ms()
        claimed = claim_all(store, worker="new", now=now)
        assert claimed[0].id == ids["priority"][0]
        assert {r.id for r in claimed} == set(ids["ready"] + ids["due_soon"])
        assert store.next_run_at_ms() is not None
        # the rest when due, and nothing is stranded
        claimed = claim_all(store, worker="new", now=now + 2 * HOUR_MS)
        assert {r.id for r in claimed} == set(ids["later"])
        assert store.next_run_at_ms() is None
        # the job held before the migration can still be acked by its worker
        assert done(store, ids["processing"][0], 18, worker="old") is True
        assert queue.get(ids["processing"][0]).result(timeout=1) == 18
        # and a dead job can be requeued and claimed
        queue.requeue(ids["dead"][0])
        assert [r.id for r in claim_all(store, worker="new")] == [ids["dead"][0]]
        assert queue.stats()["ready"] == queue.stats()["scheduled"] == 0

        def layout(tx):
            return (
                tx.get(keys.DB_META, keys.META_LAYOUT),
                tx.entries(keys.DB_PENDING),
                tx.entries(keys.DB_READY) + tx.entries(keys.DB_SCHEDULED),
            )

        assert store.env.read(layout) == (then.encode(), 0, 0)


@pytest.mark.parametrize("first", ["legacy", "optimized"])
def test_round_trip_migration(tmp_path, first):
    path = str(tmp_path / "store")
    other = "optimized" if first == "legacy" else "legacy"
    ids = _fill(path, first)
    for mode in (other, first, other):
        with Queue(path, mode=mode) as queue:
            assert queue.stats()["total"] == 17
            assert {j.id for j in queue.list(state="done")} == set(ids["done"])
    with Queue(path, mode=other) as queue:
        claimed = claim_all(queue.store, now=now_ms() + 2 * HOUR_MS)
        assert len(claimed) == 6 + 1 + 4


def test_optimized_listing_after_migration_needs_no_gets(tmp_path):
    path = str(tmp_path / "store")
    _fill(path, "legacy")
    with Queue(path, mode="optimized") as queue:
        store = queue.store
        before = store.counter.snapshot()
        assert len(queue.list()) == 17
        assert (store.counter - before).gets == 0  # the name index holds records again


@pytest.mark.timeout(60)
@pytest.mark.parametrize("served, other", [("optimized", "legacy"), ("legacy", "optimized")])
def test_other_mode_is_refused_while_a_server_of_this_mode_runs(tmp_path, servers, served, other):
    """Issue 10, item 6: migrating under a live server would leave it idle with jobs
    ready; the open in the other mode fails with one line and changes nothing."""
    path = str(tmp_path / "store")
    with Queue(path, mode=served) as queue:
        server = servers(path, "--mode", served, "--workers", "1")
        server.wait_ready(queue, 1)
        with pytest.raises(ConfigError, match=f"served in {served} mode by a running server"):
            Queue(path, mode=other).stats()
        job = queue.task_by_name("tests.support.tasks.add").delay(2, 3)
        assert job.result(timeout=20) == 5  # still served: nothing was migrated
        server.send(signal.SIGTERM)
        assert server.wait(20) == 0
    with Queue(path, mode=other) as queue:  # no server left: the migration goes ahead
        assert queue.stats()["done"] == 1
