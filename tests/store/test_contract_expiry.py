"""The store contract, continued: expiry (``expires=``, see ``mpqueue/expiry.py``) on
every backend (the fixtures of ``test_contract.py``: LMDB in both layouts, PostgreSQL
and memory), through the ``Store`` interface and the task API. Time is given to the
store calls (``now=``), never slept."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest

from mpqueue import ConfigError, JobExpired, chain
from mpqueue.expiry import expiry_entry
from mpqueue.records import JobState, Outcome, now_ms
from mpqueue.serializer import dump_result

from ..support.helpers import claim_all, done, failed
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

MINUTE = 60_000
ADD = "tests.support.tasks.add"


def states(store, *job_ids: str) -> list[str]:
    return [store.get(job_id).state.value for job_id in job_ids]


def clean(store) -> None:
    report = store.check(holder_gone=lambda server_id: True)
    assert report.inconsistent == [] and report.corrupt == []


def claimed(store, now: int) -> list[str]:
    return sorted(rec.id for rec in claim_all(store, now=now))


def assert_expired(store, job_id: str, at: int) -> None:
    rec = store.get(job_id)
    assert rec.state is JobState.EXPIRED, rec
    assert rec.attempts == 0 and rec.finished_at_ms == at and rec.result is None
    assert rec.errors[-1].kind == "expired" and rec.errors[-1].type == "Expired"
    assert "not started by its deadline" in rec.errors[-1].message


def test_a_ready_job_past_its_deadline_expires_at_claim(store):
    start = now_ms()
    late, plain = add(store, record(expires_at_ms=start + MINUTE), record())
    assert claimed(store, start + 2 * MINUTE) == [plain]
    assert_expired(store, late, start + 2 * MINUTE)
    counts = store.stats()
    assert counts["expired"] == 1 and counts["ready"] == 0 and counts["processing"] == 1
    assert counts["total"] == 2
    assert claimed(store, start + 3 * MINUTE) == []
    clean(store)


def test_a_job_claimed_before_its_deadline_runs_and_ends_as_usual(store):
    start = now_ms()
    (job,) = add(store, record(run_at_ms=start, expires_at_ms=start + MINUTE))
    assert claimed(store, start) == [job]
    assert done(store, job, 7, now=start + 2 * MINUTE)  # finishing late is no expiry
    assert states(store, job) == ["done"]
    assert store.stats()["expired"] == 0
    clean(store)


def test_a_claim_takes_its_limit_past_expired_jobs(store):
    start = now_ms()
    late = add(store, *[record(expires_at_ms=start + MINUTE) for _ in range(3)])
    plain = add(store, record(), record())
    got = store.claim("w1", 2, start + 2 * MINUTE)
    want = 1 if store.mode == "legacy" else 2  # the legacy layout claims one per poll
    assert sorted(r.id for r in got) == sorted(plain[:want])
    assert states(store, *late) == ["expired"] * 3
    clean(store)


def test_a_scheduled_job_past_its_deadline_expires_at_promotion(store):
    start = now_ms()
    (late,) = add(store, record(run_at_ms=start + MINUTE, expires_at_ms=start + 2 * MINUTE))
    (on_time,) = add(store, record(run_at_ms=start + MINUTE, expires_at_ms=start + 5 * MINUTE))
    store.promote_due(start + 3 * MINUTE)
    if store.mode != "legacy":  # the legacy layout never promotes: its claim sees it
        assert_expired(store, late, start + 3 * MINUTE)
        assert store.stats()["scheduled"] == 0
    assert claimed(store, start + 3 * MINUTE) == [on_time]
    assert_expired(store, late, start + 3 * MINUTE)
    assert store.next_run_at_ms() is None
    clean(store)


def test_a_job_that_started_is_not_expired_on_its_retry(store):
    start = now_ms()
    (job,) = add(store, record(retries=2, run_at_ms=start, expires_at_ms=start + MINUTE))
    assert claimed(store, start) == [job]
    assert failed(store, job, now=start)  # a retry: scheduled with backoff
    assert claimed(store, start + 2 * MINUTE) == [job]
    assert store.get(job).attempts == 2
    clean(store)


def test_a_job_put_back_uncharged_can_still_expire(store):
    start = now_ms()
    (job,) = add(store, record(expires_at_ms=start + MINUTE))
    claim_all(store, "gone", now=start)
    assert store.requeue_server("gone") == [job]  # its run never counted
    assert claimed(store, start + 2 * MINUTE) == []
    assert_expired(store, job, start + 2 * MINUTE)
    clean(store)


def test_dependents_of_an_expired_job_settle_as_for_a_dead_one(store):
    start = now_ms()
    (dep,) = add(store, record(expires_at_ms=start + MINUTE))
    (child,) = add(store, record(depends_on=(dep,)))
    (grandchild,) = add(store, record(depends_on=(child,)))
    (tolerant,) = add(store, record(depends_on=(dep,), allow_failures=True))
    assert claimed(store, start + 2 * MINUTE) == [tolerant]
    assert states(store, dep, child, grandchild) == ["expired", "cancelled", "cancelled"]
    reason = store.get(child).errors[-1].message
    assert dep in reason and "expired before it started" in reason
    assert dep in store.get(grandchild).errors[-1].message
    (late_comer,) = add(store, record(depends_on=(dep,)))  # cancelled as it enters
    assert states(store, late_comer) == ["cancelled"]
    counts = store.stats()
    assert counts["expired"] == 1 and counts["cancelled"] == 3 and counts["waiting"] == 0
    clean(store)


def test_a_waiting_job_past_its_deadline_expires_when_released(store):
    start = now_ms()
    (dep,) = add(store, record(run_at_ms=start))  # due at ``start``: the claim below
    (waiting,) = add(store, record(depends_on=(dep,), expires_at_ms=start + MINUTE))
    (after,) = add(store, record(depends_on=(waiting,)))
    assert claimed(store, start) == [dep]
    assert states(store, waiting) == ["waiting"]  # past its deadline, still waiting
    assert done(store, dep, 1, now=start + 2 * MINUTE)
    assert_expired(store, waiting, start + 2 * MINUTE)
    assert states(store, after) == ["cancelled"]
    assert claimed(store, start + 3 * MINUTE) == []
    counts = store.stats()
    assert counts["waiting"] == 0 and counts["expired"] == 1
    clean(store)


def test_an_expired_job_frees_its_unique_key(store):
    start = now_ms()
    first = record(key="k", expires_at_ms=start + MINUTE)
    add(store, first)
    again = record(key="k")
    add(store, again)
    assert again.id == first.id  # held: the first is returned
    claim_all(store, now=start + 2 * MINUTE)
    assert_expired(store, first.id, start + 2 * MINUTE)
    fresh = record(key="k")
    add(store, fresh)
    assert fresh.id != first.id and states(store, fresh.id) == ["ready"]
    clean(store)


def test_expired_jobs_are_listed_deleted_and_cleaned_by_retention(store):
    start = now_ms()
    a, b, plain = add(
        store,
        record(expires_at_ms=start + MINUTE),
        record(expires_at_ms=start + MINUTE),
        record(),
    )
    claim_all(store, now=start + 2 * MINUTE)
    assert sorted(r.id for r in store.list(state=JobState.EXPIRED)) == sorted([a, b])
    assert [r.id for r in store.list(ADD, JobState.EXPIRED, limit=1)] == [min(a, b)]
    assert store.delete(a) is True and store.get(a) is None
    assert store.stats()["expired"] == 1
    assert store.expire_finished(start + 2 * MINUTE) == 0  # finished at that ms, not before
    assert store.expire_finished(start + 2 * MINUTE + 1) == 1
    assert store.get(b) is None and store.stats()["expired"] == 0
    assert states(store, plain) == ["processing"]
    clean(store)


def test_cancel_leaves_an_expired_job_as_it_is(store):
    start = now_ms()
    (job,) = add(store, record(expires_at_ms=start + MINUTE))
    claim_all(store, now=start + 2 * MINUTE)
    report = store.cancel([job], "too late", start + 3 * MINUTE)
    assert report.finished == [job] and report.cancelled == []
    assert_expired(store, job, start + 2 * MINUTE)


def test_a_job_without_expiry_is_untouched_by_time(store):
    start = now_ms()
    (job,) = add(store, record())
    assert store.get(job).expires_at_ms is None
    far = start + 10_000 * 24 * 3_600_000  # 10,000 days on
    assert claimed(store, far) == [job]


# ---- expired at the start: claimed in time, reached by its server after the deadline --


def test_a_claimed_job_reported_expired_ends_as_its_claim_would_have(store):
    """``finish([Outcome.expired])``: a server found a job it had claimed (in time)
    past its deadline when it was about to start it. It ends expired, uncharged, with
    the claim's history entry; its dependents settle as for a dead job; its key is free;
    a done job finished in the same batch ends as usual."""
    start = now_ms()
    late = record(key="k", expires_at_ms=start + MINUTE)
    (dep,) = add(store, late)
    (child,) = add(store, record(depends_on=(dep,)))
    (grandchild,) = add(store, record(depends_on=(child,)))
    (tolerant,) = add(store, record(depends_on=(dep,), allow_failures=True))
    (other,) = add(store, record())
    got = claimed(store, start + 1000)  # the legacy poll reads run times: after theirs
    assert dep in got and other in got
    assert store.get(dep).attempts == 1
    at = start + 2 * MINUTE
    outcomes = [Outcome.expired(dep, "w1"), Outcome.done(other, "w1", dump_result(1))]
    assert store.finish(outcomes, at) == [True, True]
    assert_expired(store, dep, at)
    assert store.get(dep).errors[-1] == expiry_entry(start + MINUTE, at)  # the claim's entry
    assert states(store, other) == ["done"]
    assert states(store, child, grandchild) == ["cancelled", "cancelled"]
    assert "expired before it started" in store.get(child).errors[-1].message
    assert states(store, tolerant) == ["ready"]
    assert store.claims() == []
    counts = store.stats()
    assert counts["expired"] == 1 and counts["processing"] == 0 and counts["cancelled"] == 2
    assert [r.id for r in store.list(state=JobState.EXPIRED)] == [dep]
    again = record(key="k")
    add(store, again)
    assert again.id != dep and states(store, again.id) == ["ready"]  # the key is free
    # Retention takes it (filed in the expired index), the done job and the two cancelled.
    assert store.expire_finished(at + 1) == 4
    assert store.get(dep) is None
    clean(store)


def test_a_late_expired_outcome_changes_nothing(store):
    start = now_ms()
    (job,) = add(store, record(run_at_ms=start, expires_at_ms=start + MINUTE))
    assert claimed(store, start) == [job]
    assert store.finish([Outcome.expired(job, "someone-else")], start + 2 * MINUTE) == [False]
    assert states(store, job) == ["processing"] and store.get(job).attempts == 1
    assert done(store, job, 3, now=start + 2 * MINUTE)
    assert store.finish([Outcome.expired(job, "w1")], start + 3 * MINUTE) == [False]
    assert states(store, job) == ["done"]
    clean(store)


def test_a_cancel_requested_first_wins_over_an_expired_start(store):
    start = now_ms()
    (job,) = add(store, record(run_at_ms=start, expires_at_ms=start + MINUTE))
    assert claimed(store, start) == [job]
    assert store.cancel([job], "stop it", start).requested == [job]
    assert store.finish([Outcome.expired(job, "w1")], start + 2 * MINUTE) == [True]
    rec = store.get(job)
    assert rec.state is JobState.CANCELLED and rec.errors[-1].message == "stop it"
    clean(store)


# ---- the task API -------------------------------------------------------------------


def test_every_enqueue_path_sets_the_deadline(queue, store):
    task = queue.task_by_name(ADD)
    before = now_ms()
    jobs = [
        task.delay(1, 2, expires=60),
        task.schedule((1, 2), delay=10, expires=60.5),
        *task.map([(1, 2), (3, 4)], expires=60),
        task.options(expires=60).delay(1, 2),
        queue.submit(lambda x: x, 1, expires=60),
    ]
    for job in jobs:
        deadline = store.get(job.id).expires_at_ms
        assert before + 60_000 <= deadline <= now_ms() + 60_500, job
        assert job.expires_at == datetime.fromtimestamp(deadline / 1000, timezone.utc)
    assert store.get(jobs[0].id).payload == jobs[0].record.payload  # not an argument
    assert jobs[0].args() == ((1, 2), {})
    last = chain(task.s(1, 2, expires=60), task.s(3)).delay()
    first_id = last.depends_on[0]
    assert store.get(first_id).expires_at_ms is not None
    assert store.get(last.id).expires_at_ms is None
    assert task.delay(1, 2).record.expires_at_ms is None
    clean(store)


def test_a_datetime_deadline_and_the_result_of_an_expired_job(queue, store):
    task = queue.task_by_name(ADD)
    deadline = datetime.now(timezone.utc) + timedelta(minutes=10)
    job = task.delay(1, 2, expires=deadline)
    deadline_ms = int(deadline.timestamp() * 1000)
    assert store.get(job.id).expires_at_ms == deadline_ms
    assert claim_all(store, now=deadline_ms - 1) != []  # claimed just before: runs
    other = task.delay(1, 2, expires=deadline.astimezone(timezone(timedelta(hours=5))))
    assert store.get(other.id).expires_at_ms == deadline_ms  # one moment, any zone
    assert claim_all(store, now=deadline_ms) == []
    with pytest.raises(JobExpired, match=f"job {other.id} expired: Expired: not started"):
        other.result(timeout=5)
    assert other.state == "expired" and other.error.kind == "expired"


BAD_EXPIRES = [
    (-1, "a number > 0"),
    (0, "a number > 0"),
    (math.nan, "a number > 0"),
    (math.inf, "a number > 0"),
    (True, "a number > 0"),
    ("60", "a number > 0"),
    (datetime(2030, 1, 1), "timezone-aware"),
    (datetime(2000, 1, 1, tzinfo=timezone.utc), "could never start"),
    (10**400, "a number > 0"),
    (1e12, "at most"),
]


@pytest.mark.parametrize(("expires", "message"), BAD_EXPIRES)
def test_a_bad_expires_is_one_line_and_changes_nothing(queue, store, expires, message):
    task = queue.task_by_name(ADD)
    before = store.stats()
    calls = [
        lambda: task.delay(1, 2, expires=expires),
        lambda: task.schedule((1, 2), expires=expires),
        lambda: task.map([(1, 2)], expires=expires),
    ]
    if message != "could never start":  # a value refused before any job has a time
        calls += [
            lambda: task.s(1, 2, expires=expires),
            lambda: task.options(expires=expires),
            lambda: queue.task(expires=expires),
        ]
    for call in calls:
        with pytest.raises(ConfigError, match=message) as info:
            call()
        assert "\n" not in str(info.value)
    assert store.stats() == before


def test_a_deadline_before_the_run_time_is_refused(queue, store):
    task = queue.task_by_name(ADD)
    with pytest.raises(ConfigError, match="could never start"):
        task.schedule((1, 2), delay=60, expires=30)
    at = datetime.now(timezone.utc) + timedelta(hours=1)
    with pytest.raises(ConfigError, match="could never start"):
        task.schedule((1, 2), at=at, expires=at)
    assert store.stats()["total"] == 0
