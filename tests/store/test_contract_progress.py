"""The store contract, continued: progress reports, on every backend (the fixtures of
``test_contract.py``), through the ``Store`` interface and ``Queue.run_pending``."""

from __future__ import annotations

from mpqueue import current_job
from mpqueue.records import Progress, new_job_id, now_ms

from ..support.helpers import claim_all, done
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401


def test_progress_is_kept_per_job_and_goes_with_the_job(store):
    a, b = add(store, record(), record())
    assert store.progress([a, b]) == [None, None]
    first = Progress(3.0, 10.0, "loading", now_ms())
    store.record_progress({a: first, new_job_id(): first})  # a missing job: dropped
    assert store.progress([a, b]) == [first, None]
    later = Progress(7.0, None, None, now_ms())
    claim_all(store)
    acks, _ = store.finish_and_claim([], "w1", 0, now_ms(), progress={a: later, b: first})
    assert acks == [] and store.progress([a, b]) == [later, first]
    done(store, a, 1)
    assert store.progress([a]) == [later]  # the last report stays with the ended job
    assert store.delete(a)
    assert store.progress([a, b]) == [None, first]
    report = store.check(holder_gone=lambda server_id: True)
    assert report.inconsistent == [] and report.corrupt == []


def test_a_job_reports_progress_through_run_pending(queue):
    @queue.task
    def counted(n):
        job = current_job()
        for i in range(n):
            job.progress(i + 1, n, f"item {i + 1}")
        return job.id, job.name, job.attempt

    assert current_job() is None
    handle = counted.delay(500)
    queue.run_pending()
    assert handle.result(timeout=1) == (handle.id, counted.name, 1)
    assert current_job() is None
    report = handle.progress
    assert report is not None and (report.done, report.total) == (500.0, 500.0)
    assert report.message == "item 500"  # the throttled last report is sent at the end
