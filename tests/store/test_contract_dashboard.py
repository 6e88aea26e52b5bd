"""The store contract, continued: what the dashboard reads and does (text previews,
newest-first pages by cursor, scheduled re-drive of dead jobs) on every store (the
fixtures of ``test_contract.py``)."""

from __future__ import annotations

import pytest

from mpqueue import previews
from mpqueue.errors import ConfigError, JobNotFound
from mpqueue.records import JobState, now_ms
from mpqueue.store.base import BROWSE_SCAN_MAX
from mpqueue.store.counting import CountingStore

from ..support.helpers import claim_all, done, failed, ids
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, seeded, store, store_location  # noqa: F401

A = "tests.support.tasks.add"
B = "tests.support.tasks.echo"
HOUR_MS = 3_600_000


class Loud:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


def kill(store, *job_ids: str) -> None:
    """Make ready jobs dead (claimed, then failed for good)."""
    claim_all(store)
    for job_id in job_ids:
        assert failed(store, job_id, retryable=False)


def browse_all(store, **filters) -> list[str]:
    """Every job id ``browse`` yields, page after page, and that no page repeats one."""
    seen: list[str] = []
    before = None
    for _ in range(10_000):
        page = store.browse(before=before, limit=7, **filters)
        seen += ids(page.jobs)
        if page.next is None:
            break
        before = page.next
    assert len(seen) == len(set(seen))
    return seen


# ---- previews ----------------------------------------------------------------------------
def test_enqueue_writes_a_preview_of_the_arguments(queue, store):
    add_task = queue.task(name=A)(lambda a, b: a + b)
    job = add_task.delay(1, "<script>alert(1)</script>", key_word=[1, 2])
    assert store.get(job.id).preview == "1, '<script>alert(1)</script>', key_word=[1, 2]"
    (listed,) = store.list()
    assert listed.preview == store.get(job.id).preview  # listings carry it: no unpickling


def test_a_preview_is_capped_and_never_fails_an_enqueue(queue, store):
    echo = queue.task(name=B)(lambda *a: None)
    long_job, loud_job = echo.delay("x" * 10_000, list(range(1000))), echo.delay(Loud())
    text = store.get(long_job.id).preview
    assert len(text) <= previews.PREVIEW_MAX and text.startswith("'xxx")
    assert store.get(loud_job.id).preview.startswith("<Loud")  # reprlib names the type
    many = echo.map([(i,) for i in range(3)])
    assert [store.get(j.id).preview for j in many] == ["0", "1", "2"]


def test_a_done_job_keeps_a_preview_of_its_result(queue, store):
    add_task = queue.task(name=A)(lambda a, b: a + b)
    job = add_task.delay(2, 3)
    assert queue.run_pending() == 1
    rec = store.get(job.id)
    assert rec.state is JobState.DONE and rec.result_preview == "5" and rec.preview == "2, 3"


def test_records_without_previews_show_none(store):
    (old,) = add(store, record())  # as written before previews: no preview at all
    rec = store.get(old)
    assert rec.preview is None and previews.shown(rec.preview) == previews.NO_PREVIEW
    claim_all(store)
    done(store, old, 7)  # an outcome without a preview (an older server's)
    assert store.get(old).result_preview is None


def test_previews_survive_every_change_of_state(store):
    jobs = [record(), record(), record(), record(run_at_ms=now_ms() + HOUR_MS)]
    for n, rec in enumerate(jobs):
        rec.preview = f"arg {n}"
    running, dying, cancelled, scheduled = add(store, *jobs)
    store.cancel([cancelled], "by test", now_ms())
    kill(store, dying)
    store.requeue_dead(dying, now_ms())
    got = store.get_many([running, dying, cancelled, scheduled])
    assert [r.preview for r in got] == ["arg 0", "arg 1", "arg 2", "arg 3"]
    assert got[0].state is JobState.PROCESSING and got[2].state is JobState.CANCELLED


# ---- newest-first pages ------------------------------------------------------------------
def test_browse_pages_newest_first_through_every_filter(store, seeded):
    more = add(store, *(record(B, queue="q") for _ in range(9)))
    newest_first = sorted([*seeded.values(), *more], reverse=True)
    assert browse_all(store) == newest_first
    assert browse_all(store, name=B) == sorted(more, reverse=True)
    assert browse_all(store, queue="q") == sorted(more, reverse=True)
    assert browse_all(store, name=B, queue="default") == []
    for state, job_id in seeded.items():
        expected = [job_id] + (sorted(more, reverse=True) if state == "ready" else [])
        assert browse_all(store, state=JobState(state)) == sorted(expected, reverse=True)
    # a page as list() gives it: no payload, result or callable
    page = store.browse(limit=3)
    assert len(page.jobs) == 3 and page.next == page.jobs[-1].id
    assert all(r.payload == b"" and r.result is None for r in page.jobs)


def test_the_last_page_says_so(store):
    made = add(store, *(record() for _ in range(5)))
    assert store.browse(limit=5).next is None
    first = store.browse(limit=4)
    assert ids(first.jobs) == sorted(made, reverse=True)[:4] and first.next is not None
    last = store.browse(limit=4, before=first.next)
    assert ids(last.jobs) == [min(made)] and last.next is None
    assert store.browse(before=min(made)).jobs == []


def test_a_page_reads_what_it_shows_however_many_jobs(store):
    if store.mode == "legacy":
        pytest.skip("the legacy layout reads records by id, one more get a job")
    many = add(store, *(record(A) for _ in range(3000)))
    add(store, *(record(B) for _ in range(20)))
    dead = many[:30]
    kill(store, *dead)  # the oldest jobs: the newest-first walk reaches them last
    counting = CountingStore(store)
    cursor = sorted(many)[1500]
    for filters in ({}, {"name": A}, {"state": JobState.DEAD}, {"name": A, "before": cursor}):
        page = counting.browse(limit=20, **filters)
        assert len(page.jobs) == 20, filters
        # an index entry and at most one record a job shown, and the one more that says
        # whether a next page exists
        assert counting.last("browse").reads <= 2 * 21 + 3, (filters, counting.last("browse"))
    assert ids(store.browse(state=JobState.DEAD, limit=20).jobs) == sorted(dead)[::-1][:20]


def test_a_sparse_filter_pages_on_in_bounded_steps(store):
    add(store, record(queue="rare"))
    add(store, *(record() for _ in range(BROWSE_SCAN_MAX + 500)))
    counting = CountingStore(store)
    page = counting.browse(queue="rare", limit=10)
    assert counting.last("browse").reads <= BROWSE_SCAN_MAX + 5
    found = ids(page.jobs)
    while page.next is not None:
        page = store.browse(queue="rare", limit=10, before=page.next)
        found += ids(page.jobs)
    assert len(found) == 1


def test_a_small_state_among_many_newer_jobs_fills_its_page(store):
    old = add(store, *(record() for _ in range(10)))
    add(store, *(record(run_at_ms=now_ms() + HOUR_MS) for _ in range(BROWSE_SCAN_MAX + 500)))
    assert browse_all(store, state=JobState.READY) == sorted(old, reverse=True)
    if store.mode == "legacy":
        return  # its queued jobs share one index: it pages on in bounded steps
    counting = CountingStore(store)
    page = counting.browse(state=JobState.READY, limit=20)
    assert ids(page.jobs) == sorted(old, reverse=True) and page.next is None
    assert counting.last("browse").reads <= 2 * 10 + 5, counting.last("browse")


def test_browse_refuses_bad_input(store):
    for bad in ({"limit": 0}, {"limit": 100_000}, {"before": "not-an-id"}, {"limit": True}):
        with pytest.raises(ConfigError):
            store.browse(**bad)


# ---- scheduled re-drive ------------------------------------------------------------------
def test_a_dead_job_requeued_at_a_time_waits_in_the_scheduled_queue(store):
    (job,) = add(store, record(retries=0))
    kill(store, job)
    now = now_ms()
    rec = store.requeue_dead(job, now, run_at_ms=now + HOUR_MS)
    assert rec.state is JobState.SCHEDULED and rec.run_at_ms == now + HOUR_MS
    stored = store.get(job)
    assert stored.state is JobState.SCHEDULED and stored.attempts == 0
    assert store.stats()["dead"] == 0 and store.stats()["scheduled"] == 1
    assert store.next_run_at_ms() == now + HOUR_MS
    assert claim_all(store, now=now + 1) == []  # not before its time
    (claimed,) = claim_all(store, now=now + HOUR_MS)
    assert claimed.id == job and claimed.attempts == 1
    assert store.check(lambda server_id: True).code == 0


def test_a_re_drive_at_a_past_time_is_ready_now(store):
    (job,) = add(store, record())
    kill(store, job)
    now = now_ms()
    assert store.requeue_dead(job, now, run_at_ms=now - 5).state is JobState.READY
    assert store.get(job).run_at_ms == now


def test_requeue_many_requeues_the_dead_and_names_the_rest(store):
    dead1, dead2, alive, _ = add(store, record(), record(), record(), record())
    kill(store, dead1, dead2)
    missing = record().id
    now = now_ms()
    report = store.requeue_dead_many([dead1, alive, missing, dead2], now, now + HOUR_MS)
    assert report.requeued == [dead1, dead2]
    assert set(report.refused) == {alive, missing}
    assert "only dead jobs" in report.refused[alive] and "no job" in report.refused[missing]
    assert store.get(alive).state is JobState.PROCESSING  # left as it was
    assert [store.get(j).state for j in (dead1, dead2)] == [JobState.SCHEDULED] * 2
    assert store.stats()["dead"] == 0
    assert store.check(lambda server_id: True).code == 0


def test_requeue_of_a_job_that_is_not_dead_changes_nothing(store):
    (job,) = add(store, record())
    with pytest.raises(ConfigError):
        store.requeue_dead(job, now_ms(), run_at_ms=now_ms() + HOUR_MS)
    with pytest.raises(JobNotFound):
        store.requeue_dead(record().id, now_ms())
    assert store.get(job).state is JobState.READY and store.stats()["scheduled"] == 0


def test_a_re_drive_at_a_time_that_is_not_one_changes_nothing(store):
    dead, other = add(store, record(), record())
    kill(store, dead, other)
    for bad in (-1, 2**70, 1.5, True, "soon"):
        with pytest.raises(ConfigError):
            store.requeue_dead(dead, now_ms(), run_at_ms=bad)
        with pytest.raises(ConfigError):
            store.requeue_dead_many([dead, other], now_ms(), run_at_ms=bad)
    assert store.stats()["dead"] == 2
