"""The store contract, continued: rate limits (``set_limit(..., rate=)``, the claim
that respects them, and ``next_run_at_ms(now)``) on every store (the fixtures of
``test_contract.py``). Every claim is given its time, so no test waits for a window."""

from __future__ import annotations

import pytest

from mpqueue.concurrency import QUEUE, TASK, Limit
from mpqueue.errors import ConfigError
from mpqueue.rates import Rate
from mpqueue.records import Outcome
from mpqueue.store.counting import CountingStore

from ..support.helpers import done, ids
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

A = "tests.support.tasks.add"  # rate-limited in most tests
B = "tests.support.tasks.echo"
T0 = 2_000_000_000_000  # ahead of every record here, a whole second: reopenings are exact
PER_S = Rate(3, 1000)  # 3 starts in any second; the log's step is 10 ms


def take(store, limit, at, worker="w1", queues=None):
    """One claim at time ``at`` (legacy, one job a poll, polls up to ``limit`` times)."""
    if store.mode != "legacy":
        return store.claim(worker, limit, at, queues)
    got = []
    while len(got) < limit and (one := store.claim(worker, 1, at, queues)):
        got += one
    return got


def test_a_rate_caps_the_starts_of_every_claimer_in_a_window(store):
    assert store.set_limit(TASK, A, None, PER_S)
    jobs = add(store, *(record(A) for _ in range(10)))
    assert ids(take(store, 10, T0)) == jobs[:3]
    assert take(store, 10, T0 + 500, worker="w2") == []
    assert take(store, 10, T0 + 999, worker="w3") == []
    assert ids(take(store, 10, T0 + 1000, worker="w2")) == jobs[3:6]
    assert store.limits() == [Limit(TASK, A, None, 6, PER_S)]
    assert store.stats()["ready"] == 4


def test_the_window_slides(store):
    store.set_limit(TASK, A, None, PER_S)
    add(store, *(record(A) for _ in range(10)))
    assert len(take(store, 2, T0)) == 2
    assert len(take(store, 5, T0 + 600)) == 1  # 2 + 1 in the last second
    assert len(take(store, 5, T0 + 1000)) == 2  # T0's two left the window; T0+600's not
    assert take(store, 5, T0 + 1500) == []
    assert len(take(store, 5, T0 + 1600)) == 1


def test_a_finished_job_gives_no_start_back(store):
    store.set_limit(TASK, A, None, PER_S)
    add(store, *(record(A) for _ in range(5)))
    for rec in take(store, 5, T0):
        done(store, rec.id, 1, now=T0 + 1)
    store.finish([], T0 + 2)
    assert take(store, 5, T0 + 10) == []
    assert store.limits()[0].running == 0


def test_jobs_over_their_rate_do_not_block_the_others(store):
    store.set_limit(TASK, A, None, Rate(1, 60_000))
    limited = add(store, *(record(A, priority=5) for _ in range(3)))
    other = add(store, *(record(B) for _ in range(3)))
    got = take(store, 10, T0)
    assert sorted(ids(got)) == sorted([limited[0], *other])
    assert [r.id for r in got if r.name == A] == [limited[0]]  # priority first
    assert take(store, 10, T0 + 59_000) == []


def test_a_rate_and_a_concurrency_both_apply(store):
    store.set_limit(TASK, A, 1, PER_S)
    first, second, third, fourth = add(store, *(record(A) for _ in range(4)))
    assert ids(take(store, 5, T0)) == [first]
    assert take(store, 5, T0 + 1) == []  # the slot is taken
    done(store, first, 1, now=T0 + 2)
    assert ids(take(store, 5, T0 + 3)) == [second]
    done(store, second, 1, now=T0 + 4)
    assert ids(take(store, 5, T0 + 5)) == [third]
    done(store, third, 1, now=T0 + 6)
    assert take(store, 5, T0 + 7) == []  # a free slot, but 3 starts this second
    assert ids(take(store, 5, T0 + 1000)) == [fourth]


def test_a_queue_rate_caps_the_whole_queue(store):
    store.set_limit(QUEUE, "q", None, Rate(2, 1000))
    in_q = add(store, record(A, queue="q"), record(B, queue="q"), record(A, queue="q"))
    (elsewhere,) = add(store, record(A))
    got = take(store, 10, T0)
    assert sorted(ids(got)) == sorted([*in_q[:2], elsewhere])
    assert ids(take(store, 10, T0 + 1000)) == in_q[2:]


def test_a_task_rate_inside_a_limited_queue(store):
    store.set_limit(QUEUE, "q", 2, None)
    store.set_limit(TASK, A, None, Rate(1, 1000))
    a_jobs = add(store, *(record(A, queue="q") for _ in range(2)))
    b_jobs = add(store, *(record(B, queue="q") for _ in range(2)))
    got = take(store, 10, T0)
    assert sorted(ids(got)) == sorted([a_jobs[0], b_jobs[0]])
    assert {lim.key: lim.running for lim in store.limits()} == {"queue:q": 2, "task:" + A: 1}


def test_next_run_at_is_when_an_exhausted_rate_reopens(store):
    store.set_limit(TASK, A, None, PER_S)
    assert store.next_run_at_ms(T0) is None
    add(store, *(record(A) for _ in range(5)))
    take(store, 2, T0)
    assert store.next_run_at_ms(T0 + 1) is None  # one start left this second
    take(store, 5, T0 + 400)
    assert store.next_run_at_ms(T0 + 401) == T0 + 1000  # the first two leave the window
    assert store.next_run_at_ms(T0 + 1000) is None
    assert store.next_run_at_ms() is None  # without the time: scheduled jobs only
    (later,) = add(store, record(B, run_at_ms=T0 + 700))
    assert store.next_run_at_ms(T0 + 401) == T0 + 700
    assert store.next_run_at_ms() == T0 + 700
    assert later


def test_a_reopening_waits_for_enough_of_the_log(store):
    store.set_limit(TASK, A, None, PER_S)
    add(store, *(record(A) for _ in range(5)))
    take(store, 1, T0)
    take(store, 2, T0 + 300)
    # three starts in the window: the first leaves it at T0 + 1000
    assert store.next_run_at_ms(T0 + 500) == T0 + 1000
    take(store, 1, T0 + 1000)
    # again three: T0 + 300's two leave at T0 + 1300
    assert store.next_run_at_ms(T0 + 1001) == T0 + 1300


def test_rate_changes(store):
    store.set_limit(TASK, A, None, PER_S)
    jobs = add(store, *(record(A) for _ in range(8)))
    take(store, 5, T0)
    assert not store.set_limit(TASK, A, None, PER_S)  # the same: no change
    assert store.set_limit(TASK, A, None, Rate(5, 1000))  # the log stays: 2 more
    assert len(take(store, 5, T0 + 1)) == 2
    assert store.set_limit(TASK, A, 1, Rate(5, 1000))  # a concurrency too
    assert store.limits() == [Limit(TASK, A, 1, 5, Rate(5, 1000))]
    assert store.set_limit(TASK, A, None, None)  # removed: its jobs are plain ones
    assert store.limits() == []
    assert ids(take(store, 5, T0 + 2)) == jobs[5:]


def test_a_concurrency_limit_given_a_rate_keeps_its_running_count(store):
    store.set_limit(TASK, A, 2, None)
    add(store, *(record(A) for _ in range(4)))
    take(store, 5, T0)
    assert store.set_limit(TASK, A, 2, Rate(3, 1000))
    assert store.limits() == [Limit(TASK, A, 2, 2, Rate(3, 1000))]
    assert take(store, 5, T0 + 1) == []


def test_bad_rates_are_refused(store):
    for bad in ((0, 1000), (3, 999), (3, 24 * 3_600_000 + 1), (1_000_001, 1000)):
        with pytest.raises(ConfigError):
            store.set_limit(TASK, A, None, Rate(*bad))
    assert store.limits() == []


def test_check_passes_with_rate_limits_in_use(store):
    store.set_limit(TASK, A, None, PER_S)
    store.set_limit(QUEUE, "q", 1, Rate(2, 1000))
    add(store, record(A), record(A, queue="q"), record(B, queue="q"))
    take(store, 5, T0)
    assert store.check(holder_gone=lambda server_id: True).code == 0


@pytest.mark.timeout(300)
def test_a_claim_does_not_read_jobs_over_their_rate(store):
    if store.mode == "legacy":
        pytest.skip("the legacy layout reads every pending job at every poll, by design")
    n = 20_000
    store.set_limit(TASK, A, None, Rate(1, 3_600_000))
    for _ in range(n // 10_000):
        add(store, *(record(A, priority=9) for _ in range(10_000)))
    (first,) = take(store, 1, T0)  # takes the hour's one start
    plain = add(store, *(record(B) for _ in range(5)))
    counting = CountingStore(store)
    got = counting.claim("w1", 5, T0 + 1)
    assert ids(got) == plain
    # an index entry and a record per job claimed, and a few seeks, counts and limits
    assert counting.last("claim").reads <= 5 * 3 + 12, counting.last("claim")
    counting.finish([Outcome.done(first.id, "w1", b"")], T0 + 2)
    assert counting.claim("w1", 5, T0 + 3) == []
    assert counting.last("claim").reads <= 12, counting.last("claim")
