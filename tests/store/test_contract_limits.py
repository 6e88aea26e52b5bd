"""The store contract, continued: concurrency limits (``set_limit``, ``limits``, and
the claim that respects them) on every store (the fixtures of ``test_contract.py``)."""

from __future__ import annotations

import pytest

from mpqueue.concurrency import QUEUE, TASK, Limit
from mpqueue.errors import ConfigError
from mpqueue.records import JobState, Outcome, now_ms
from mpqueue.store.counting import CountingStore

from ..support.helpers import claim_of as claim
from ..support.helpers import done, error, failed, ids
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

A = "tests.support.tasks.add"  # limited in most tests
B = "tests.support.tasks.echo"


def running(store, kind=TASK, name=A):
    return next(lim.running for lim in store.limits() if (lim.kind, lim.name) == (kind, name))


def test_a_task_limit_caps_the_claims_of_every_claimer(store):
    assert store.set_limit(TASK, A, 2)
    jobs = add(store, *(record(A) for _ in range(5)))
    first = claim(store, 10, worker="w1")
    second = claim(store, 10, worker="w2")
    assert ids(first) == jobs[:2] and second == []
    assert store.limits() == [Limit(TASK, A, 2, 2)]
    done(store, jobs[0], 1, worker="w1")
    assert ids(claim(store, 10, worker="w2")) == [jobs[2]]
    assert running(store) == 2
    assert store.stats()["ready"] == 2


def test_a_job_over_its_limit_does_not_block_the_others(store):
    store.set_limit(TASK, A, 1)
    limited = add(store, *(record(A, priority=5) for _ in range(3)))
    other = add(store, *(record(B) for _ in range(3)))
    got = claim(store, 10)
    assert sorted(ids(got)) == sorted([limited[0], *other])
    assert [r.id for r in got if r.name == A] == [limited[0]]  # priority first


@pytest.mark.parametrize(
    "ending", ["done", "retry", "dead", "released", "cancelled", "expired", "requeue_server"]
)
def test_every_kind_of_outcome_frees_the_slot(store, ending):
    store.set_limit(TASK, A, 1)
    first, second = add(store, record(A), record(A))
    assert ids(claim(store, 5)) == [first]
    assert claim(store, 5, worker="w2") == []
    if ending == "done":
        done(store, first, 1)
    elif ending == "retry":
        failed(store, first, retry_delay_s=0.0)
    elif ending == "dead":
        failed(store, first, retryable=False)
    elif ending == "released":
        store.finish([Outcome.released(first, "w1")], now_ms())
    elif ending == "cancelled":
        store.cancel([first], "stop", now_ms())
        store.finish([Outcome.failed(first, "w1", error())], now_ms())
        assert store.get(first).state is JobState.CANCELLED
    elif ending == "expired":
        store.finish([Outcome.expired(first, "w1")], now_ms())
    else:
        assert store.requeue_server("w1") == [first]
    assert running(store) == 0
    got = ids(claim(store, 5, worker="w2"))
    assert len(got) == 1 and got[0] in (first, second)
    assert running(store) == 1


def test_a_deleted_running_job_frees_its_slot(store):
    store.set_limit(TASK, A, 1)
    first, second = add(store, record(A), record(A))
    claim(store, 5)
    assert store.delete(first)
    assert running(store) == 0
    assert ids(claim(store, 5)) == [second]


def test_a_queue_limit_caps_the_whole_queue(store):
    assert store.set_limit(QUEUE, "heavy", 2)
    heavy = add(store, record(A, queue="heavy"), record(B, queue="heavy"), record(B, queue="heavy"))
    plain = add(store, record(B))
    got = claim(store, 10)
    assert sorted(ids(got)) == sorted([*heavy[:2], *plain])
    assert running(store, QUEUE, "heavy") == 2
    assert claim(store, 10, "heavy", worker="w2") == []
    done(store, heavy[1], 1)
    assert ids(claim(store, 10, "heavy", worker="w2")) == [heavy[2]]


def test_a_task_and_a_queue_limit_both_apply(store):
    store.set_limit(TASK, A, 5)
    store.set_limit(QUEUE, "q", 1)
    jobs = add(store, record(A, queue="q"), record(A, queue="q"), record(A))
    got = claim(store, 10)
    assert sorted(ids(got)) == sorted([jobs[0], jobs[2]])
    assert running(store, TASK, A) == 2 and running(store, QUEUE, "q") == 1
    done(store, jobs[0], 1)
    assert running(store, TASK, A) == 1 and running(store, QUEUE, "q") == 0
    assert ids(claim(store, 10)) == [jobs[1]]


def test_setting_a_limit_counts_the_running_jobs_and_files_the_ready_ones(store):
    jobs = add(store, *(record(A) for _ in range(4)))
    assert ids(claim(store, 2)) == jobs[:2]
    assert store.set_limit(TASK, A, 2)
    assert running(store) == 2
    assert claim(store, 5) == []  # both slots taken by jobs claimed before the limit
    done(store, jobs[0], 1)
    assert running(store) == 1
    assert ids(claim(store, 5)) == [jobs[2]]


def test_limit_changes(store):
    jobs = add(store, *(record(A) for _ in range(6)))
    store.set_limit(TASK, A, 1)
    assert ids(claim(store, 5)) == jobs[:1]
    assert store.set_limit(TASK, A, 3)  # raised: two more may start
    assert not store.set_limit(TASK, A, 3)
    assert ids(claim(store, 5)) == jobs[1:3]
    assert store.set_limit(TASK, A, 1)  # lowered: nothing starts until below it
    assert claim(store, 5) == [] and running(store) == 3
    for job in jobs[:3]:
        done(store, job, 1)
    assert ids(claim(store, 5)) == jobs[3:4]
    assert store.set_limit(TASK, A, None)  # removed: the rest go, in order
    assert not store.set_limit(TASK, A, None)
    assert store.limits() == []
    assert ids(claim(store, 5)) == jobs[4:]
    done(store, jobs[3], 1)  # counted against a limit that is gone: nothing breaks
    assert store.stats()["processing"] == 2


def test_a_removed_queue_limit_leaves_the_task_limit(store):
    store.set_limit(TASK, A, 1)
    store.set_limit(QUEUE, "q", 1)
    jobs = add(store, record(A, queue="q"), record(A, queue="q"), record(B, queue="q"))
    assert ids(claim(store, 5)) == jobs[:1]
    store.set_limit(QUEUE, "q", None)
    assert ids(claim(store, 5)) == [jobs[2]]  # the task's limit still holds jobs[1]
    assert store.limits() == [Limit(TASK, A, 1, 1)]


def test_a_paused_limited_task_resumes_into_its_lane(store):
    store.set_limit(TASK, A, 1)
    jobs = add(store, record(A), record(A))
    store.pause(A)
    assert claim(store, 5) == []
    store.resume(A)
    assert ids(claim(store, 5)) == jobs[:1]
    assert claim(store, 5) == []


def test_scheduled_and_requeued_jobs_of_a_limited_task_keep_their_limit(store):
    store.set_limit(TASK, A, 1)
    (dead,) = add(store, record(A, retries=0))
    claim(store, 1)
    failed(store, dead, retryable=False)
    later = add(store, record(A, run_at_ms=now_ms() - 1), record(A))
    store.requeue_dead(dead, now_ms())
    assert len(claim(store, 5)) == 1
    assert claim(store, 5) == []
    assert running(store) == 1 and store.stats()["ready"] == 2
    assert later  # both were filed in the lane


def test_bad_limits_are_refused(store):
    for bad in (0, -1, 100_001, 1.5, "2", True):
        with pytest.raises(ConfigError):
            store.set_limit(TASK, A, bad)
    with pytest.raises(ConfigError):
        store.set_limit("server", A, 1)
    assert store.limits() == []


@pytest.mark.timeout(300)
def test_a_claim_does_not_read_jobs_at_their_limit(store):
    if store.mode == "legacy":
        pytest.skip("the legacy layout reads every pending job at every poll, by design")
    n = 100_000
    store.set_limit(TASK, A, 1)
    for _ in range(n // 10_000):
        add(store, *(record(A, priority=9) for _ in range(10_000)))
    (first,) = claim(store, 1)  # takes the one slot
    plain = add(store, *(record(B) for _ in range(10)))
    plain, later = plain[:5], plain[5:]
    counting = CountingStore(store)
    got = counting.claim("w1", 5, now_ms())
    assert ids(got) == plain
    # an index entry and a record per job claimed, and a few seeks, counts and limits
    assert counting.last("claim").reads <= 5 * 3 + 12, counting.last("claim")
    counting.finish([Outcome.done(first.id, "w1", b"")], now_ms())
    assert counting.last("finish").reads <= 12, counting.last("finish")
    # a free slot: the claim reads one job of the lane, not the lane
    got = counting.claim("w1", 5, now_ms())
    assert [r.name for r in got].count(A) == 1 and ids(got)[1:] == later[:4]
    assert counting.last("claim").reads <= 5 * 3 + 12, counting.last("claim")


def test_check_compares_the_running_counts(store):
    store.set_limit(TASK, A, 2)
    store.set_limit(QUEUE, "q", 3)
    add(store, record(A), record(A, queue="q"), record(B, queue="q"))
    claim(store, 5)
    assert store.check(holder_gone=lambda server_id: True).code == 0
    assert running(store) == 2 and running(store, QUEUE, "q") == 2


def _claim_and_finish_ops(store, name, n):
    """Ops of one claim of ``n`` jobs of task ``name`` and of one finish of them all."""
    jobs = add(store, *(record(name) for _ in range(n)))
    counting = CountingStore(store)
    got = counting.claim("w1", n, now_ms())
    assert sorted(ids(got)) == sorted(jobs)
    counting.finish([Outcome.done(job, "w1", b"") for job in jobs], now_ms())
    return counting.last("claim"), counting.last("finish")


def test_a_batch_of_limited_jobs_reads_and_writes_each_limit_once(store):
    # A claim and a finish of many jobs of one limited task change its running count
    # once each, not once per job: the per-job cost of a limit is its claim's own
    # bookkeeping (LMDB: the job's ``counted`` entry), never another read and write
    # of the limit. Compared with the same batch of an unlimited task, same store.
    if store.mode == "legacy":
        pytest.skip("the legacy layout claims one job a poll")
    n = 40
    store.set_limit(TASK, A, 1_000)
    plain_claim, plain_finish = _claim_and_finish_ops(store, B, n)
    limited_claim, limited_finish = _claim_and_finish_ops(store, A, n)
    assert limited_claim.reads <= plain_claim.reads + 12, (limited_claim, plain_claim)
    assert limited_claim.puts <= plain_claim.puts + n + 6, (limited_claim, plain_claim)
    assert limited_finish.reads <= plain_finish.reads + n + 6, (limited_finish, plain_finish)
    assert limited_finish.puts <= plain_finish.puts + 6, (limited_finish, plain_finish)
    assert running(store) == 0


def test_a_cycle_claims_the_slots_its_own_outcomes_free(store):
    """finish_and_claim: the slots its outcomes free are free to its claim, and the
    running count ends right whether the claim takes them or not."""
    if store.mode == "legacy":
        pytest.skip("legacy claims one job per poll: the cycle's claim is its poll")
    store.set_limit(TASK, A, 2)
    jobs = add(store, *(record(A) for _ in range(4)), record(B))
    first = claim(store, 2)
    assert ids(first) == jobs[:2] and running(store) == 2
    outcomes = [Outcome.done(rec.id, "w1", b"") for rec in first]
    _, second = store.finish_and_claim(outcomes, "w1", 5, now_ms())
    assert sorted(ids(second)) == sorted([*jobs[2:4], jobs[4]]) and running(store) == 2
    outcomes = [Outcome.done(rec.id, "w1", b"") for rec in second]
    _, third = store.finish_and_claim(outcomes, "w1", 5, now_ms())
    assert third == [] and running(store) == 0
    assert store.check(holder_gone=lambda server_id: True).code == 0


def test_a_claim_merges_lanes_and_queues_in_priority_order_and_skips_a_filled_lane(store):
    """Plain jobs of two queues and the lanes of a limited task (in both queues) and of a
    limited queue come out of one claim in priority, then FIFO, order across all of them;
    once a limit fills in the claim, the rest of its lanes stays ready and the claim goes
    on with the others."""
    store.set_limit(TASK, A, 2)
    store.set_limit(QUEUE, "slow", 3)
    plain = add(store, record(B, priority=1), record(B, queue="fast", priority=1))
    limited = add(
        store,
        record(A, priority=5),
        record(A, queue="fast", priority=4),
        record(A, priority=3),  # the task's limit is full by then
        record(A, queue="fast", priority=2),
    )
    in_slow = add(store, *(record(B, queue="slow", priority=p) for p in (6, 2, 0, 0)))
    got = ids(claim(store, 20))
    want = [in_slow[0], limited[0], limited[1], in_slow[1], *plain, in_slow[2]]
    assert got == want
    assert running(store) == 2 and running(store, QUEUE, "slow") == 3
    assert store.stats()["ready"] == 3
    assert ids(claim(store, 20)) == []  # both limits full: nothing else may start


def test_task_limits_alone_each_lane_up_to_its_room_in_priority_order(store):
    """Every limit a task's (PostgreSQL's claim statement then chooses the jobs itself):
    each limited task's jobs start up to its room, in priority and FIFO order among the
    plain ones; a named queue's claim takes only that queue's; a laned job past its
    deadline ends expired, takes no slot, and the claim fills its place."""
    C = "tests.support.tasks.urgent"
    store.set_limit(TASK, A, 2)
    store.set_limit(TASK, C, 1)
    late = now_ms() - 1
    a = add(
        store,
        record(A, priority=7, expires_at_ms=late),
        record(A, priority=6),
        record(A, priority=5, queue="fast"),
        record(A, priority=4),
    )
    c = add(store, record(C, priority=8, queue="fast"), record(C, priority=9))
    plain = add(store, record(B, priority=5), record(B, queue="fast", priority=3))
    assert ids(claim(store, 3, "fast")) == [c[0], a[2], plain[1]]
    assert running(store) == 1 and running(store, TASK, C) == 1
    # A's one free slot goes to a[1] once a[0] expires; C has none: its other job
    # stays ready, although of the highest priority
    assert sorted(ids(claim(store, 5))) == sorted([a[1], plain[0]])
    assert store.get(a[0]).state is JobState.EXPIRED
    assert running(store) == 2 and running(store, TASK, C) == 1
    assert ids(claim(store, 5)) == []
    assert store.stats()["ready"] == 2
    assert store.check(holder_gone=lambda server_id: True).code == 0
