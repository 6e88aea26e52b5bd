"""``Queue.batch()``: every enqueue in the block is written in one transaction at its end,
or none is (issue 12), on every store."""

from __future__ import annotations

import threading

import pytest

from mpqueue import Queue

from ..store.test_contract import store_location  # noqa: F401  (a fixture)
from ..support.pg_helpers import pg_url  # noqa: F401  (a fixture)


@pytest.fixture
def queue(store_location) -> Queue:
    location, mode = store_location
    with Queue(location, mode=mode) as q:
        yield q


def add(a: int, b: int) -> int:
    return a + b


def test_a_batch_is_written_at_its_end_in_one_transaction(queue):
    task = queue.task(add)
    before = queue.store.counter.snapshot()
    with queue.batch():
        first = task.delay(1, 2)
        rest = task.map([(i, i) for i in range(50)])
        later = task.schedule((3, 4), delay=3600)
        anon = queue.submit(lambda x: x + 1, 41)  # stored by value
        assert queue.stats()["total"] == 0  # nothing is in the store yet
    written = queue.store.counter.snapshot() - before
    stats = queue.stats()
    assert stats["total"] == 53 and stats["scheduled"] == 1
    listed = {j.id for j in queue.list()}
    assert listed == {first.id, later.id, anon.id, *(j.id for j in rest)}
    assert queue.get(later.id).state == "scheduled"
    # One write transaction for the 53 jobs, plus the reads of stats() above.
    assert written.txns <= 3, written


def test_an_exception_in_the_block_writes_nothing(queue):
    task = queue.task(add)
    with pytest.raises(RuntimeError, match="half-way"):
        with queue.batch():
            task.map([(i, i) for i in range(10)])
            raise RuntimeError("half-way")
    assert queue.stats()["total"] == 0
    task.delay(1, 1)  # the queue goes on as usual after a discarded batch
    assert queue.stats()["total"] == 1


def test_an_inner_batch_joins_the_outer_one(queue):
    task = queue.task(add)
    with queue.batch():
        with queue.batch():
            task.delay(1, 1)
        assert queue.stats()["total"] == 0  # the inner end commits nothing
        task.delay(2, 2)
    assert queue.stats()["total"] == 2
    with pytest.raises(ValueError):
        with queue.batch():
            task.delay(3, 3)
            with queue.batch():
                task.delay(4, 4)
            raise ValueError("outer fails")
    assert queue.stats()["total"] == 2  # the inner block's job went with the outer


def test_a_batch_is_its_threads_own(queue):
    task = queue.task(add)
    other = []
    with queue.batch():
        task.delay(1, 1)
        thread = threading.Thread(target=lambda: other.append(task.delay(2, 2)))
        thread.start()
        thread.join(10)
        assert not thread.is_alive()
        assert queue.stats()["total"] == 1  # the other thread's job went in at once
    assert queue.stats()["total"] == 2


def test_batched_jobs_run_as_any_others(queue):
    task = queue.task(add)
    with queue.batch():
        jobs = [task.delay(i, 1) for i in range(5)]
    assert queue.run_pending() == 5
    assert [job.result(timeout=0) for job in jobs] == [1, 2, 3, 4, 5]
