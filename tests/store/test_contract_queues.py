"""The store contract, continued: named queues (``JobRecord.queue``, ``claim(queues=)``,
``gauges().queues``) on every store (the fixtures of ``test_contract.py``)."""

from __future__ import annotations

import random

import pytest

from mpqueue.errors import ConfigError
from mpqueue.queues import Selection
from mpqueue.records import JobState, Outcome, now_ms
from mpqueue.store.counting import CountingStore

from ..support.helpers import claim_all, done, error, failed, ids
from ..support.helpers import claim_of as claim
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

A = "tests.support.tasks.add"
B = "tests.support.tasks.echo"


def no_legacy(store):
    if store.mode == "legacy":
        pytest.skip("legacy claims one job a poll: a claim's split between queues is its draw")


def test_a_job_keeps_its_queue(store):
    plain, heavy = add(store, record(), record(queue="heavy"))
    assert store.get(plain).queue == "default" and store.get(heavy).queue == "heavy"
    listed = {r.id: r.queue for r in store.list()}
    assert listed == {plain: "default", heavy: "heavy"}
    (claimed,) = claim(store, 1, "heavy")
    assert claimed.id == heavy and claimed.queue == "heavy"


def test_a_selection_claims_its_queues_only(store):
    slow = add(store, *(record(queue="slow") for _ in range(3)))
    fast = add(store, record(queue="fast", priority=1), record(queue="fast"))
    plain = add(store, record())
    assert claim(store, 10, "nothing-here") == []
    assert ids(claim(store, 10, "fast")) == fast  # priority, then FIFO
    assert ids(claim(store, 10, "default")) == plain
    assert ids(claim(store, 10, "slow")) == slow
    assert store.stats()["ready"] == 0


def test_preference_order_fills_from_later_queues_only_after_earlier_ones(store):
    first = add(store, *(record(queue="first") for _ in range(3)))
    later = add(store, *(record(queue="later", priority=9) for _ in range(4)))
    got = claim(store, 5, "first", "later")
    assert ids(got) == first + later[:2]  # first's jobs although later's rank higher
    assert ids(claim(store, 5, "first", "later")) == later[2:]


def test_weights_split_a_claim_and_top_up_from_the_others(store):
    no_legacy(store)
    add(store, *(record(queue="a") for _ in range(40)), *(record(queue="b") for _ in range(40)))
    got = claim(store, 8, "a", "b", weights=(3, 1))
    assert sorted(r.queue for r in got) == ["a"] * 6 + ["b"] * 2
    # b has 38 left, a 34: asking 3:1 for 40 takes a's 30 and b's 10...
    got = claim(store, 40, "a", "b", weights=(3, 1))
    assert sorted(r.queue for r in got) == ["a"] * 30 + ["b"] * 10
    # ... and when a has fewer than its share, b fills the claim.
    got = claim(store, 20, "a", "b", weights=(3, 1))
    assert sorted(r.queue for r in got) == ["a"] * 4 + ["b"] * 16


def test_weights_hold_over_many_one_job_claims(store):
    no_legacy(store)
    store.rng = random.Random(7)  # the draw of which queue a one-job claim serves
    add(store, *(record(queue="a") for _ in range(300)), *(record(queue="b") for _ in range(300)))
    queues = [claim(store, 1, "a", "b", weights=(3, 1))[0].queue for _ in range(200)]
    share = queues.count("a") / len(queues)
    assert 0.65 <= share <= 0.85, share  # 3:1 is 0.75


def test_serving_every_queue_keeps_priority_and_fifo_across_them(store):
    a1, b1, d1, a2, b2 = add(
        store,
        record(queue="a"),
        record(queue="b"),
        record(),
        record(queue="a"),
        record(queue="b", priority=5),
    )
    assert ids(claim_all(store)) == [b2, a1, b1, d1, a2]


def test_depths_by_queue_count_ready_and_running_jobs(store):
    add(store, record(queue="heavy"), record(queue="heavy"), record(B, queue="heavy"))
    add(store, record(), record(queue="light"))
    add(store, record(queue="heavy", run_at_ms=now_ms() + 3_600_000))  # scheduled: not ready
    claim(store, 1, "heavy")
    gauges = store.gauges()
    assert gauges.queues == {
        "default": {"ready": 1, "processing": 0},
        "heavy": {"ready": 2, "processing": 1},
        "light": {"ready": 1, "processing": 0},
    }
    store.pause(B)  # a paused task's ready job still counts as ready in its queue
    assert store.gauges().queues["heavy"] == {"ready": 2, "processing": 1}
    assert sum(q["ready"] for q in store.gauges().queues.values()) == store.stats()["ready"]


def test_an_unused_store_has_the_default_queue_only(store):
    assert store.gauges().queues == {"default": {"ready": 0, "processing": 0}}
    add(store, record())
    claim_all(store)
    assert store.gauges().queues == {"default": {"ready": 0, "processing": 1}}


def test_a_paused_task_stays_in_its_queue(store):
    held, other = add(store, record(B, queue="q"), record(A, queue="q"))
    store.pause(B)
    assert ids(claim(store, 5, "q")) == [other]
    store.resume(B)
    assert claim(store, 5, "default") == []
    assert ids(claim(store, 5, "q")) == [held]


def test_retries_and_put_backs_stay_in_their_queue(store):
    retried, released, lost = add(
        store, record(queue="q", retries=2), record(queue="q"), record(queue="q")
    )
    assert len(claim(store, 3, "q", worker="w1")) == 3
    assert failed(store, retried, worker="w1", retry_delay_s=0.0)
    store.finish([Outcome.released(released, "w1")], now_ms())
    assert store.requeue_server("w1") == [lost]
    assert claim(store, 5, "default") == []
    back = claim(store, 5, "q", worker="w2")
    assert sorted(ids(back)) == sorted([retried, released, lost])
    assert all(r.queue == "q" for r in back)


def test_a_requeued_dead_job_returns_to_its_queue(store):
    (job,) = add(store, record(queue="q", retries=0))
    claim(store, 1, "q")
    failed(store, job, retryable=False)
    assert store.get(job).state is JobState.DEAD
    store.requeue_dead(job, now_ms())
    assert claim(store, 1, "default") == []
    assert ids(claim(store, 1, "q")) == [job]


def test_cancelled_and_deleted_jobs_leave_their_queue_counts(store):
    a, b, c = add(store, record(queue="q"), record(queue="q"), record(queue="q"))
    store.cancel([a], "not needed", now_ms())
    assert store.delete(b)
    assert store.gauges().queues["q"] == {"ready": 1, "processing": 0}
    report, _ = store.cancel_matching(None, [JobState.READY], "all of them", now_ms(), 100, "")
    assert report.cancelled == [c]
    assert "q" not in store.gauges().queues
    assert claim(store, 5, "q") == []


def test_a_finished_named_queue_job_is_counted_once(store):
    (job,) = add(store, record(queue="q"))
    claim(store, 1, "q")
    done(store, job, 3)
    assert store.gauges().queues == {"default": {"ready": 0, "processing": 0}}
    assert store.stats()["done"] == 1


def test_a_claim_of_one_queue_does_not_read_the_others(store):
    if store.mode == "legacy":
        pytest.skip("the legacy layout reads every pending job at every poll, by design")
    add(store, *(record(queue="slow") for _ in range(2000)))
    add(store, *(record(A) for _ in range(500)))
    fast = add(store, *(record(queue="fast") for _ in range(5)))
    counting = CountingStore(store)
    got = counting.claim("w1", 5, now_ms(), Selection(("fast",)))
    assert ids(got) == fast
    # an index entry and a record per job claimed, and a few seeks and counts
    assert counting.last("claim").reads <= 5 * 3 + 10, counting.last("claim")


def test_selections_refuse_bad_input():
    for bad in ("", "a,,b", "a=1,b", "a=x", "a b", "a=0", "a,a", "-a"):
        with pytest.raises(ConfigError):
            Selection.parse(bad)
    assert Selection.parse("heavy=3, default=1") == Selection(("heavy", "default"), (3, 1))
    assert str(Selection.parse("x.y:z,default")) == "x.y:z,default"


def test_a_task_refuses_a_bad_queue_name(queue):
    with pytest.raises(ConfigError, match="bad queue name"):
        queue.task(queue="no spaces")(lambda: None)
    task = queue.task(name="tests.q.named", queue="fine")(lambda: None)
    with pytest.raises(ConfigError, match="bad queue name"):
        task.options(queue="x" * 65)
    assert queue.store.stats()["total"] == 0


def test_a_retried_job_error_history_keeps_queue(store):
    (job,) = add(store, record(queue="q"))
    claim(store, 1, "q")
    store.finish([Outcome.failed(job, "w1", error(), retry_delay_s=0.0)], now_ms())
    rec = store.get(job)
    assert rec.queue == "q" and len(rec.errors) == 1


@pytest.mark.parametrize("bad", ["no spaces", "", "x" * 65, "a\x00b", "é", ".dot"])
def test_a_store_refuses_a_record_with_a_bad_queue_name(store, bad):
    with pytest.raises(ConfigError, match="bad queue name"):
        store.add([record(), record(queue=bad)])
    assert store.stats()["total"] == 0  # all or nothing


@pytest.mark.parametrize("names", [(), ("q", "default")])
def test_a_job_released_into_another_queue_by_a_claim_is_claimed_by_it(store, names):
    """A claim that ends a job instead (past its deadline) may release a dependent into
    a queue the claim already passed, or one not in use when it began: it takes it."""
    if store.mode == "legacy":
        pytest.skip("legacy claims one job a poll")
    (late,) = add(store, record(expires_at_ms=now_ms() - 1))
    (after,) = add(store, record(queue="q", depends_on=(late,), allow_failures=True))
    assert store.get(after).state is JobState.WAITING
    got = claim(store, 2, *names)
    assert ids(got) == [after] and store.get(late).state is JobState.EXPIRED
