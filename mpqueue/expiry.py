"""Expiry: the deadline by which a job must start (``expires=``), and the one rule of
what happens past it.

``expires=`` is seconds from the enqueue (a number > 0) or a timezone-aware datetime;
the job keeps the deadline as ``expires_at_ms``. A job that has not started by its
deadline ends ``expired`` without running, with an ``Expired`` entry last in its
history, and the jobs waiting for it are settled as for a failed job. A job has started
once a run of it began: its retries never expire (an uncharged put-back, ``released``,
is no start).

Stores check the deadline where they touch a queued job anyway, in the transaction that
touches it: the claim (a claimed job past its deadline is ended instead of handed out),
the promotion of a scheduled job, and the release of a waiting one. A claimed job may
wait a while before it runs (a server prefetches; ``run_pending`` claims a batch), so
what runs it checks once more just before the start (``execute.TaskRunner``) and
reports the ``expired`` outcome instead of running it; the store files it as its claim
would have (``outcomes.Destination.EXPIRED``). Whichever server or store call sees the
job first past its deadline ends it. The check reads nothing: the deadline is in the
record at hand, and a job without one pays a test for None.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

from .display import describe
from .errors import ConfigError
from .limits import CENTURY_TEXT, DELAY_MAX_S, RUN_AT_MAX_MS, RUN_AT_MAX_TEXT
from .records import ErrorInfo, JobRecord, JobState

Expires = float | datetime | None  # what ``expires=`` takes

_RULE = "expires must be seconds from now (a number > 0) or a timezone-aware datetime"


def check_expires(expires: Any) -> Expires:
    """``expires`` if it is a valid value (seconds as a float), else a one-line
    ConfigError naming the rule. The deadline itself is made per job (``deadline_ms``)."""
    if expires is None:
        return None
    if isinstance(expires, datetime):
        _datetime_ms(expires)
        return expires
    if isinstance(expires, bool) or not isinstance(expires, (int, float)):
        raise ConfigError(f"{_RULE}; got {describe(expires)}")
    try:
        seconds = float(expires)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{_RULE}; got {describe(expires)}")
    if seconds > DELAY_MAX_S:
        raise ConfigError(f"expires must be at most {DELAY_MAX_S:.0f} s ({CENTURY_TEXT})")
    return seconds


def _datetime_ms(when: datetime) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ConfigError(
            f"expires takes a timezone-aware datetime (a naive one has no fixed "
            f"moment); got {describe(when)}"
        )
    try:
        seconds = when.timestamp()
    except (OverflowError, ValueError, OSError) as exc:
        reason = f"expires cannot be converted to a time: {describe(when)} ({exc})"
        raise ConfigError(reason) from None
    if not 0 <= seconds <= RUN_AT_MAX_MS / 1000:
        raise ConfigError(f"expires must be from 1970 to {RUN_AT_MAX_TEXT}; got {describe(when)}")
    return int(seconds * 1000)


def deadline_ms(expires: Any, now_ms: int, run_at_ms: int) -> int | None:
    """The deadline (epoch ms) of a job enqueued at ``now_ms`` to run at ``run_at_ms``
    with ``expires``; None for none. ConfigError for a bad value, and for a deadline
    not after the run time (the job could never start)."""
    checked = check_expires(expires)
    if checked is None:
        return None
    if isinstance(checked, datetime):
        deadline = _datetime_ms(checked)
    else:  # at least 1 ms: a tiny positive number must not mean "expired at once"
        deadline = min(now_ms + max(1, math.ceil(checked * 1000)), RUN_AT_MAX_MS)
    if deadline <= run_at_ms:
        raise ConfigError(
            f"expires ({_text(deadline)}) is not after the job's run time "
            f"({_text(run_at_ms)}): it could never start"
        )
    return deadline


def is_expired(rec: JobRecord, now_ms: int, *, claimed: bool = False) -> bool:
    """Whether ``rec`` must end expired now rather than be queued, claimed or started:
    it has a deadline, it has passed, and the job never started. A queued job never
    started if no attempt was charged; a ``claimed`` one (about to start) if its claim
    charged its first. Callers on a hot path test ``rec.expires_at_ms is not None``
    first: a job without a deadline pays only that."""
    deadline = rec.expires_at_ms
    return deadline is not None and now_ms >= deadline and rec.attempts == int(claimed)


def expired(rec: JobRecord, now_ms: int, attempts: int | None = None) -> JobRecord:
    """``rec`` ended expired at ``now_ms``: its history ends with why. ``attempts``: the
    count it keeps, when not its own (a claimed job gives back the attempt its claim
    charged: it never ran)."""
    entry = expiry_entry(rec.expires_at_ms or 0, now_ms)
    return rec.evolve(
        state=JobState.EXPIRED,
        errors=rec.errors + (entry,),
        finished_at_ms=now_ms,
        attempts=rec.attempts if attempts is None else attempts,
    )


def expiry_entry(deadline: int, now_ms: int) -> ErrorInfo:
    """The entry an expired job's history ends with."""
    message = f"not started by its deadline, {_text(deadline)}"
    return ErrorInfo("Expired", message, attempt=0, at_ms=now_ms, kind="expired")


def _text(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
