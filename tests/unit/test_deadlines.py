"""serve/deadlines.py: when a job's child is killed, and what the job is charged."""

from __future__ import annotations

import subprocess

import pytest

from mpqueue.records import JobRecord, JobState
from mpqueue.serve.deadlines import Deadlines, kill_at, timeout_error
from mpqueue.serve.ledger import Ledger
from mpqueue.serve.pool import Slot

A, B = "a" * 32, "b" * 32


def _ledger(*recs: JobRecord) -> Ledger:
    ledger = Ledger("server")
    for rec in recs:
        ledger.claim(rec)
    return ledger


def _slot(*job_ids: str, head_since: float = 100.0, process: object = None) -> Slot:
    slot = Slot(process, None, head_since=head_since)  # type: ignore[arg-type]
    slot.inflight.extend(job_ids)
    return slot


def _rec(job_id: str, timeout_s: float | None) -> JobRecord:
    return JobRecord(job_id, "t", JobState.PROCESSING, b"", attempts=2, timeout_s=timeout_s)


def test_the_kill_comes_a_grace_after_the_timeout():
    assert kill_at(100.0, 5.0, 2.0) == 107.0
    assert kill_at(100.0, None, 2.0) is None
    assert kill_at(100.0, 0, 2.0) is None


def test_only_a_head_job_with_a_timeout_has_a_deadline():
    deadlines = Deadlines(_ledger(_rec(A, 5.0), _rec(B, None)), grace_s=2.0)
    assert deadlines.of(_slot(A, B)) == 107.0
    assert deadlines.of(_slot(B, A)) is None  # the head has none; A has not started
    assert deadlines.of(_slot()) is None
    assert deadlines.of(_slot("c" * 32)) is None  # a record the server does not know
    killed = _slot(A)
    killed.killed = True
    assert deadlines.of(killed) is None  # charged already
    assert deadlines.next([_slot(A, head_since=50.0), _slot(A), _slot(B)]) == 57.0
    assert deadlines.next([_slot(B)]) is None


@pytest.mark.timeout(30)
def test_an_overdue_child_is_killed_and_its_head_charged():
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        deadlines = Deadlines(_ledger(_rec(A, 5.0), _rec(B, 5.0)), grace_s=2.0)
        overdue, on_time = _slot(A, B, process=sleeper), _slot(B, head_since=101.0)
        assert deadlines.kill_overdue([overdue, on_time], now=106.9) == []
        ((job_id, error),) = deadlines.kill_overdue([overdue, on_time], now=107.0)
        assert job_id == A and list(overdue.inflight) == [B] and overdue.killed
        assert (error.type, error.kind, error.attempt) == ("JobTimeout", "timeout", 2)
        assert "timeout of 5.0 s and was killed" in error.message
        assert sleeper.wait(10) == -9
        assert not on_time.killed and list(on_time.inflight) == [B]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_timeout_error_names_the_limit():
    error = timeout_error(_rec(A, 1.5))
    assert error.message == "job exceeded its timeout of 1.5 s and was killed"
