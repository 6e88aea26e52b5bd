"""Hooks: functions registered with ``@queue.on(event)`` that run where a job runs.

Job events, each hook called with one ``HookEvent``, in the process that runs the job
(a server's child, or the caller of ``Queue.run_pending``):

- ``start``: just before the task's function is called.
- ``success``: it returned (and its result could be stored); ``event.result`` is the value.
- ``failure``: it raised (a ``Retry`` or ``Fail`` too, a soft timeout, a result that
  cannot be stored); ``event.exception`` is what was raised. Then, as the retry rule of
  ``retry.py`` decides from the job's attempts and the error, exactly one of
- ``retry``: the job will run again, or
- ``dead``: it goes to the dead-letter queue.
- ``cancelled``: its cancel stopped it while it ran (``mpqueue.Cancelled``).

So a run fires ``start`` then one of ``success``, ``failure`` + ``retry``, ``failure`` +
``dead``, or ``cancelled``. Only runs that reach the task's call fire hooks: a bad
signature, a task that cannot be imported or arguments that cannot be unpickled fail
the job before that. What the child cannot see fires nothing in it: a child killed (a
segfault, the hard kill of a job past its timeout or its cancel, the OOM killer) or a
job cancelled before it started. And the store has the last word: a job whose cancel
came as it ended is cancelled whatever its hooks were told.

``child_start``: hooks called with no arguments, once per process, before the first job
of one of the queue's tasks runs there, or when a server's child starts for the queues
of the modules ``serve --import`` loads: the place to load a model once per worker.

A job's hooks are those of the queue its task was registered on (``@queue.task``): the
child finds that queue by importing the task's module, so hooks registered at import
time in that module are found. Jobs of tasks stored by value (defined in ``__main__``
or inside a function) and of ``queue.submit`` have no task there to find a queue by,
and fire none in a server's child; ``run_pending`` gives them its own queue's hooks.

A hook that raises is logged (logger ``mpqueue.hooks``, with the traceback) and
changes nothing: the job's outcome and the other hooks go on (in ``run_pending`` a
``KeyboardInterrupt`` still stops the call, as one from the job does). Hooks run outside the
job's soft time limit and cannot be interrupted by its cancel, but their time counts
toward the hard kill at ``timeout + --timeout-grace``.
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .display import describe
from .errors import ConfigError

log = logging.getLogger("mpqueue.hooks")

JOB_EVENTS = ("start", "success", "failure", "retry", "dead", "cancelled")
CHILD_START = "child_start"
EVENTS = (*JOB_EVENTS, CHILD_START)

Hook = Callable[..., Any]
# Per event, the hooks in registration order; a queue without hooks has an empty one, and
# that one check is all a job of it pays.
HookTable = dict[str, list[Hook]]
NO_HOOKS: HookTable = {}


@dataclass(frozen=True, slots=True)
class HookEvent:
    """What a job hook receives.

    Attributes
    ----------
    event: the event (``"start"``, ``"success"``, ``"failure"``, ``"retry"``, ``"dead"``,
        ``"cancelled"``).
    job_id, task: the job's id and its task's name.
    attempt: which run of the job this is (1 for the first).
    server_id: the server holding the job's claim.
    args, kwargs: the arguments the task's function is called with.
    result: what the function returned (``success``; else None).
    exception: what it raised (``failure``, ``retry``, ``dead``, ``cancelled``; else None).
    """

    event: str
    job_id: str
    task: str
    attempt: int
    server_id: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    exception: BaseException | None = None


# The queues' hooks that have child_start hooks, for a child's start (weak: a Queue
# dropped by its program takes its hooks along).
_with_child_start: list[weakref.ref[Hooks]] = []


class Hooks:
    """The hooks registered on one queue (``Queue.hooks``)."""

    def __init__(self) -> None:
        self.table: HookTable = {}
        self._started_in = 0  # the pid whose child_start hooks ran (a fork runs them again)

    def add(self, event: str, fn: Hook) -> None:
        """Register ``fn`` for ``event``; ConfigError for an unknown event or a
        non-callable, with nothing registered."""
        check_event(event)
        if not callable(fn):
            raise ConfigError(f"a {event} hook must be callable; got {describe(fn)}")
        if event == CHILD_START and CHILD_START not in self.table:
            _with_child_start.append(weakref.ref(self))
        self.table.setdefault(event, []).append(fn)

    def child_started(self) -> None:
        """Run the child_start hooks, unless this process ran them already."""
        pid = os.getpid()
        if self._started_in == pid:
            return
        self._started_in = pid
        for fn in self.table.get(CHILD_START, ()):
            try:
                fn()
            except BaseException:  # a hook must not end the process either
                log.exception("child_start hook %s raised in process %d", _name(fn), pid)


def check_event(event: Any) -> str:
    """``event`` if it names a hook event, else a one-line ConfigError naming them."""
    if not isinstance(event, str) or event not in EVENTS:
        raise ConfigError(f"unknown hook event {describe(event)}; one of {', '.join(EVENTS)}")
    return event


def start_child() -> None:
    """A server's child starts: run the child_start hooks of every queue it has."""
    _with_child_start[:] = [ref for ref in _with_child_start if ref() is not None]
    for ref in list(_with_child_start):
        hooks = ref()
        if hooks is not None:
            hooks.child_started()


def hooks_of(found: Any, default: Hooks | None = None) -> Hooks | None:
    """The hooks of the queue of a task found by name (a ``Task``: its ``queue``), else
    ``default``."""
    hooks = getattr(getattr(found, "queue", None), "hooks", None)
    return hooks if isinstance(hooks, Hooks) else default


def fire(table: HookTable, event: HookEvent, passes: tuple[type[BaseException], ...] = ()) -> None:
    """Call the hooks of ``event.event`` with ``event``; a raise is logged and ends only
    that hook's call, except one of ``passes`` (in-process, a Ctrl-C stops the caller)."""
    for fn in table.get(event.event, ()):
        try:
            fn(event)
        except passes:
            raise
        except BaseException:  # SystemExit too: a hook must not change the job's outcome
            log.exception(
                "%s hook %s raised for job %s (%s)",
                event.event,
                _name(fn),
                event.job_id,
                event.task,
            )


def _name(fn: Hook) -> str:
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None) or repr(fn)
    return f"{module}.{qualname}" if module else qualname
