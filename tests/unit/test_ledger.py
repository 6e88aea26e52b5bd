"""serve/ledger.py: outcomes wait until committed, and committing settles the books."""

from __future__ import annotations

import logging
from collections import deque

from mpqueue.records import Claim, ErrorInfo, JobRecord, JobState
from mpqueue.serve.ledger import Ledger, stray_claims

A, B, C = "a" * 32, "b" * 32, "c" * 32


def _rec(job_id: str, attempts: int = 1, max_retries: int = 3) -> JobRecord:
    return JobRecord(
        job_id, "task", JobState.PROCESSING, b"", attempts=attempts, max_retries=max_retries
    )


def test_outcomes_wait_until_committed_then_are_counted():
    ledger = Ledger("server")
    for rec in (_rec(A), _rec(B), _rec(C)):
        ledger.claim(rec)
    ledger.done(A, b"result")
    ledger.failed(B, ErrorInfo("ValueError", "x"), retryable=True, retry_delay_s=None)
    ledger.release([C])
    ledger.note_waiting(5.0)
    ledger.note_waiting(6.0)  # the clock runs from the oldest
    assert ledger.outcomes_since == 5.0
    assert ledger.settling() == {A, B, C}
    assert [o.kind for o in ledger.outcomes] == ["done", "failed", "released"]
    assert all(o.server_id == "server" for o in ledger.outcomes)

    ledger.committed(ledger.outcomes)
    assert ledger.outcomes == [] and ledger.outcomes_since is None
    stats = ledger.stats
    assert (stats.done, stats.retried, stats.dead, stats.released) == (1, 1, 0, 1)
    assert ledger.claimed == {}
    assert ledger.retrying == {B}
    ledger.claim(_rec(B, attempts=2))  # claimed again: no longer waiting for its retry
    assert ledger.retrying == set()


def test_a_failure_past_its_retries_or_not_retryable_is_dead(caplog):
    ledger = Ledger("server")
    ledger.claim(_rec(A, attempts=4, max_retries=3))
    ledger.claim(_rec(B, attempts=1))
    ledger.failed(A, ErrorInfo("ValueError", "x"), retryable=True, retry_delay_s=None)
    ledger.failed(B, ErrorInfo("BadSignature", "x"), retryable=False, retry_delay_s=None)
    with caplog.at_level(logging.WARNING, logger="mpqueue.serve"):
        ledger.committed(ledger.outcomes)
    assert ledger.stats.dead == 2 and ledger.retrying == set()
    assert f"job {A} (task) is dead after 4 attempt(s)" in caplog.text


def test_a_crash_is_retried_at_once_and_other_charges_keep_the_backoff():
    ledger = Ledger("server")
    ledger.charge(A, ErrorInfo("WorkerCrashed", "killed", kind="crash"))
    ledger.charge(B, ErrorInfo("JobTimeout", "late", kind="timeout"))
    crash, timeout = ledger.outcomes
    assert crash.retry_delay_s == 0.0 and crash.retryable
    assert timeout.retry_delay_s is None and timeout.retryable


def test_attempt_is_known_only_for_claimed_jobs():
    ledger = Ledger("server")
    ledger.claim(_rec(A, attempts=3))
    assert ledger.attempt(A) == 3 and ledger.attempt(B) == 0


def test_release_all_empties_a_childs_queue_in_order():
    ledger = Ledger("server")
    inflight = deque([A, B])
    ledger.release_all(inflight)
    assert not inflight
    assert [(o.job_id, o.kind) for o in ledger.outcomes] == [(A, "released"), (B, "released")]


def test_take_hands_over_every_pending_outcome():
    ledger = Ledger("server")
    ledger.done(A, b"")
    outcomes = ledger.take()
    assert [o.job_id for o in outcomes] == [A] and ledger.outcomes == []


def test_stray_claims_are_held_by_no_child_and_handed_to_no_live_one():
    claims = [
        Claim(A, "server", 0),  # a child holds it
        Claim(B, "server", 0, child_pid=42),  # handed to a live child, not taken yet
        Claim(C, "server", 0, child_pid=43),  # handed to a child that is gone
    ]
    assert stray_claims(claims, held={A}, live_pids={42}) == [C]
    assert stray_claims(claims, held=set(), live_pids=set()) == [A, B, C]


def test_job_lines_are_logged_at_settling_only_when_info_is_on(caplog):
    quiet = Ledger("server")  # the default level: nothing kept, nothing built
    assert quiet.durations is None
    with caplog.at_level(logging.INFO, logger="mpqueue.jobs"):
        ledger = Ledger("server")
        ledger.claim(_rec(A))
        ledger.claim(_rec(B, attempts=4, max_retries=3))
        ledger.ran(A, 0.5)
        ledger.done(A, b"")
        ledger.charge(B, ErrorInfo("WorkerCrashed", "killed", kind="crash"))
        ledger.release([C])
        ledger.committed(ledger.outcomes)
    lines = [r for r in caplog.records if r.name == "mpqueue.jobs"]
    assert [(r.fields["job_id"], r.fields["outcome"], r.fields["duration_s"]) for r in lines] == [
        (A, "done", 0.5),
        (B, "dead", None),  # no duration reported for it
    ]
    assert ledger.durations == {}


def test_a_job_expired_at_its_start_is_counted_and_never_awaited_as_a_retry():
    ledger = Ledger("server")
    ledger.claim(_rec(A, attempts=1, max_retries=0))
    ledger.claim(_rec(B, attempts=1))
    ledger.expired(A)
    ledger.expired(B)
    assert [(o.job_id, o.kind, o.server_id) for o in ledger.outcomes] == [
        (A, "expired", "server"),
        (B, "expired", "server"),
    ]
    ledger.committed(ledger.outcomes)
    stats = ledger.stats
    assert stats.expired == 2 and (stats.done, stats.retried, stats.dead) == (0, 0, 0)
    assert ledger.retrying == set() and ledger.claimed == {}
