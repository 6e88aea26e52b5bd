"""Retry policy: pure functions of the attempt count, the clock and a random source."""

from __future__ import annotations

import random

from .limits import DELAY_MAX_S, RUN_AT_MAX_MS
from .records import JobRecord


def backoff_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, jittered.

    The jitter keeps the upper half of the exponential step ("equal jitter"), so a
    retry never comes sooner than half the nominal delay and a burst of failures
    spreads out instead of retrying in lockstep.
    """
    # A float power, with the exponent bounded: an int power past 2**1023 cannot be
    # converted to float and would make the job's failure unrecordable.
    nominal = min(cap_s, base_s * 2.0 ** min(max(0, attempt - 1), 1000))
    return nominal / 2 + rng.random() * nominal / 2


def next_run_at_ms(
    record: JobRecord,
    now_ms: int,
    rng: random.Random,
    *,
    retryable: bool = True,
    delay_s: float | None = None,
) -> int | None:
    """When a failed job should run again, or None when it belongs in the dead-letter queue.

    ``record.attempts`` counts runs so far (the failed one included); a job gets
    ``max_retries`` runs after its first.
    """
    if not retryable or record.attempts > record.max_retries:
        return None
    if delay_s is None:
        delay_s = backoff_s(record.attempts, record.backoff_base_s, record.backoff_cap_s, rng)
    # Bounded before the int(): a delay a child sent may be anything (inf raises there).
    delay_s = min(delay_s, DELAY_MAX_S) if delay_s >= 0 else 0.0  # NaN too
    return min(now_ms + int(delay_s * 1000), RUN_AT_MAX_MS)  # datetime and every store keep it
