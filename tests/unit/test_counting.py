"""No N+1: store operations per call, counted on the real store (CountingStore)."""

from __future__ import annotations

import pytest

from mpqueue import Queue
from mpqueue.records import JobState, now_ms
from mpqueue.store.counting import CountingStore

N = 1000


def _fill(queue: Queue) -> None:
    noop = queue.task_by_name("tests.support.tasks.noop")
    for start in range(0, N, 250):
        noop.map([(i,) for i in range(start, start + 250)])


def test_listing_is_one_read_without_per_job_gets_in_optimized(store_path):
    with Queue(store_path, mode="optimized") as queue:
        _fill(queue)
        store = CountingStore(queue.store)
        jobs = store.list()
        ops = store.last("list")
        assert len(jobs) == N
        assert ops.txns == 1 and ops.gets == 0 and ops.puts == 0
        assert N <= ops.cursor_steps <= N + 2 + 2  # + the seeks that find the task names
        store.list(name="tests.support.tasks.noop", state=JobState.READY)
        ops = store.last("list")
        assert ops.txns == 1 and ops.gets == 0 and ops.cursor_steps <= N + 2


def test_listing_is_one_plus_n_in_legacy(store_path):
    with Queue(store_path, mode="legacy") as queue:
        _fill(queue)
        store = CountingStore(queue.store)
        assert len(store.list()) == N
        ops = store.last("list")
        assert ops.txns == 1 and ops.gets >= N and ops.cursor_steps >= N


def _poll(store: CountingStore, now: int) -> tuple[int, int]:
    _, ops = store.measure(lambda: (store.promote_due(now), store.claim("w1", 32, now)))
    return ops.reads, ops.txns


def _ready_and_far(queue: Queue) -> None:
    noop = queue.task_by_name("tests.support.tasks.noop")
    noop.map([(i,) for i in range(10)])
    for i in range(990):
        noop.schedule((i,), delay=3600)


def test_poll_reads_only_what_it_hands_out_in_optimized(store_path):
    with Queue(store_path, mode="optimized") as queue:
        _ready_and_far(queue)
        store = CountingStore(queue.store)
        now = now_ms()
        reads, txns = _poll(store, now)
        assert queue.stats()["processing"] == 10
        assert 10 <= reads <= 25 and txns == 2
        reads, _ = _poll(store, now)  # nothing ready, nothing due: near zero
        assert reads <= 4
        assert store.inner.next_run_at_ms() is not None
        _, ops = store.measure(store.stats)
        assert ops.reads == 0 and ops.txns == 1


def test_poll_reads_everything_in_legacy(store_path):
    with Queue(store_path, mode="legacy") as queue:
        _ready_and_far(queue)
        store = CountingStore(queue.store)
        reads, _ = _poll(store, now_ms())
        assert queue.stats()["processing"] == 1  # one job per poll
        assert 1900 <= reads <= 2100


@pytest.mark.parametrize("mode", ["optimized", "legacy"])
def test_counting_store_attributes_calls(store_path, mode):
    with Queue(store_path, mode=mode) as queue:
        store = CountingStore(queue.store)
        queue.task_by_name("tests.support.tasks.noop").delay()
        store.get(queue.list()[0].id)
        assert store.last("get").gets == 1 and store.last().txns == 1
        store.stats()
        assert [c.method for c in store.calls] == ["get", "stats"]
        assert store.total().txns == 2
        store.reset()
        with pytest.raises(LookupError):
            store.last()
