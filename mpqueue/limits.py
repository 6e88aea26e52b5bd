"""The bounds of every value a job carries, and the checks that enforce them.

The principle: every value is bounded where it enters (the task decorator, the enqueue
call, the command line) to what every store can keep and what ``datetime`` can show,
and is rejected there with a ``ConfigError`` that names the bound. A value found out
of bounds in a store anyway (written by older code or by hand) is that job's failure:
a server dead-letters the job with the reason (``stored_problem``) and goes on with
the others. No stored value may stop a server or a claim.

What the bounds protect: LMDB keys hold the priority as a u32 (inverted) and times as
u64 milliseconds (``keys.py``); PostgreSQL holds them as integer / bigint columns and
computes claim deadlines in bigint milliseconds; ``datetime`` ends at year 9999.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from .display import describe
from .errors import ConfigError
from .records import JobRecord

PRIORITY_MIN = -(2**31)  # a signed 32-bit integer: PostgreSQL ``integer``, and
PRIORITY_MAX = 2**31 - 1  # LMDB's ready key stores PRIORITY_MAX - priority as a u32
JOB_ID_BYTES = 32  # job ids are 32 lowercase hex characters
KEY_MAX_BYTES = 511  # LMDB's compiled-in key limit (also applied to PostgreSQL)
NAME_MAX_BYTES = KEY_MAX_BYTES - JOB_ID_BYTES - 1  # a name index key: name, 0, job id


def check_key_part(text: str, what: str) -> None:
    """Refuse a task name or server id that cannot be one part of a store key: the LMDB
    indexes hold it, a NUL and a job id in one key of at most ``KEY_MAX_BYTES``. The
    PostgreSQL store applies the same rule, so a queue can move between stores."""
    raw = text.encode("utf-8")
    if b"\x00" in raw:
        raise ConfigError(f"{what} may not contain a NUL character: {text!r}")
    size = len(raw) + 1 + JOB_ID_BYTES
    if size > KEY_MAX_BYTES:
        raise ConfigError(
            f"{what} is too long: its key takes {size} bytes, the limit is {KEY_MAX_BYTES}"
        )


REASON_MAX = 1000  # characters of a cancel's reason, kept in the job's history
PROGRESS_MESSAGE_MAX = 200  # characters of a progress report's message
PROGRESS_MAX = 1e18  # done and total: far past any count, still exact enough as a float
DEPENDENCIES_MAX = 100_000  # the most jobs one job may wait for (a chord's fan-in)


def check_unique_key(name: str, key: Any) -> str:
    """A job's unique key (``key=``): text without NUL that fits one store key after
    its task name (the LMDB key index holds name, 0, key; PostgreSQL the same bound)."""
    if type(key) is not str or not key:
        raise ConfigError(f"key must be a non-empty string; got {describe(key)}")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"key must be valid text (no lone surrogates): {key!r}") from None
    if b"\x00" in raw:
        raise ConfigError(f"key may not contain a NUL character: {key!r}")
    size = len(name.encode("utf-8")) + 1 + len(raw)
    if size > KEY_MAX_BYTES:
        raise ConfigError(
            f"key is too long for task {name!r}: name and key take {size} bytes, "
            f"the limit is {KEY_MAX_BYTES}"
        )
    return key


def key_held(job_id: str, key: str, holder_id: str) -> ConfigError:
    """Why a dead job cannot be requeued: another live job holds its unique key (every
    store raises this one)."""
    return ConfigError(
        f"job {job_id} has key {key!r}, which job {holder_id} holds now; "
        f"it cannot be requeued while that job is not dead or cancelled"
    )


YEAR_S = 365 * 24 * 3600
TIMEOUT_MAX_S = YEAR_S  # a job limit longer than a year is a mistake, not a limit
BACKOFF_MAX_S = YEAR_S  # backoff base and cap: no retry waits more than a year
RETRIES_MAX = 1000  # retries after the first run before a job is dead
DELAY_MAX_S = 100 * YEAR_S  # delay= and --delay: at most a century from now
RESULT_TTL_MAX_S = 100 * YEAR_S  # how long finished jobs are kept
# The latest run time: the last millisecond datetime can show (9999-12-31 23:59:59.999
# UTC). Every store keeps it (a u64 key, a bigint column), and a claim deadline of up to
# TIMEOUT_MAX_S after it still fits a signed 64-bit count of milliseconds.
RUN_AT_MAX_MS = 253_402_300_799_999
RUN_AT_MAX_TEXT = "9999-12-31 23:59:59 UTC"
YEAR_TEXT, CENTURY_TEXT = "one year", "100 years"  # the bounds above, for messages


def check_int(what: str, value: Any, low: int, high: int) -> int:
    """``value`` if it is an integer (not a bool) from ``low`` to ``high``, else
    ConfigError."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(f"{what} must be an integer from {low} to {high}; got {describe(value)}")
    return value


def check_positive(what: str, value: Any, high: float | None = None, bound: str = "") -> float:
    """``value`` as a float if it is a finite number > 0 (and at most ``high``, which
    ``bound`` names in words); else ConfigError naming the rule."""
    number = _seconds(what, value, "> 0")
    if not number > 0:
        raise ConfigError(f"{what} must be a finite number of seconds > 0; got {describe(value)}")
    return _at_most(what, number, value, high, bound)


def check_delay(
    delay: Any, what: str = "delay", high: float | None = None, bound: str = ""
) -> float:
    """``delay`` as a float if it is a finite number >= 0 (and at most ``high``)."""
    number = _seconds(what, delay, ">= 0")
    if number < 0:
        raise ConfigError(f"{what} must be a number of seconds >= 0; got {describe(delay)}")
    return _at_most(what, number, delay, high, bound)


def _seconds(what: str, value: Any, rule: str) -> float:
    number = math.nan
    if not isinstance(value, bool) and isinstance(value, (int, float)):
        try:
            number = float(value)  # an int too large for a float is no finite number
        except OverflowError:
            pass
    if not math.isfinite(number):
        raise ConfigError(
            f"{what} must be a finite number of seconds {rule}; got {describe(value)}"
        )
    return number


def _at_most(what: str, number: float, given: Any, high: float | None, bound: str) -> float:
    if high is not None and number > high:
        words = f" ({bound})" if bound else ""
        raise ConfigError(f"{what} must be at most {high:.0f} s{words}, got {describe(given)}")
    return number


def check_progress(done: Any, total: Any, message: Any) -> tuple[float, float | None, str | None]:
    """A progress report's values, checked: ``done`` a number from 0, ``total`` None or
    a number above 0, ``message`` None or a string of at most PROGRESS_MESSAGE_MAX."""
    done = _progress_number("done", done, 0.0)
    if total is not None:
        total = _progress_number("total", total, None)
    if message is not None:
        if not isinstance(message, str):
            raise ConfigError(f"progress message must be a string, not {type(message).__name__}")
        if len(message) > PROGRESS_MESSAGE_MAX:
            raise ConfigError(
                f"progress message is {len(message)} characters; at most {PROGRESS_MESSAGE_MAX}"
            )
    return done, total, message


def _progress_number(what: str, value: Any, low: float | None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"progress {what} must be a number, not {value!r}")
    number = float(value)
    if (low is None and number <= 0) or number < (low or 0.0) or number > PROGRESS_MAX:
        bound = "above 0" if low is None else "from 0"
        raise ConfigError(f"progress {what} must be {bound} to {PROGRESS_MAX:g}; got {value!r}")
    return number


def check_priority(priority: Any) -> int:
    """A job priority: an integer in the signed 32-bit range every store keeps."""
    return check_int("priority", priority, PRIORITY_MIN, PRIORITY_MAX)


def check_retries(retries: Any) -> int:
    return check_int("retries", retries, 0, RETRIES_MAX)


def check_timeout(timeout: Any) -> float | None:
    """None (no limit) or a job time limit of up to one year."""
    if timeout is None:
        return None
    return check_positive("timeout", timeout, TIMEOUT_MAX_S, YEAR_TEXT)


def check_backoff(what: str, value: Any) -> float:
    return check_positive(what, value, BACKOFF_MAX_S, YEAR_TEXT)


def check_result_ttl(ttl: Any) -> float:
    return check_delay(ttl, "result_ttl", RESULT_TTL_MAX_S, CENTURY_TEXT)


def run_at_ms(delay: Any, at: Any, now_ms: int) -> int | None:
    """The run time in epoch ms of ``delay`` seconds from ``now_ms`` or of ``at`` (a
    datetime or epoch seconds); None for neither (run now). Raises ConfigError for both,
    for a bad value, and for a time before 1970 or after RUN_AT_MAX_TEXT."""
    if delay is not None:
        if at is not None:
            raise ConfigError("give either delay= or at=, not both")
        return min(
            now_ms + int(check_delay(delay, "delay", DELAY_MAX_S, CENTURY_TEXT) * 1000),
            RUN_AT_MAX_MS,
        )
    if at is None:
        return None
    seconds = _epoch_seconds(at)
    if not 0 <= seconds <= RUN_AT_MAX_MS / 1000:
        raise ConfigError(
            f"at must be from 1970-01-01 UTC to {RUN_AT_MAX_TEXT} "
            f"(epoch seconds 0 to {RUN_AT_MAX_MS // 1000}), got {describe(at)}"
        )
    return int(seconds * 1000)


def _epoch_seconds(at: Any) -> float:
    if isinstance(at, datetime):
        try:
            return at.timestamp()
        except (OverflowError, ValueError, OSError) as exc:  # naive times at the ends
            raise ConfigError(f"at cannot be converted to a time: {describe(at)} ({exc})") from None
    try:
        return _seconds("at", at, "(or a datetime)")
    except ConfigError:
        raise ConfigError(
            f"at must be a datetime or finite epoch seconds; got {describe(at)}"
        ) from None


# ---- stored records ---------------------------------------------------------------------


def stored_problem(rec: JobRecord) -> str | None:
    """Why a record read from a store cannot be run as it stands (a value that no entry
    check lets in), or None. A server calls it for every job it promotes or claims, so
    the common case is one expression of exact type tests and chained comparisons
    (``type(x) is int`` also refuses bools); only a bad record pays for the message."""
    timeout, base, cap = rec.timeout_s, rec.backoff_base_s, rec.backoff_cap_s
    if (
        type(rec.priority) is int
        and PRIORITY_MIN <= rec.priority <= PRIORITY_MAX
        and type(rec.max_retries) is int
        and 0 <= rec.max_retries <= RETRIES_MAX
        and type(rec.attempts) is int
        and 0 <= rec.attempts <= RETRIES_MAX + 1
        and type(rec.run_at_ms) is int
        and -RUN_AT_MAX_MS <= rec.run_at_ms <= RUN_AT_MAX_MS
        and type(base) in _NUMBERS
        and 0 <= base <= BACKOFF_MAX_S
        and type(cap) in _NUMBERS
        and 0 <= cap <= BACKOFF_MAX_S
        and (timeout is None or type(timeout) in _NUMBERS and 0 < timeout <= TIMEOUT_MAX_S)
        and type(rec.id) is str
        and type(rec.name) is str
        and type(rec.payload) is bytes
        and (rec.func is None or type(rec.func) is bytes)
        and type(rec.errors) is tuple
    ):
        return None
    return _describe(rec)


_NUMBERS = (int, float)


def _describe(rec: JobRecord) -> str:
    """The first value of ``rec`` that ``stored_problem`` refuses, in words."""
    if type(rec.id) is not str or type(rec.name) is not str:
        return "id and name must be text"
    if type(rec.payload) is not bytes or not (rec.func is None or type(rec.func) is bytes):
        return "payload and function must be bytes"
    if type(rec.errors) is not tuple:
        return "its error history is not a list of errors"
    checks = (
        ("priority", rec.priority, PRIORITY_MIN, PRIORITY_MAX, (int,)),
        ("max_retries", rec.max_retries, 0, RETRIES_MAX, (int,)),
        ("attempts", rec.attempts, 0, RETRIES_MAX + 1, (int,)),
        ("run_at_ms", rec.run_at_ms, -RUN_AT_MAX_MS, RUN_AT_MAX_MS, (int,)),
        ("backoff_base_s", rec.backoff_base_s, 0, BACKOFF_MAX_S, _NUMBERS),
        ("backoff_cap_s", rec.backoff_cap_s, 0, BACKOFF_MAX_S, _NUMBERS),
    )
    for what, value, low, high, kinds in checks:
        if type(value) not in kinds or not low <= value <= high:  # NaN fails the range
            return f"{what} {describe(value)} is out of bounds ({low} to {high})"
    return (
        f"timeout_s {rec.timeout_s!r} is out of bounds (none, or more than 0 up to {TIMEOUT_MAX_S})"
    )
