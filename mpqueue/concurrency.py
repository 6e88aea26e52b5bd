"""Concurrency limits: at most N jobs of a task, or of a named queue, run at once
across every server on the store.

``@queue.task(concurrency=4)`` limits a task, ``Queue.limit("heavy", concurrency=4)``
a whole queue. A limit may carry a rate instead or as well (``rate="100/m"``: at most
that many starts per window, see ``mpqueue.rates``); one with neither is removed. A job
may count against both its task's limit and its queue's: it starts only while both
have room.

The limits and their running counts live in the store, so every server agrees:

* ``Queue.limit`` / ``Queue.limit_task`` write a limit at once;
* a task's ``concurrency=`` is written by the first enqueue of that task through a
  ``Queue`` object, and by every server child at start for the tasks of the modules it
  imports (``--import``). When code and store disagree, the store is what every server
  enforces, and the last process that wrote it wins; removing ``concurrency=`` from the
  code does not remove the stored limit (``Queue.limit_task(name)`` with neither
  ``concurrency`` nor ``rate``, or ``mpqueue limits --remove task:NAME`` does).

Each store files the ready jobs of a limited task or queue apart from the others (a
"lane" per queue and task), so a claim visits only the lanes with a free slot and never
steps over jobs at their limit; the running count is changed by the same commit that
claims a job and by the one that records its outcome (or puts it back, or deletes it).
A job that was running when a limit was set counts against it; raising or lowering a
limit leaves the running jobs alone (a lowered limit starts nothing until the count is
below it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from .errors import ConfigError
from .rates import Rate, Starts

CONCURRENCY_MAX = 100_000
TASK = "task"
QUEUE = "queue"
KINDS = (TASK, QUEUE)


# A limit without a concurrency (a rate alone) has this much room for running jobs.
UNBOUNDED = 2**31 - 1


@dataclass(frozen=True)
class Limit:
    """One limit as the store holds it: what it limits, its concurrency (None: only a
    rate), how many of its jobs run now, and its rate (see ``mpqueue.rates``)."""

    kind: str  # "task" or "queue"
    name: str
    concurrency: int | None
    running: int
    rate: Rate | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True)
class LimitState:
    """A limit's stored values, as every store keeps them: what the claim reads and
    changes in its transaction."""

    concurrency: int | None
    running: int
    rate: Rate | None = None
    starts: Starts = ()  # the rate's log of recent starts (see rates.py)

    def room(self, now_ms: int) -> int:
        """How many of its jobs may start now."""
        free = UNBOUNDED if self.concurrency is None else max(self.concurrency - self.running, 0)
        if self.rate is not None:
            free = min(free, self.rate.allowed(self.starts, now_ms))
        return free

    def claimed(self, count: int, now_ms: int) -> LimitState:
        """After ``count`` of its jobs were claimed now."""
        starts = self.starts if self.rate is None else self.rate.started(self.starts, now_ms, count)
        return replace(self, running=self.running + count, starts=starts)

    def released(self, count: int) -> LimitState:
        return replace(self, running=max(self.running - count, 0))

    def reopens_at(self, now_ms: int) -> int | None:
        """When its rate next lets a start through, if it lets none through now."""
        return None if self.rate is None else self.rate.reopens_at(self.starts, now_ms)

    def limit(self, kind: str, name: str) -> Limit:
        return Limit(kind, name, self.concurrency, self.running, self.rate)


def kept_starts(old: LimitState, rate: Rate | None) -> Starts:
    """The log of starts a changed limit keeps: its old one, unless it has no rate now
    (a rate set again later begins with an empty log, on every store)."""
    return () if rate is None else old.starts


def check_concurrency(value: object, what: str = "concurrency") -> int | None:
    """``value`` if it is None or a whole number 1..CONCURRENCY_MAX; ConfigError else."""
    if value is None:
        return None
    if type(value) is not int or not 1 <= value <= CONCURRENCY_MAX:
        raise ConfigError(
            f"{what} must be a whole number 1..{CONCURRENCY_MAX} or None, got {value!r}"
        )
    return value


def check_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"a limit is of a task or a queue, not {kind!r}")
    return kind


def parse_key(text: str) -> tuple[str, str]:
    """("task", name) or ("queue", name) of ``task:NAME`` / ``queue:NAME``."""
    kind, sep, name = text.partition(":")
    if not sep or kind not in KINDS or not name:
        raise ConfigError(f"a limit is named task:NAME or queue:NAME, got {text!r}")
    return kind, name


# Task limits declared in this process (``@queue.task(concurrency=..., rate=...)``), by
# task name: a server child writes them to its store once the modules it imports are
# loaded.
_declared: dict[str, tuple[int | None, Rate | None]] = {}
_declared_lock = threading.Lock()


def declare(name: str, concurrency: int | None, rate: Rate | None) -> None:
    with _declared_lock:
        _declared[name] = (concurrency, rate)


def declared() -> dict[str, tuple[int | None, Rate | None]]:
    with _declared_lock:
        return dict(_declared)
