"""Retry policy: pure functions of the attempt count, the clock and a random source, and
which exceptions a task's ``retry_on``/``no_retry_on`` let retry.

A task's exception classes are kept in its jobs' records as qualified names
(``module.qualname``), and an exception is matched by the names along its class's MRO:
deciding needs no import of the user's classes and no unpickling, and works the same for
tasks stored by value (whose classes live in ``__main__``) and by import path.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from .display import describe
from .errors import ConfigError, Fail, Retry
from .limits import DELAY_MAX_S, RUN_AT_MAX_MS
from .records import JobRecord

ExceptionClasses = tuple[type[BaseException], ...]


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
    if not will_retry(record, retryable):
        return None
    if delay_s is None:
        delay_s = backoff_s(record.attempts, record.backoff_base_s, record.backoff_cap_s, rng)
    # Bounded before the int(): a delay a child sent may be anything (inf raises there).
    delay_s = min(delay_s, DELAY_MAX_S) if delay_s >= 0 else 0.0  # NaN too
    return min(now_ms + int(delay_s * 1000), RUN_AT_MAX_MS)  # datetime and every store keep it


def will_retry(record: JobRecord, retryable: bool = True) -> bool:
    """Whether a failed run of ``record`` is retried: its error allows it and the job has
    runs left (``record.attempts`` counts the failed one; a job gets ``max_retries`` runs
    after its first). Otherwise it is dead."""
    return retryable and record.attempts <= record.max_retries


def exception_name(cls: type) -> str:
    """The name a class is matched by: ``module.qualname`` (``builtins.OSError``)."""
    return f"{getattr(cls, '__module__', '')}.{cls.__qualname__}"


def exception_names(classes: Iterable[type]) -> tuple[str, ...]:
    return tuple(exception_name(cls) for cls in classes)


def retry_allowed(
    exc: BaseException, retry_on: tuple[str, ...] | None, no_retry_on: tuple[str, ...]
) -> bool:
    """Whether a task's exception may be retried (retries left permitting).

    The nearest class along the exception's MRO that either list names decides (so
    ``retry_on=(OSError,)`` with ``no_retry_on=(FileNotFoundError,)`` retries every
    OSError but a missing file); when neither names one, it is retried unless
    ``retry_on`` was given (None: every exception is retried).
    """
    if retry_on is None and not no_retry_on:  # the common case: no lists
        return True
    for cls in type(exc).__mro__:
        name = exception_name(cls)
        if name in no_retry_on:
            return False
        if retry_on is not None and name in retry_on:
            return True
    return retry_on is None


def check_exception_classes(what: str, value: Any) -> ExceptionClasses:
    """``value`` as a tuple of exception classes: one class or a tuple of them (as
    ``except`` takes). ``Retry`` and ``Fail`` are refused: they decide for themselves."""
    classes = (value,) if isinstance(value, type) else value
    if type(classes) is not tuple:
        raise ConfigError(
            f"{what} must be an exception class or a tuple of them; got {describe(value)}"
        )
    for cls in classes:
        if not isinstance(cls, type) or not issubclass(cls, BaseException):
            raise ConfigError(f"{what} takes exception classes; got {describe(cls)}")
        if issubclass(cls, (Retry, Fail)):
            raise ConfigError(
                f"{what} cannot hold {cls.__name__}: Retry always retries and Fail never does"
            )
    return classes


def check_retry_lists(retry_on: ExceptionClasses | None, no_retry_on: ExceptionClasses) -> None:
    """A class in both lists (by the name it is matched by) is a contradiction, refused."""
    both = set(exception_names(retry_on or ())) & set(exception_names(no_retry_on))
    if both:
        names = ", ".join(sorted(both))
        raise ConfigError(f"{names} cannot be in both retry_on and no_retry_on")
