"""The outcome rule (mpqueue/outcomes.py), one branch per test, without a store."""

from __future__ import annotations

import math
import random

import pytest

from mpqueue.expiry import expired, expiry_entry, is_expired
from mpqueue.limits import DELAY_MAX_S, RUN_AT_MAX_MS
from mpqueue.outcomes import NO_ERROR, Applied, Destination, apply_outcome
from mpqueue.records import ErrorInfo, JobRecord, JobState, Outcome

NOW_MS = 1_700_000_000_000
OLD_ERROR = ErrorInfo("ValueError", "first run", attempt=1)
BOOM = ErrorInfo("RuntimeError", "boom", attempt=2, at_ms=NOW_MS)


def claimed(attempts: int = 1, max_retries: int = 3, **changes: object) -> JobRecord:
    """A job in processing, as a claim leaves it (the attempt already counted)."""
    fields: dict[str, object] = {
        "id": "0" * 32,
        "name": "t.job",
        "state": JobState.PROCESSING,
        "payload": b"\x01payload",
        "priority": 5,
        "seq": 42,
        "run_at_ms": NOW_MS - 10,
        "attempts": attempts,
        "max_retries": max_retries,
        "errors": (OLD_ERROR,),
        "backoff_base_s": 1.0,
        "backoff_cap_s": 300.0,
    }
    fields.update(changes)
    return JobRecord(**fields)  # type: ignore[arg-type]


def fail(record: JobRecord, **options: object) -> Applied:
    outcome = Outcome.failed(record.id, "s1", BOOM, **options)  # type: ignore[arg-type]
    return apply_outcome(record, outcome, NOW_MS, random.Random(0))


def test_done_keeps_the_result_and_the_finish_time() -> None:
    record = claimed()
    applied = apply_outcome(
        record, Outcome.done(record.id, "s1", b"result"), NOW_MS, random.Random(0)
    )
    assert applied.destination is Destination.DONE
    assert applied.record.state is JobState.DONE
    assert applied.record.result == b"result"
    assert applied.record.finished_at_ms == NOW_MS
    assert applied.record.attempts == 1 and applied.record.errors == (OLD_ERROR,)
    assert applied.error is None and applied.dead_reason == ""
    assert record.state is JobState.PROCESSING  # the record passed in is not changed


def test_released_goes_back_to_ready_uncharged_at_its_seq() -> None:
    record = claimed(attempts=2)
    applied = apply_outcome(record, Outcome.released(record.id, "s1"), NOW_MS, random.Random(0))
    assert applied.destination is Destination.RELEASED
    assert applied.record.state is JobState.READY
    assert applied.record.attempts == 1
    assert applied.record.seq == 42 and applied.record.run_at_ms == record.run_at_ms
    assert applied.record.errors == (OLD_ERROR,) and applied.record.finished_at_ms is None
    assert applied.error is None and applied.dead_reason == ""


def test_a_failure_with_retries_left_is_scheduled_at_a_backoff() -> None:
    applied = fail(claimed(attempts=2))
    assert applied.destination is Destination.SCHEDULED
    assert applied.record.state is JobState.SCHEDULED
    assert applied.record.errors == (OLD_ERROR, BOOM) and applied.error is BOOM
    # Retry 2 of base 1 s: a nominal 2 s, jittered into its upper half.
    assert NOW_MS + 1000 <= applied.record.run_at_ms <= NOW_MS + 2000
    assert applied.record.finished_at_ms is None and applied.dead_reason == ""
    assert applied.record.seq == 42  # the store gives a retry its new seq when it queues it


def test_the_jitter_comes_from_the_random_source_passed_in() -> None:
    record = claimed(attempts=3)
    outcome = Outcome.failed(record.id, "s1", BOOM)
    first = apply_outcome(record, outcome, NOW_MS, random.Random(7)).record.run_at_ms
    again = apply_outcome(record, outcome, NOW_MS, random.Random(7)).record.run_at_ms
    assert first == again


def test_a_non_retryable_failure_is_dead_at_once() -> None:
    applied = fail(claimed(attempts=1), retryable=False)
    assert applied.destination is Destination.DEAD
    assert applied.record.state is JobState.DEAD
    assert applied.record.finished_at_ms == NOW_MS
    assert applied.record.errors == (OLD_ERROR, BOOM)
    assert applied.dead_reason == "RuntimeError: boom"


def test_a_failure_with_retries_used_up_is_dead() -> None:
    assert fail(claimed(attempts=3, max_retries=3)).destination is Destination.SCHEDULED
    applied = fail(claimed(attempts=4, max_retries=3))
    assert applied.destination is Destination.DEAD
    assert applied.dead_reason == str(BOOM)
    assert fail(claimed(attempts=1, max_retries=0)).destination is Destination.DEAD


def test_a_failure_without_an_error_records_the_unknown_one() -> None:
    record = claimed(attempts=9, max_retries=3)
    outcome = Outcome("0" * 32, "s1", "failed")
    applied = apply_outcome(record, outcome, NOW_MS, random.Random(0))
    assert NO_ERROR == ErrorInfo("Unknown", "no error recorded")
    assert applied.error == NO_ERROR and applied.record.errors[-1] == NO_ERROR
    assert applied.dead_reason == "Unknown: no error recorded"


def test_an_explicit_retry_delay_replaces_the_backoff() -> None:
    applied = fail(claimed(attempts=1), retry_delay_s=12.5)
    assert applied.record.run_at_ms == NOW_MS + 12_500
    # A task's own delay does not add retries.
    assert fail(claimed(attempts=4), retry_delay_s=1.0).destination is Destination.DEAD


@pytest.mark.parametrize(
    ("delay_s", "expected_ms"),
    [
        (-5.0, NOW_MS),  # negative: now
        (math.nan, NOW_MS),  # NaN: now
        (0.0, NOW_MS),
        (math.inf, NOW_MS + int(DELAY_MAX_S * 1000)),  # at most a century
        (DELAY_MAX_S * 10, NOW_MS + int(DELAY_MAX_S * 1000)),
    ],
)
def test_retry_delays_are_bounded(delay_s: float, expected_ms: int) -> None:
    applied = fail(claimed(attempts=1), retry_delay_s=delay_s)
    assert applied.destination is Destination.SCHEDULED
    assert applied.record.run_at_ms == expected_ms


def test_a_retry_never_runs_past_the_run_at_maximum() -> None:
    late = RUN_AT_MAX_MS - 1000
    record = claimed(attempts=1)
    outcome = Outcome.failed(record.id, "s1", BOOM, retry_delay_s=3600.0)
    applied = apply_outcome(record, outcome, late, random.Random(0))
    assert applied.record.run_at_ms == RUN_AT_MAX_MS


def test_the_backoff_is_capped() -> None:
    applied = fail(claimed(attempts=50, max_retries=100, backoff_cap_s=10.0))
    assert NOW_MS + 5_000 <= applied.record.run_at_ms <= NOW_MS + 10_000


def test_only_a_claimed_job_can_take_an_outcome() -> None:
    record = claimed().evolve(state=JobState.DONE)
    with pytest.raises(AssertionError, match="illegal job transition"):
        apply_outcome(record, Outcome.done(record.id, "s1", b""), NOW_MS, random.Random(0))


def test_expired_at_its_start_ends_as_a_claim_past_its_deadline_would() -> None:
    """A claimed job its server found past its deadline: expired, the attempt its claim
    charged given back (it never ran), with the history entry a claim would write."""
    deadline = NOW_MS - 5
    record = claimed(attempts=1, expires_at_ms=deadline)
    applied = apply_outcome(record, Outcome.expired(record.id, "s1"), NOW_MS, random.Random(0))
    assert applied.destination is Destination.EXPIRED
    assert applied.record.state is JobState.EXPIRED
    assert applied.record.attempts == 0 and applied.record.finished_at_ms == NOW_MS
    assert applied.record.result is None and applied.record.seq == 42
    entry = expiry_entry(deadline, NOW_MS)
    assert applied.record.errors == (OLD_ERROR, entry) and applied.error == entry
    assert entry.kind == "expired" and "not started by its deadline" in entry.message
    queued = record.evolve(state=JobState.READY, attempts=0)
    assert expired(queued, NOW_MS).errors[-1] == entry  # one rule: the claim's entry
    assert applied.dead_reason == ""


def test_a_claimed_job_is_expired_at_its_start_only_on_its_first_attempt() -> None:
    deadline = NOW_MS - 5
    first = claimed(attempts=1, expires_at_ms=deadline)
    assert is_expired(first, NOW_MS, claimed=True)
    assert not is_expired(first, deadline - 1, claimed=True)  # before its deadline
    assert not is_expired(first, NOW_MS)  # as a queued job it started: charged once
    assert not is_expired(claimed(attempts=2, expires_at_ms=deadline), NOW_MS, claimed=True)
    assert not is_expired(claimed(attempts=1), NOW_MS, claimed=True)  # no deadline
