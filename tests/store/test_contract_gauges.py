"""The store contract, continued: ``gauges()``, what a metrics scrape reads (counts,
what is paused, the oldest ready job's due time), on every store (the fixtures of
``test_contract.py``)."""

from __future__ import annotations

from mpqueue.records import now_ms
from mpqueue.store.base import HEADS_READ_MAX
from mpqueue.store.counting import CountingStore

from ..support.helpers import claim_all
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

A = "tests.support.tasks.add"
B = "tests.support.tasks.echo"


def test_no_ready_job_has_no_age(store):
    gauges = store.gauges()
    assert gauges.oldest_ready_ms is None and gauges.oldest_ready_age_s(now_ms()) is None
    assert gauges.counts == store.stats() and gauges.paused == store.paused()
    add(store, record(run_at_ms=now_ms() + 3_600_000))  # scheduled: not ready yet
    assert store.gauges().oldest_ready_ms is None


def test_the_oldest_is_the_earliest_due_head_of_any_priority(store):
    now = now_ms()
    add(
        store,
        record(priority=5, run_at_ms=now - 1_000),
        record(priority=0, run_at_ms=now - 5_000),  # the head of priority 0
        record(priority=0, run_at_ms=now - 9_000),  # behind it in FIFO order: not a head
        record(priority=-3, run_at_ms=now - 2_000),
    )
    gauges = store.gauges()
    assert gauges.oldest_ready_ms == now - 5_000
    assert gauges.oldest_ready_age_s(now) == 5.0
    assert gauges.oldest_ready_age_s(now - 60_000) == 0.0  # a clock behind: never negative
    assert gauges.counts == store.stats()


def test_claimed_and_paused_jobs_have_no_age(store):
    now = now_ms()
    add(store, record(A, priority=9, run_at_ms=now - 7_000))
    assert len(claim_all(store)) == 1  # now processing
    add(store, record(A, run_at_ms=now - 4_000), record(B, run_at_ms=now - 3_000))
    assert store.gauges().oldest_ready_ms == now - 4_000
    store.pause(A)  # a paused task's jobs wait outside what a claim could take
    gauges = store.gauges()
    assert gauges.oldest_ready_ms == now - 3_000 and A in gauges.paused.tasks
    store.pause(None)  # the whole queue paused: its ready jobs still wait, and count
    assert store.gauges().oldest_ready_ms == now - 3_000
    store.resume(None)
    store.resume(A)
    assert store.gauges().oldest_ready_ms == now - 4_000


def test_the_read_is_bounded_by_priorities_not_jobs(store):
    now = now_ms()
    add(store, *(record(priority=i % 3, run_at_ms=now - i) for i in range(600)))
    counting = CountingStore(store)
    assert counting.gauges().oldest_ready_ms == now - 2  # the first job of priority 2
    if store.mode == "legacy":
        return  # the legacy layout reads every pending job, as its counts do
    assert counting.last("gauges").reads <= 4 * 3 + 4  # an entry and a record a priority


def test_at_most_heads_read_max_priorities_are_read(store):
    """Past ``HEADS_READ_MAX`` priorities the lowest are left out (and the read stays
    bounded): the oldest job there is not seen."""
    now = now_ms()
    recs = [record(priority=p, run_at_ms=now - 1_000) for p in range(HEADS_READ_MAX)]
    add(store, *recs, record(priority=-1, run_at_ms=now - 50_000))
    assert store.gauges().oldest_ready_ms == now - 1_000
