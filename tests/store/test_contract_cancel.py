"""The store contract, continued: cancelling, on every backend (the fixtures of
``test_contract.py``: LMDB in both layouts, PostgreSQL and memory), through the
``Store`` interface and ``Queue.cancel``."""

from __future__ import annotations

import pytest

from mpqueue import ConfigError, JobCancelled
from mpqueue.cancellation import BULK_BATCH, cancel_all, request_text
from mpqueue.records import JobState, Outcome, new_job_id, now_ms
from mpqueue.serializer import dump_result

from ..support.helpers import claim_all, done, failed, snapshot
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

TEXT = "cancelled by a test"


def states(store, *job_ids: str) -> list[str]:
    return [store.get(job_id).state.value for job_id in job_ids]


def clean(store) -> None:
    report = store.check(holder_gone=lambda server_id: True)
    assert report.inconsistent == [] and report.corrupt == []


def test_queued_jobs_end_cancelled_at_once(store):
    ready, scheduled = add(store, record(), record(run_at_ms=now_ms() + 3_600_000))
    (waiting,) = add(store, record(depends_on=(ready,)))
    report = store.cancel([ready, scheduled, waiting], TEXT, now_ms())
    assert sorted(report.cancelled) == sorted([ready, scheduled, waiting])
    assert report.requested == report.finished == report.missing == []
    assert states(store, ready, scheduled, waiting) == ["cancelled"] * 3
    for job_id in (ready, scheduled, waiting):
        rec = store.get(job_id)
        assert rec.errors[-1].kind == "cancelled" and rec.errors[-1].message == TEXT
        assert rec.finished_at_ms is not None and rec.result is None
    counts = store.stats()
    assert counts["cancelled"] == 3 and counts["ready"] == counts["scheduled"] == 0
    assert counts["waiting"] == 0
    assert claim_all(store) == [] and store.next_run_at_ms() is None
    clean(store)


def test_cancel_reports_finished_and_missing_jobs_and_changes_nothing_else(store):
    a, b, c = add(store, record(), record(retries=0), record())
    claim_all(store)
    done(store, a, 1)
    failed(store, b)
    ghost = new_job_id()
    before = snapshot_of(store, a, b)
    report = store.cancel([a, b, ghost, a, c], TEXT, now_ms())
    assert report.finished == [a, b] and report.missing == [ghost]
    assert report.cancelled == [] and report.requested == [c]
    assert snapshot_of(store, a, b) == before
    clean(store)


def snapshot_of(store, *job_ids):
    return [(r.state, r.result, r.errors, r.finished_at_ms) for r in store.get_many(job_ids)]


def test_a_running_job_gets_a_request_and_any_outcome_then_cancels_it(store):
    jobs = add(store, record(), record(), record(), record())
    claim_all(store, "w1")
    report = store.cancel(jobs, TEXT, now_ms())
    assert report.requested == jobs and report.cancelled == []
    assert states(store, *jobs) == ["processing"] * 4  # its server stops it
    assert store.cancel_requests("w1") == sorted(jobs) and store.cancel_requests("w2") == []
    clean(store)
    outcomes = [
        Outcome.done(jobs[0], "w1", dump_result(1)),
        Outcome.failed(jobs[1], "w1", error_info(), retryable=True),
        Outcome.released(jobs[2], "w1"),
        Outcome.failed(jobs[3], "w1", error_info(), retryable=False),
    ]
    assert store.finish(outcomes, now_ms()) == [True] * 4
    for job_id in jobs:
        rec = store.get(job_id)
        assert rec.state is JobState.CANCELLED and rec.result is None, rec
        assert rec.errors[-1].kind == "cancelled" and rec.errors[-1].message == TEXT
    assert store.cancel_requests("w1") == [] and store.stats()["cancelled"] == 4
    assert claim_all(store) == []
    clean(store)


def error_info():
    from ..support.helpers import error

    return error()


def test_an_outcome_committed_before_the_cancel_wins(store):
    (a,) = add(store, record())
    claim_all(store)
    assert done(store, a, 42)
    assert store.cancel([a], TEXT, now_ms()).finished == [a]
    assert store.get(a).state is JobState.DONE


def test_a_second_request_keeps_the_first_text(store):
    (a,) = add(store, record())
    claim_all(store)
    store.cancel([a], "first", now_ms())
    assert store.cancel([a], "second", now_ms()).requested == [a]
    done(store, a, 1)
    assert store.get(a).errors[-1].message == "first"


def test_putting_back_a_dead_servers_jobs_ends_requested_ones_cancelled(store):
    a, b = add(store, record(), record())
    claim_all(store, "gone")
    store.cancel([a], TEXT, now_ms())
    assert sorted(store.requeue_server("gone")) == sorted([a, b])
    assert states(store, a, b) == ["cancelled", "ready"]
    rec = store.get(a)
    assert rec.attempts == 1 and rec.errors[-1].message == TEXT
    assert store.cancel_requests("gone") == []
    clean(store)


def test_deleting_a_running_job_takes_its_request(store):
    (a,) = add(store, record())
    claim_all(store)
    store.cancel([a], TEXT, now_ms())
    assert store.delete(a)
    assert store.cancel_requests("w1") == []
    clean(store)


def test_cancelling_a_dependency_cancels_its_dependents(store):
    (a,) = add(store, record())
    (b,) = add(store, record(depends_on=(a,)))
    (c,) = add(store, record(depends_on=(b,)))
    (tolerant,) = add(store, record(depends_on=(a,), allow_failures=True))
    store.cancel([a], TEXT, now_ms())
    assert states(store, a, b, c, tolerant) == ["cancelled", "cancelled", "cancelled", "ready"]
    assert f"dependency {a}" in store.get(c).errors[-1].message
    clean(store)


def test_a_running_dependencys_cancel_cancels_its_dependents_when_it_ends(store):
    (a,) = add(store, record())
    (b,) = add(store, record(depends_on=(a,)))
    claim_all(store)
    store.cancel([a], TEXT, now_ms())
    assert states(store, b) == ["waiting"]
    done(store, a, 1)
    assert states(store, a, b) == ["cancelled", "cancelled"]
    clean(store)


def test_a_cancelled_jobs_key_is_free_again(store):
    (a,) = add(store, record(key="k"))
    store.cancel([a], TEXT, now_ms())
    (b,) = add(store, record(key="k"))
    assert b != a and states(store, b) == ["ready"]


@pytest.mark.parametrize("limit", [1, 3, BULK_BATCH])
def test_bulk_cancel_by_name_and_state_in_batches(store, limit):
    other = "tests.support.tasks.other"
    ready = add(store, *[record() for _ in range(7)])
    later = add(store, *[record(run_at_ms=now_ms() + 3_600_000) for _ in range(2)])
    elsewhere = add(store, record(other), record(other))
    report = cancel_all(store, "tests.support.tasks.add", (JobState.READY,), TEXT, batch=limit)
    assert sorted(report.cancelled) == sorted(ready)
    assert states(store, *later, *elsewhere) == ["scheduled"] * 2 + ["ready"] * 2
    report = cancel_all(store, None, (JobState.SCHEDULED, JobState.READY), TEXT, batch=limit)
    assert sorted(report.cancelled) == sorted(later + elsewhere)
    assert store.stats()["cancelled"] == 11
    clean(store)


def test_bulk_cancel_of_running_jobs_requests_each_once(store):
    jobs = add(store, *[record() for _ in range(5)])
    claim_all(store, "w1")
    first = cancel_all(store, None, (JobState.PROCESSING,), TEXT, batch=2)
    assert sorted(first.requested) == sorted(jobs)
    again = cancel_all(store, None, (JobState.PROCESSING,), TEXT, batch=2)
    assert again.requested == [] and again.cancelled == []
    assert store.cancel_requests("w1") == sorted(jobs)


def test_bulk_cancel_walks_past_jobs_it_leaves(store):
    """Jobs of the task in other states are stepped over once, not read again per batch."""
    done_ids = add(store, *[record() for _ in range(6)])
    claim_all(store)
    for job_id in done_ids:
        done(store, job_id, 1)
    ready = add(store, *[record() for _ in range(5)])
    report = cancel_all(store, "tests.support.tasks.add", (JobState.READY,), TEXT, batch=2)
    assert sorted(report.cancelled) == sorted(ready) and report.finished == []


# ---- through Queue ---------------------------------------------------------------------------


def test_queue_cancel_by_id_and_job_cancel(queue):
    task = queue.task_by_name("tests.support.tasks.add")
    a, b = task.delay(1, 2), task.delay(3, 4)
    assert a.cancel(reason="not needed") is True and a.state == "cancelled"
    assert "not needed" in a.error.message and "cancelled by" in a.error.message
    with pytest.raises(JobCancelled):
        a.result(timeout=1)
    assert a.cancel() is False  # ended already
    report = queue.cancel(b.id, b.id)
    assert report.cancelled == [b.id]


def test_queue_cancel_dry_run_changes_nothing(queue):
    task = queue.task_by_name("tests.support.tasks.add")
    jobs = task.map([(i, i) for i in range(4)])
    before = snapshot(queue)
    report = queue.cancel(name=task.name, dry_run=True)
    assert sorted(report.cancelled) == sorted(j.id for j in jobs)
    assert queue.cancel(jobs[0].id, dry_run=True).cancelled == [jobs[0].id]
    assert snapshot(queue) == before
    assert queue.cancel(name=task.name, state="ready").counts()["cancelled"] == 4


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda q: q.cancel(), "give job ids, name= or state="),
        (lambda q: q.cancel("nope"), "not a job id"),
        (lambda q: q.cancel(new_job_id(), name="x"), "not both"),
        (lambda q: q.cancel(state="done"), "cannot cancel jobs in state 'done'"),
        (lambda q: q.cancel(state="bogus"), "cannot cancel jobs in state 'bogus'"),
        (lambda q: q.cancel(name="bad\0name"), "name"),
        (lambda q: q.cancel(state="ready", reason=3), "reason must be a string"),
        (lambda q: q.cancel(state="ready", reason="x" * 1001), "at most 1000"),
    ],
)
def test_bad_cancels_are_refused_and_change_nothing(queue, call, message):
    task = queue.task_by_name("tests.support.tasks.add")
    task.delay(1, 2)
    before = snapshot(queue)
    with pytest.raises(ConfigError, match=message):
        call(queue)
    assert snapshot(queue) == before


def test_the_request_text_names_who_and_why():
    text = request_text("typo in the input")
    assert text.startswith("cancelled by ") and text.endswith(": typo in the input")
    assert "pid" in text


def test_bulk_cancel_of_keyed_jobs_frees_their_keys(store):
    a, b = add(store, record(key="k1"), record(key="k2", priority=3))
    report = cancel_all(store, None, (JobState.READY,), TEXT)
    assert sorted(report.cancelled) == sorted([a, b])
    (c,) = add(store, record(key="k1"))
    assert c != a and states(store, c) == ["ready"]
    rec = store.get(b)
    assert rec.key == "k2" and rec.priority == 3 and rec.errors[-1].message == TEXT
    assert [j.id for j in store.list(state=JobState.CANCELLED)] == sorted([a, b])
    clean(store)
