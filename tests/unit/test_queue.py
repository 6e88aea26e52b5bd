"""The Queue/Task/Job API against a real LMDB store, in both store modes."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from mpqueue import JobFailed, JobNotFound, Queue
from mpqueue.errors import ConfigError
from mpqueue.records import JobState, Outcome, now_ms
from mpqueue.serializer import load_callable, load_result
from mpqueue.store.counting import CountingStore

from ..support.helpers import claim_all, claim_one, done, failed

HOUR_MS = 3_600_000


def test_delay_enqueues_a_ready_job(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    job = add.delay(1, b=2)
    assert job.state == "ready" and job.attempts == 0 and job.name == "tests.support.tasks.add"
    assert job.args() == ((1,), {"b": 2})
    assert job.record.func is None  # importable: stored by name
    again = queue.get(job.id)
    assert again is not None and again.state == "ready" and again.args() == job.args()
    assert queue.stats() == {
        "ready": 1,
        "scheduled": 0,
        "processing": 0,
        "done": 0,
        "dead": 0,
        "waiting": 0,
        "cancelled": 0,
        "expired": 0,
        "total": 1,
    }


def test_schedule_with_delay_and_at(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    before = now_ms()
    later = add.schedule((1, 2), delay=3600)
    assert later.state == "scheduled"
    assert before + HOUR_MS <= later.record.run_at_ms <= now_ms() + HOUR_MS
    at_dt = datetime.now(timezone.utc) + timedelta(hours=2)
    by_dt = add.schedule((3, 4), at=at_dt)
    assert by_dt.state == "scheduled"
    assert by_dt.record.run_at_ms == int(at_dt.timestamp() * 1000)
    by_epoch = add.schedule(kwargs={"a": 1, "b": 1}, at=(now_ms() + HOUR_MS) / 1000)
    assert by_epoch.state == "scheduled"
    past = add.schedule((5, 6), at=1.0)
    assert past.state == "ready"
    assert queue.stats()["scheduled"] == 3 and queue.stats()["ready"] == 1
    assert queue.store.next_run_at_ms() == later.record.run_at_ms


def test_map_writes_every_job_in_one_transaction(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    counted = CountingStore(queue.store)
    queue._store = counted  # route the queue's calls through the counter
    try:
        jobs = add.map([(i, i) for i in range(50)])
    finally:
        queue._store = counted.inner
    assert counted.last("add").txns == 1
    assert [j.args()[0] for j in jobs] == [(i, i) for i in range(50)]
    assert len({j.id for j in jobs}) == 50
    assert queue.stats()["ready"] == 50 and queue.stats()["total"] == 50
    assert add.map([]) == []


def test_map_with_priority(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    add.map([(0, 0)] * 3)
    urgent = add.map([(1, 1)] * 2, priority=9)
    claimed = claim_all(queue.store)
    assert [r.id for r in claimed[:2]] == [j.id for j in urgent]


def test_submit_lambda_and_closure_by_value(queue):
    lam = queue.submit(lambda x: x * 3, 4)
    offset = 10

    def closure(x, *, y):
        return x + y + offset

    clo = queue.submit(closure, 1, y=2)
    for job, expected in ((lam, 12), (clo, 13)):
        rec = queue.get(job.id).record
        assert rec.func is not None
        args, kwargs = queue.get(job.id).args()
        assert load_callable(rec.func)(*args, **kwargs) == expected
    assert "<lambda>" in lam.name and "closure" in clo.name


def test_task_defined_locally_is_stored_by_value(queue):
    @queue.task(retries=1)
    def local(x):
        return x + 1

    job = local.delay(1)
    assert job.record.func is not None and job.record.max_retries == 1
    assert local(1) == 2  # calling the task runs it here


def test_task_options_are_recorded(queue):
    @queue.task(
        retries=7, timeout=2.5, priority=3, backoff=0.25, backoff_cap=9.0, name="custom.name"
    )
    def fn():
        return None

    rec = fn.delay().record
    assert (
        rec.max_retries,
        rec.timeout_s,
        rec.priority,
        rec.backoff_base_s,
        rec.backoff_cap_s,
        rec.name,
    ) == (7, 2.5, 3, 0.25, 9.0, "custom.name")
    assert fn.schedule(priority=-4).record.priority == -4
    claimed = claim_one(queue.store, now=now_ms())
    assert claimed.timeout_s == 2.5
    (claim,) = queue.store.claims("w1")
    assert claim.deadline_ms == claim.claimed_at_ms + 2500


def test_get_list_and_stats(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    noop = queue.task_by_name("tests.support.tasks.noop")
    a = [add.delay(i, i) for i in range(3)]
    n = [noop.delay(i) for i in range(2)]
    s = add.schedule((9, 9), delay=3600)
    assert queue.get("f" * 32) is None
    assert queue.get("not an id") is None
    everything = queue.list()
    assert [j.id for j in everything] == [j.id for j in a + n + [s]]  # oldest first
    assert {j.id for j in queue.list(name="tests.support.tasks.add")} == {j.id for j in a + [s]}
    assert [j.id for j in queue.list(name="tests.support.tasks.noop")] == [j.id for j in n]
    assert queue.list(name="tests.support.tasks") == []  # a name prefix is not a name
    assert [j.id for j in queue.list(state="scheduled")] == [s.id]
    assert len(queue.list(state="ready")) == 5
    assert [j.id for j in queue.list(name="tests.support.tasks.add", state="ready")] == [
        j.id for j in a
    ]
    assert queue.stats()["total"] == 6


def test_list_limit_returns_the_oldest(queue):
    # Task names sort the other way round from creation order.
    zed = queue.task(lambda: None, name="zzz")
    abc = queue.task(lambda: None, name="aaa")
    first = zed.delay()
    wait = now_ms()
    while now_ms() <= wait:  # a later millisecond, so the creation order is strict
        pass
    second = abc.delay()
    assert [j.id for j in queue.list()] == [first.id, second.id]
    assert [j.id for j in queue.list(limit=1)] == [first.id]
    assert queue.list(limit=0) == []


def test_claim_order_is_priority_then_fifo(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    jobs = []
    for i, prio in enumerate([0, 5, -3, 10, 5, 0, 10, -3]):
        jobs.append(add.schedule((i, 0), priority=prio))
    claimed = claim_all(queue.store)
    expected = sorted(range(8), key=lambda i: (-jobs[i].priority, i))
    assert [r.id for r in claimed] == [jobs[i].id for i in expected]
    assert all(r.state is JobState.PROCESSING and r.attempts == 1 for r in claimed)
    assert queue.stats()["processing"] == 8 and queue.stats()["ready"] == 0


def test_fifo_within_a_priority(queue):
    noop = queue.task_by_name("tests.support.tasks.noop")
    jobs = [noop.delay(i) for i in range(20)] + noop.map([(i,) for i in range(20, 40)])
    claimed = claim_all(queue.store, limit=7)
    assert [r.id for r in claimed] == [j.id for j in jobs]


def test_claim_respects_limit(queue):
    noop = queue.task_by_name("tests.support.tasks.noop")
    noop.map([(i,) for i in range(10)])
    got = queue.store.claim("w1", 4, now_ms())
    assert len(got) == (1 if queue.mode == "legacy" else 4)
    assert queue.store.claim("w1", 0, now_ms()) == []


def test_scheduled_job_is_claimable_only_when_due(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    run_at_ms = (now_ms() // 1000 + 3600) * 1000
    job = add.schedule((1, 2), at=run_at_ms / 1000)
    ready = add.delay(0, 0)
    store = queue.store
    assert store.next_run_at_ms() == run_at_ms
    assert [r.id for r in claim_all(store, now=run_at_ms - 1)] == [ready.id]
    assert queue.get(job.id).state == "scheduled"
    assert claim_all(store, now=run_at_ms - 1) == []
    claimed = claim_all(store, now=run_at_ms)
    assert [r.id for r in claimed] == [job.id]
    assert queue.get(job.id).state == "processing"
    assert store.next_run_at_ms() is None


def test_due_jobs_are_ordered_by_priority_among_themselves(queue):
    noop = queue.task_by_name("tests.support.tasks.noop")
    t = now_ms() + HOUR_MS
    low = noop.schedule((1,), at=t / 1000, priority=0)
    high = noop.schedule((2,), at=(t + 5) / 1000, priority=9)
    assert [r.id for r in claim_all(queue.store, now=t + 10)] == [high.id, low.id]


def test_retry_with_backoff_then_dead_with_every_error(queue):
    @queue.task(retries=2, backoff=1.0, backoff_cap=1.5)
    def flaky():
        raise RuntimeError

    job = flaky.delay()
    store = queue.store
    now = now_ms() + HOUR_MS  # a fake clock ahead of the real one
    windows = [(500, 1000), (750, 1500)]  # equal jitter: [nominal/2, nominal], capped
    for attempt in (1, 2):
        rec = claim_one(store, now=now)
        assert rec is not None and rec.id == job.id and rec.attempts == attempt
        assert failed(store, job.id, f"failure {attempt}", now=now)
        rec = store.get(job.id)
        assert rec.state is JobState.SCHEDULED and rec.attempts == attempt
        low, high = windows[attempt - 1]
        assert now + low <= rec.run_at_ms <= now + high
        assert claim_all(store, now=rec.run_at_ms - 1) == []
        now = rec.run_at_ms
    rec = claim_one(store, now=now)
    assert rec.attempts == 3
    assert failed(store, job.id, "failure 3", now=now)
    final = queue.get(job.id)
    assert final.state == "dead" and final.attempts == 3
    assert [e.message for e in final.errors] == ["failure 1", "failure 2", "failure 3"]
    assert final.error.message == "failure 3"
    assert final.record.finished_at_ms == now
    assert queue.stats()["dead"] == 1 and queue.stats()["scheduled"] == 0
    assert claim_all(store, now=now + HOUR_MS) == []
    with pytest.raises(JobFailed) as info:
        final.result(timeout=1)
    assert "failure 3" in str(info.value) and info.value.job_id == job.id


def test_retry_delay_overrides_backoff(queue):
    noop = queue.task_by_name("tests.support.tasks.noop")
    job = noop.delay()
    store = queue.store
    now = now_ms() + HOUR_MS
    # noop has retries=0, so use a task with retries left
    retry = queue.task_by_name("tests.support.tasks.retry_later")
    job = retry.delay(5.0)
    claimed = claim_all(store, now=now)
    assert {r.id for r in claimed} >= {job.id}
    assert failed(store, job.id, now=now, retry_delay_s=5.0)
    rec = store.get(job.id)
    assert rec.state is JobState.SCHEDULED and rec.run_at_ms == now + 5000
    assert claim_all(store, now=now + 4999) == []
    assert [r.id for r in claim_all(store, now=now + 5000)] == [job.id]
    assert failed(store, job.id, now=now + 5000, retry_delay_s=0)
    assert [r.id for r in claim_all(store, now=now + 5000)] == [job.id]


def test_retries_exhausted_even_with_retry_delay(queue):
    noop = queue.task_by_name("tests.support.tasks.noop")  # retries=0
    job = noop.delay()
    claim_all(queue.store)
    assert failed(queue.store, job.id, retry_delay_s=1.0)
    assert queue.get(job.id).state == "dead"


def test_non_retryable_failure_goes_straight_to_dead(queue):
    add = queue.task_by_name("tests.support.tasks.add")  # retries=3
    job = add.delay(1, 2)
    claim_all(queue.store)
    assert failed(queue.store, job.id, "bad payload", retryable=False)
    rec = queue.get(job.id)
    assert rec.state == "dead" and rec.attempts == 1 and rec.error.message == "bad payload"
    assert queue.stats()["dead"] == 1


def test_release_is_not_charged(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    job = add.delay(1, 2)
    store = queue.store
    (rec,) = claim_all(store)
    assert rec.attempts == 1
    assert store.finish([Outcome.released(job.id, "w1")], now_ms()) == [True]
    again = queue.get(job.id)
    assert again.state == "ready" and again.attempts == 0 and again.errors == ()
    assert store.claims() == []
    (rec,) = claim_all(store, worker="w2")
    assert rec.attempts == 1


def test_late_ack_after_requeue_worker_changes_nothing(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    jobs = add.map([(1, 1), (2, 2)])
    store = queue.store
    assert len(claim_all(store, worker="w1")) == 2
    assert sorted(store.requeue_server("w1")) == sorted(j.id for j in jobs)
    assert store.requeue_server("w1") == []
    for j in jobs:
        rec = queue.get(j.id)
        assert rec.state == "ready" and rec.attempts == 0
    assert done(store, jobs[0].id, 1, worker="w1") is False
    assert failed(store, jobs[1].id, worker="w1") is False
    assert queue.get(jobs[0].id).state == "ready" and queue.get(jobs[1].id).errors == ()
    claimed = claim_all(store, worker="w2")
    assert len(claimed) == 2
    assert done(store, jobs[0].id, 1, worker="w1") is False
    assert done(store, jobs[0].id, 2, worker="w2") is True
    assert done(store, jobs[0].id, 3, worker="w2") is False  # a second ack is ignored
    assert queue.get(jobs[0].id).result(timeout=1) == 2


def test_finish_of_an_unclaimed_job_is_ignored(queue):
    job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    assert done(queue.store, job.id, 3) is False
    assert queue.get(job.id).state == "ready"
    assert queue.store.finish([], now_ms()) == []


def test_finish_batch_mixes_outcomes(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    a, b, c = add.map([(1, 1), (2, 2), (3, 3)])
    store = queue.store
    claim_all(store)
    from mpqueue.serializer import dump_result

    from ..support.helpers import error

    result = store.finish(
        [
            Outcome.done(a.id, "w1", dump_result(2)),
            Outcome.failed(b.id, "w1", error(), retryable=False),
            Outcome.released(c.id, "w1"),
        ],
        now_ms(),
    )
    assert result == [True, True, True]
    assert [queue.get(j.id).state for j in (a, b, c)] == ["done", "dead", "ready"]


def test_claims(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    job = add.delay(1, 2)
    other = add.delay(3, 4)
    store = queue.store
    claim_one(store, worker="w1")
    claim_one(store, worker="w2")
    assert [c.job_id for c in store.claims("w1")] == [job.id]
    assert {c.job_id for c in store.claims()} == {job.id, other.id}
    (claim,) = store.claims("w1")
    assert claim.server_id == "w1" and claim.deadline_ms is None  # add has no timeout
    assert store.claims("w") == []  # a worker-id prefix is not a server id


def test_delete_from_every_state(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    store = queue.store
    to_finish, to_kill, processing = add.map([(2, 2), (3, 3), (4, 4)])
    claim_all(store)
    ready = add.delay(1, 1)
    scheduled = add.schedule((1, 1), delay=3600)
    done(store, to_finish.id, 4)
    failed(store, to_kill.id, retryable=False)
    assert queue.stats() == {
        "ready": 1,
        "scheduled": 1,
        "processing": 1,
        "done": 1,
        "dead": 1,
        "waiting": 0,
        "cancelled": 0,
        "expired": 0,
        "total": 5,
    }
    for job in (ready, scheduled, to_finish, to_kill, processing):
        assert queue.delete(job.id) is True
        assert queue.get(job.id) is None
        assert queue.delete(job.id) is False
    assert queue.stats() == {
        "ready": 0,
        "scheduled": 0,
        "processing": 0,
        "done": 0,
        "dead": 0,
        "waiting": 0,
        "cancelled": 0,
        "expired": 0,
        "total": 0,
    }
    assert queue.list() == [] and store.claims() == []
    assert done(store, processing.id, 1) is False  # late ack of a deleted job
    assert queue.delete("nope") is False


def test_requeue_dead_and_purge(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    a, b = add.map([(1, 1), (2, 2)])
    store = queue.store
    claim_all(store)
    failed(store, a.id, "first", retryable=False)
    failed(store, b.id, "second", retryable=False)
    back = queue.requeue(a.id)
    assert back.state == "ready" and back.attempts == 0
    assert [e.message for e in back.errors] == ["first"]  # history is kept
    assert queue.stats()["dead"] == 1 and queue.stats()["ready"] == 1
    (rec,) = claim_all(store)
    assert rec.id == a.id and rec.attempts == 1
    assert queue.purge_dead() == 1
    assert queue.get(b.id) is None and queue.stats()["dead"] == 0
    assert queue.purge_dead() == 0


def test_requeued_dead_job_waits_behind_ready_jobs(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    dead = add.delay(0, 0)
    claim_all(queue.store)
    failed(queue.store, dead.id, retryable=False)
    waiting = add.delay(1, 1)
    queue.requeue(dead.id)
    assert [r.id for r in claim_all(queue.store)] == [waiting.id, dead.id]


def test_expire_finished_keeps_results_for_the_ttl(store_path, mode):
    with Queue(store_path, mode=mode, result_ttl=10) as queue:
        add = queue.task_by_name("tests.support.tasks.add")
        a, b, c = add.map([(1, 1), (2, 2), (3, 3)])
        store = queue.store
        t = now_ms()
        claim_all(store, now=t)
        done(store, a.id, 2, now=t)
        done(store, b.id, 4, now=t + 5000)
        failed(store, c.id, retryable=False, now=t)
        assert queue.expire_finished(now=t + 10_000) == 0  # a finished exactly ttl ago
        assert queue.expire_finished(now=t + 10_001) == 1
        assert queue.get(a.id) is None and queue.get(b.id).result(timeout=1) == 4
        assert queue.expire_finished(now=t + 15_001) == 1
        assert queue.get(c.id).state == "dead"  # dead jobs are not expired
        assert queue.stats() == {
            "ready": 0,
            "scheduled": 0,
            "processing": 0,
            "done": 0,
            "dead": 1,
            "waiting": 0,
            "cancelled": 0,
            "expired": 0,
            "total": 1,
        }
        assert queue.expire_finished(now=0) == 0  # a cutoff before the epoch


def test_default_expire_finished_uses_the_clock(store_path, mode):
    with Queue(store_path, mode=mode, result_ttl=0) as queue:
        job = queue.task_by_name("tests.support.tasks.add").delay(1, 1)
        claim_all(queue.store)
        done(queue.store, job.id, 2, now=now_ms() - 10)
        assert queue.expire_finished() == 1


def test_job_result(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    job = add.delay(2, 3)
    with pytest.raises(TimeoutError):
        job.result(timeout=0.05)
    claim_all(queue.store)
    with pytest.raises(TimeoutError):
        job.result(timeout=0)
    done(queue.store, job.id, 5)
    assert job.result(timeout=1) == 5
    assert job.state == "done" and job.record.result is not None
    assert load_result(job.record.result) == 5


def test_job_result_waits_for_a_finish_from_another_thread(queue):
    job = queue.task_by_name("tests.support.tasks.add").delay(2, 3)
    claim_all(queue.store)
    timer = threading.Timer(0.05, lambda: done(queue.store, job.id, {"x": [1]}))
    timer.start()
    try:
        assert job.result(timeout=10) == {"x": [1]}
    finally:
        timer.join()


def test_job_result_of_a_deleted_job(queue):
    job = queue.task_by_name("tests.support.tasks.add").delay(2, 3)
    queue.delete(job.id)
    with pytest.raises(JobNotFound):
        job.result(timeout=0.1)
    with pytest.raises(JobNotFound):
        job.refresh()


def test_job_refresh_and_to_dict(queue):
    job = queue.task_by_name("tests.support.tasks.add").delay(2, 3)
    claim_all(queue.store)
    assert job.state == "ready"  # a snapshot
    assert job.refresh().state == "processing"
    view = job.to_dict()
    assert view["id"] == job.id and view["state"] == "processing" and view["attempts"] == 1
    assert "payload" not in view


def test_two_queues_on_one_path_share_the_store(store_path, mode):
    with Queue(store_path, mode=mode) as one, Queue(store_path, mode=mode) as two:
        job = one.task_by_name("tests.support.tasks.add").delay(1, 2)
        assert two.get(job.id).state == "ready"
        one.close()
        assert two.stats()["total"] == 1  # closing one handle leaves the other working


def test_reopen_keeps_jobs(store_path, mode):
    with Queue(store_path, mode=mode) as queue:
        job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
        scheduled = queue.task_by_name("tests.support.tasks.add").schedule((1, 1), delay=3600)
    with Queue(store_path, mode=mode) as queue:
        assert queue.get(job.id).state == "ready"
        assert queue.get(scheduled.id).state == "scheduled"
        assert [r.id for r in claim_all(queue.store)] == [job.id]


def test_closed_store_refuses_work(store_path, mode):
    queue = Queue(store_path, mode=mode)
    store = queue.store
    queue.close()
    from mpqueue.errors import StoreError

    with pytest.raises(StoreError):
        store.stats()
    with Queue(store_path, mode=mode) as again:  # the queue itself reopens fine
        assert again.stats()["total"] == 0


def test_wait_finished_invalid_limit(queue):
    with pytest.raises(ConfigError):
        queue.list(limit=-1)


def test_finish_and_claim_in_one_call(queue):
    add = queue.task_by_name("tests.support.tasks.add")
    first = add.delay(1, 1)
    rest = add.map([(2, 2), (3, 3)])
    store = queue.store
    (held,) = store.claim("w1", 1, now_ms())
    assert held.id == first.id
    from mpqueue.serializer import dump_result

    acks, claimed = store.finish_and_claim(
        [Outcome.done(first.id, "w1", dump_result(2))], "w1", 8, now_ms()
    )
    assert acks == [True]
    expected = rest[:1] if queue.mode == "legacy" else rest
    assert [r.id for r in claimed] == [j.id for j in expected]
    assert queue.get(first.id).result(timeout=1) == 2
    assert store.finish_and_claim([], "w1", 0, now_ms()) == ([], [])


def test_backoff_is_capped_and_jittered_for_any_attempt():
    import random

    from mpqueue.retry import backoff_s

    rng = random.Random(1)
    assert 0.5 <= backoff_s(1, 1.0, 300.0, rng) <= 1.0
    assert 2.0 <= backoff_s(3, 1.0, 300.0, rng) <= 4.0
    for attempt in (20, 1100, 1_000_000):  # retries may be up to a million
        assert 150.0 <= backoff_s(attempt, 1.0, 300.0, rng) <= 300.0


def test_arguments_named_like_api_parameters_reach_the_job(queue):
    """delay/submit take their own parameters positionally, so a job may have
    arguments called ``self`` or ``fn``."""

    def body(self=None, fn=None):
        return self, fn

    task = queue.task(body)
    assert task.delay(self=1, fn=2).args() == ((), {"self": 1, "fn": 2})
    assert queue.submit(body, fn=3).args() == ((), {"fn": 3})
