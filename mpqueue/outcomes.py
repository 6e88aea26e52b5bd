"""The one rule that turns a claimed job and how its run ended into the job's next record.

Every store calls ``apply_outcome`` and only translates the result into its storage (the
LMDB store into its indexes, the PostgreSQL store into a row of its finish statement).
The rule is pure: no store, no I/O; the clock and the jitter's random source come in.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from .expiry import expired
from .records import ErrorInfo, JobRecord, JobState, Outcome
from .retry import next_run_at_ms, will_retry

# What a failure without an error (a child that sent none) is recorded as.
NO_ERROR = ErrorInfo("Unknown", "no error recorded")

# How a run ended, as a server counts and logs it and hooks are told (``ending``): the
# one list of them.
DONE, RETRIED, DEAD, CANCELLED, RELEASED = "done", "retried", "dead", "cancelled", "released"
EXPIRED = "expired"  # not started: its deadline had passed when its turn came
ENDINGS = (DONE, RETRIED, DEAD, CANCELLED, RELEASED, EXPIRED)


class Destination(enum.Enum):
    """Where a job goes after its outcome is applied."""

    DONE = "done"  # finished: keep it (with its result) until it expires
    SCHEDULED = "scheduled"  # a retry: queue it at its run-at, behind the jobs waiting
    DEAD = "dead"  # into the dead-letter queue, with the reason
    RELEASED = "released"  # back to ready, the attempt un-charged, keeping its seq
    CANCELLED = "cancelled"  # its cancel was requested while it ran: ended, no result
    EXPIRED = "expired"  # past its deadline when about to start: ended, never ran


def ending(record: JobRecord | None, outcome: Outcome) -> str:
    """How ``outcome`` ends the run of ``record`` (the claimed job; None when unknown: a
    failure then counts as retried), one of ``ENDINGS``.

    A job stopped by its cancel (the child raised ``Cancelled`` in it, or the server
    killed it) is cancelled; a failure is retried or dead as ``retry.will_retry`` says.
    The store may still cancel a job whose cancel came while it ran, whatever it did.
    """
    kind = outcome.kind
    if kind == "done" or kind == "released" or kind == "expired":
        return kind
    if kind == "cancelled" or (outcome.error is not None and outcome.error.kind == "cancelled"):
        return CANCELLED
    if record is not None and not will_retry(record, outcome.retryable):
        return DEAD
    return RETRIED


@dataclass(slots=True)  # not frozen: that doubles the cost of making one, once per job
class Applied:
    """An applied outcome: the job's new record and where it goes.

    ``error`` is the error appended to the record's errors (None unless it failed);
    ``dead_reason`` is the dead-letter entry's text ("" unless it is dead). A retry
    keeps the record's ``seq``: the store gives it a new one when it queues it, so it
    waits behind the jobs already waiting.
    """

    record: JobRecord
    destination: Destination
    error: ErrorInfo | None = None
    dead_reason: str = ""


def apply_outcome(record: JobRecord, outcome: Outcome, now_ms: int, rng: random.Random) -> Applied:
    """Apply ``outcome`` to ``record``, a job in ``processing`` whose claim it ends.

    Parameters:
        record: the claimed job (its ``attempts`` counts the run that ended).
        outcome: how the run ended (``done``, ``released``, ``failed``,
            ``cancelled``, or ``expired``: it never began).
        now_ms: the clock, for the finish time and the retry's run-at.
        rng: the random source of the retry's jitter (``retry.backoff_s``).

    Returns:
        The new record (one copy of ``record``) and its destination.
    """
    if outcome.kind == "done":
        done = record.evolve(
            state=JobState.DONE,
            result=outcome.result,
            finished_at_ms=now_ms,
            result_preview=outcome.preview,
        )
        return Applied(done, Destination.DONE)
    if outcome.kind == "released":
        # Never started, or interrupted by a crash or a shutdown: undo the claim and
        # keep the job's place (its seq), ahead of the jobs that came after it.
        released = record.evolve(state=JobState.READY, attempts=record.attempts - 1)
        return Applied(released, Destination.RELEASED)
    if outcome.kind == "cancelled":
        error = outcome.error or NO_ERROR
        cancelled = record.evolve(
            state=JobState.CANCELLED, errors=record.errors + (error,), finished_at_ms=now_ms
        )
        return Applied(cancelled, Destination.CANCELLED, error)
    if outcome.kind == "expired":
        # Ended as a claim past the deadline ends it (expiry.expired, the same history
        # entry), the attempt the claim charged given back: it never ran.
        ended = expired(record, now_ms, attempts=record.attempts - 1)
        return Applied(ended, Destination.EXPIRED, ended.errors[-1])
    return _failed(record, outcome, now_ms, rng)


def _failed(record: JobRecord, outcome: Outcome, now_ms: int, rng: random.Random) -> Applied:
    """A failed run: retried at a backoff (or the delay the task asked for) while retries
    are left and the error allows it, dead-lettered otherwise."""
    error = outcome.error or NO_ERROR
    errors = record.errors + (error,)
    # The retry policy reads the attempts, retries and backoff, never the errors: the
    # record passed in answers for the new one, which saves a copy per failure.
    run_at = next_run_at_ms(
        record, now_ms, rng, retryable=outcome.retryable, delay_s=outcome.retry_delay_s
    )
    if run_at is None:
        dead = record.evolve(state=JobState.DEAD, errors=errors, finished_at_ms=now_ms)
        return Applied(dead, Destination.DEAD, error, str(error))
    retry = record.evolve(state=JobState.SCHEDULED, errors=errors, run_at_ms=run_at)
    return Applied(retry, Destination.SCHEDULED, error)
