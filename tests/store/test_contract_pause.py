"""The store contract, continued: pausing and resuming, through the ``Store``
interface and ``Queue.pause``/``resume``/``paused`` (the fixtures of
``test_contract.py``), on every store: the memory store, LMDB (both layouts) and
PostgreSQL."""

from __future__ import annotations

import pytest

from mpqueue import ConfigError, PauseChange, Paused
from mpqueue.records import JobState, Outcome, now_ms

from ..support.helpers import claim_all, done, failed
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

A = "tests.support.tasks.add"
B = "tests.support.tasks.echo"
LATER = 3_600_000


def claimed(store, now: int | None = None) -> list[str]:
    return sorted(rec.id for rec in claim_all(store, now=now))


def clean(store) -> None:
    report = store.check(holder_gone=lambda server_id: True)
    assert report.inconsistent == [] and report.corrupt == []


def test_a_paused_tasks_jobs_are_not_claimed_until_resumed(store):
    a1, b1, a2 = add(store, record(A), record(B), record(A))
    assert store.pause(A) == PauseChange(A, True, True)
    assert claimed(store) == [b1]
    assert store.stats()["ready"] == 2
    clean(store)
    assert store.resume(A) == PauseChange(A, False, True)
    assert claimed(store) == sorted([a1, a2])
    clean(store)


def test_pausing_everything_stops_every_claim(store):
    a1, b1 = add(store, record(A), record(B))
    assert store.pause(None) == PauseChange(None, True, True)
    assert store.pause(None).changed is False
    assert claimed(store) == []
    assert store.paused() == Paused(all=True)
    assert store.resume(None).changed is True
    assert claimed(store) == sorted([a1, b1])


def test_jobs_becoming_ready_while_paused_are_held(store):
    (dep,) = add(store, record(B))
    (retried,) = add(store, record(A, retries=2))
    store.pause(A)
    assert claimed(store) == [dep]
    store.resume(A)
    assert claimed(store) == [retried]
    store.pause(A)
    assert failed(store, retried)  # a retry: scheduled, then due while paused
    (later,) = add(store, record(A, run_at_ms=now_ms() + 1000))
    (fresh,) = add(store, record(A))
    (dependent,) = add(store, record(A, depends_on=(dep,)))
    assert done(store, dep, 1)  # releases the dependent while paused
    assert claimed(store, now=now_ms() + LATER) == []
    counts = store.stats()  # the legacy layout counts due-ness on the real clock
    assert counts["ready"] + counts["scheduled"] == 4 and counts["processing"] == 0
    clean(store)
    store.resume(A)
    assert claimed(store, now=now_ms() + LATER) == sorted([retried, later, fresh, dependent])
    clean(store)


def test_jobs_put_back_released_or_requeued_while_paused_are_held(store):
    put_back, released, buried, free = add(store, record(A), record(A), record(A), record(B))
    assert claimed(store) == sorted([put_back, released, buried, free])
    assert failed(store, buried, retryable=False)
    store.pause(A)
    assert store.finish([Outcome.released(released, "w1")], now_ms()) == [True]
    assert store.requeue_server("w1") == sorted([put_back, free])  # its server is gone
    assert store.requeue_dead(buried, now_ms()).state is JobState.READY
    assert claimed(store) == [free]
    assert store.stats()["ready"] == 3
    clean(store)
    store.resume(A)
    assert claimed(store) == sorted([put_back, released, buried])
    clean(store)


def test_running_jobs_finish_and_held_jobs_can_be_cancelled_or_deleted(store):
    (running,) = add(store, record(A))
    assert claimed(store) == [running]
    held, gone = add(store, record(A), record(A))
    store.pause(A)
    assert done(store, running, 3)
    assert store.get(running).state.value == "done"
    assert store.cancel([held], "test", now_ms()).cancelled == [held]
    assert store.delete(gone)
    clean(store)
    store.resume(A)
    assert claimed(store) == []
    clean(store)


def test_queue_reports_what_is_paused_and_checks_its_input(store, queue):
    assert queue.paused() == Paused() and not queue.paused()
    assert queue.resume(A) == PauseChange(A, False, False)
    queue.pause(A)
    queue.pause("nobody.registered.this")
    assert queue.paused() == Paused(False, frozenset({A, "nobody.registered.this"}))
    assert queue.paused().as_dict() == {
        "all": False,
        "tasks": sorted([A, "nobody.registered.this"]),
    }
    before = queue.paused()
    for bad in ("", "a\x00b", 7):
        with pytest.raises(ConfigError):
            queue.pause(bad)
    assert queue.paused() == before
