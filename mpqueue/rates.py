"""Rate limits: at most N starts of a task's (or a named queue's) jobs per window,
across every server on the store.

``@queue.task(rate="100/m")``, ``Queue.limit("heavy", rate="10/s")``: a count and a
window of seconds, minutes or hours (``"5/s"``, ``"100/m"``, ``"1000/h"``; a number of
units too: ``"30/10s"``, ``"2/5m"``). A rate lives in the same store entry as a
concurrency limit (see ``mpqueue.concurrency``), so its jobs are filed in the same
lanes and a claim visits them only while their rate allows a start.

The rule is a sliding window: in any window of that length, at most N of the jobs are
claimed, whatever the number of servers. Each limit keeps a short log of its recent
starts in the store, written by the claim that takes them in its own transaction:
(time, how many) pairs, the time rounded *up* to a hundredth of the window, so the log
holds at most about a hundred pairs whatever N is, and a start counts a little longer,
never shorter, than its window (the rounding can only delay a start by up to 1% of the
window). A start is a claim: a put-back (a server stopping, a dead server's reclaim)
does not give a start back, and a claimed job may wait in its child's prefetch for the
job before it, so a rate limit bounds claims; the child starts them as soon as it can.

A server with nothing else to do sleeps until the earliest time a rate it is waiting
on lets a start through (``Store.next_run_at_ms(now_ms)``), not polling in between.
Starts of a window may come in a burst at its beginning: for an even pace, use a
shorter window (``"2/s"`` rather than ``"120/m"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .display import describe
from .errors import ConfigError

RATE_COUNT_MAX = 1_000_000
WINDOW_MAX_MS = 24 * 3600 * 1000  # a day: a longer window is a quota, not a rate
LOG_STEPS = 100  # start times are rounded up to window / LOG_STEPS
_UNITS_MS = {"s": 1000, "m": 60_000, "h": 3_600_000}
_UNIT_WORDS = {
    "s": "s",
    "sec": "s",
    "second": "s",
    "m": "m",
    "min": "m",
    "minute": "m",
    "h": "h",
    "hour": "h",
}
_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([a-z]+)\s*", re.IGNORECASE)

Starts = tuple[tuple[int, int], ...]  # (start time rounded up, starts), oldest first


@dataclass(frozen=True)
class Rate:
    """At most ``count`` starts in any ``window_ms`` milliseconds."""

    count: int
    window_ms: int

    def __post_init__(self) -> None:
        if type(self.count) is not int or not 1 <= self.count <= RATE_COUNT_MAX:
            raise ConfigError(f"a rate's count must be 1..{RATE_COUNT_MAX}, got {self.count!r}")
        if type(self.window_ms) is not int or not 1000 <= self.window_ms <= WINDOW_MAX_MS:
            raise ConfigError(
                f"a rate's window must be 1 s to 24 h in milliseconds, got {self.window_ms!r}"
            )

    def __str__(self) -> str:
        for unit in ("h", "m", "s"):
            size = _UNITS_MS[unit]
            if self.window_ms % size == 0:
                units = self.window_ms // size
                return f"{self.count}/{'' if units == 1 else units}{unit}"
        return f"{self.count}/{self.window_ms}ms"  # unreachable: windows are whole seconds

    @property
    def step_ms(self) -> int:
        return max(1, self.window_ms // LOG_STEPS)

    def allowed(self, starts: Starts, now_ms: int) -> int:
        """How many starts the window lets through now."""
        return max(self.count - sum(n for at, n in starts if at > now_ms - self.window_ms), 0)

    def started(self, starts: Starts, now_ms: int, count: int) -> Starts:
        """The log after ``count`` starts now: entries out of the window dropped, the
        new ones added to the last entry when they round to its time."""
        kept = [(at, n) for at, n in starts if at > now_ms - self.window_ms]
        step = self.step_ms
        at = -(-now_ms // step) * step  # rounded up: a start counts its whole window
        if kept and kept[-1][0] == at:
            kept[-1] = (at, kept[-1][1] + count)
        else:
            kept.append((at, count))
        return tuple(kept)

    def reopens_at(self, starts: Starts, now_ms: int) -> int | None:
        """When a start is next allowed, if none is now; None while one is."""
        live = [(at, n) for at, n in starts if at > now_ms - self.window_ms]
        counted = sum(n for _, n in live)
        for at, n in sorted(live):
            if counted < self.count:
                break
            counted -= n
            if counted < self.count:
                return at + self.window_ms
        return None


def _unit(word: str) -> str | None:
    """The unit a word names (``s``, ``sec``, ``seconds``, ...); None for another."""
    word = word.lower()
    if word not in _UNIT_WORDS and len(word) > 3 and word.endswith("s"):
        word = word[:-1]  # a plural: "secs", "minutes", "hours"
    return _UNIT_WORDS.get(word)


def parse_rate(value: object, what: str = "rate") -> Rate | None:
    """``value`` as a Rate: None, a Rate, or text like ``"100/m"``; ConfigError else."""
    if value is None or isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be text like '100/m', got {describe(value)}")
    match = _PATTERN.fullmatch(value)
    unit = _unit(match.group(3)) if match else None
    if match is None or unit is None:
        raise ConfigError(
            f"{what} must be N/s, N/m or N/h (a count per second, minute or hour; "
            f"'30/10s' for a window of 10 s), got {value!r}"
        )
    units = int(match.group(2)) if match.group(2) else 1
    count = int(match.group(1))
    if not 1 <= count <= RATE_COUNT_MAX:
        raise ConfigError(f"{what}'s count must be 1..{RATE_COUNT_MAX}, got {value!r}")
    window_ms = units * _UNITS_MS[unit]
    if not 1000 <= window_ms <= WINDOW_MAX_MS:
        raise ConfigError(f"{what}'s window must be from 1 s to 24 h, got {value!r}")
    return Rate(count, window_ms)


def earliest(*times: int | None) -> int | None:
    """The earliest of ``times`` that are not None (a store's next run-at time: its
    first scheduled job's, or a rate's reopening)."""
    return min((t for t in times if t is not None), default=None)
