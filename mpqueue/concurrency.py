"""Concurrency limits: at most N jobs of a task, or of a named queue, run at once
across every server on the store.

``@queue.task(concurrency=4)`` limits a task, ``Queue.limit("heavy", concurrency=4)``
a whole queue (``concurrency=None`` removes a limit). A job may count against both its
task's limit and its queue's: it starts only while both have a free slot.

The limits and their running counts live in the store, so every server agrees:

* ``Queue.limit`` / ``Queue.limit_task`` write a limit at once;
* a task's ``concurrency=`` is written by the first enqueue of that task through a
  ``Queue`` object, and by every server child at start for the tasks of the modules it
  imports (``--import``). When code and store disagree, the store is what every server
  enforces, and the last process that wrote it wins; removing ``concurrency=`` from the
  code does not remove the stored limit (``Queue.limit_task(name, None)`` or
  ``mpqueue limits --remove task:NAME`` does).

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
from dataclasses import dataclass

from .errors import ConfigError

CONCURRENCY_MAX = 100_000
TASK = "task"
QUEUE = "queue"
KINDS = (TASK, QUEUE)


@dataclass(frozen=True)
class Limit:
    """One limit as the store holds it: what it limits, its concurrency, and how many
    of its jobs run now."""

    kind: str  # "task" or "queue"
    name: str
    concurrency: int
    running: int

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


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


# Task limits declared in this process (``@queue.task(concurrency=...)``), by task
# name: a server child writes them to its store once the modules it imports are loaded.
_declared: dict[str, int] = {}
_declared_lock = threading.Lock()


def declare(name: str, concurrency: int) -> None:
    with _declared_lock:
        _declared[name] = concurrency


def declared() -> dict[str, int]:
    with _declared_lock:
        return dict(_declared)
