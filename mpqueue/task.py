"""``Task``: what ``@queue.task`` returns (calling it runs locally; ``delay``,
``schedule`` and ``map`` enqueue), and ``TaskOptions``, its validated options."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from .concurrency import check_concurrency
from .dependencies import Dependencies
from .display import describe
from .errors import ConfigError
from .expiry import Expires, check_expires
from .handle import Job
from .limits import (
    check_backoff,
    check_priority,
    check_retries,
    check_timeout,
)
from .queues import DEFAULT_QUEUE, check_queue_name
from .rates import Rate, parse_rate
from .registry import is_importable
from .retry import ExceptionClasses, check_exception_classes, check_retry_lists, exception_names
from .serializer import dump_callable


class Enqueuer(Protocol):
    """What a task needs from its queue (``Queue`` is one)."""

    def enqueue(
        self,
        task: Task,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        delay: float | None = None,
        at: datetime | float | None = None,
        priority: int | None = None,
        depends_on: Dependencies = None,
        key: str | None = None,
        pass_results: str = "",
        allow_failures: bool = False,
        expires: Expires = None,
    ) -> Job: ...

    def enqueue_many(
        self,
        task: Task,
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        priority: int | None = None,
        keys: Sequence[str | None] | None = None,
        expires: Expires = None,
    ) -> list[Job]: ...

    def batch(self) -> AbstractContextManager[None]: ...


DEFAULT_RETRIES = 3  # runs after the first before a job is dead-lettered
DEFAULT_TIMEOUT_S = None  # no per-job time limit unless a task asks for one
DEFAULT_PRIORITY = 0  # higher runs first
DEFAULT_BACKOFF_BASE_S = 1.0  # first retry waits 0.5-1 s, then doubles per attempt
DEFAULT_BACKOFF_CAP_S = 300.0  # no retry waits more than 5 minutes

# The options a call may override (``task.options(...)``): every field of TaskOptions.
# The one list of them: a new per-job option is a new field, and both the decorator and
# ``options()`` take it.
CALL_OPTIONS = frozenset(
    {
        "retries",
        "timeout",
        "priority",
        "backoff",
        "backoff_cap",
        "retry_on",
        "no_retry_on",
        "expires",
        "queue",
    }
)
TASK_OPTIONS = CALL_OPTIONS | {"name", "concurrency", "rate"}  # the decorator also takes these


def unknown_options(given: Iterable[str], known: frozenset[str], what: str) -> None:
    """ConfigError naming the options in ``given`` that are not ``known``, if any."""
    unknown = sorted(set(given) - known)
    if unknown:
        raise ConfigError(
            f"unknown {what} option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )


@dataclass(frozen=True)
class TaskOptions:
    """Validated per-task options (see ``Queue.task``).

    ``retry_on``: None (every exception is retried) or the exception classes whose raise
    is retried; ``no_retry_on``: the classes whose raise ends the job dead at once.
    ``expires``: None, seconds after each enqueue, or a timezone-aware datetime: the
    deadline by which each job must start (see ``mpqueue.expiry``). ``queue``: the
    named queue its jobs go to (see ``mpqueue.queues``).
    """

    retries: int = DEFAULT_RETRIES
    timeout: float | None = DEFAULT_TIMEOUT_S
    priority: int = DEFAULT_PRIORITY
    backoff: float = DEFAULT_BACKOFF_BASE_S
    backoff_cap: float = DEFAULT_BACKOFF_CAP_S
    retry_on: ExceptionClasses | None = None
    no_retry_on: ExceptionClasses = ()
    expires: Expires = None
    queue: str = DEFAULT_QUEUE  # the named queue its jobs go to (see queues.py)
    # At most this many of its jobs run at once, across servers (see concurrency.py);
    # the task's, not a call's: task.options() cannot change it.
    concurrency: int | None = None
    # At most this many of its jobs start per window, across servers (see rates.py);
    # the task's too. Text like "100/m", kept as a Rate.
    rate: Rate | None = None
    # The lists as the job records keep them (see retry.py), made once per task.
    retry_on_names: tuple[str, ...] | None = field(init=False, repr=False, compare=False)
    no_retry_on_names: tuple[str, ...] = field(init=False, repr=False, compare=False)

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> TaskOptions:
        unknown_options(options, TASK_OPTIONS, "task")
        values = {k: v for k, v in options.items() if k != "name"}
        return cls(**values)

    def __post_init__(self) -> None:
        self.validate()  # every TaskOptions is in bounds, however it was made

    def validate(self) -> None:
        # The bounds of limits.py: checked once, when the task is declared.
        check_retries(self.retries)
        check_priority(self.priority)
        check_timeout(self.timeout)
        check_backoff("backoff", self.backoff)
        check_backoff("backoff_cap", self.backoff_cap)
        retry_on = self.retry_on
        if retry_on is not None:
            retry_on = check_exception_classes("retry_on", retry_on)
        no_retry_on = () if self.no_retry_on is None else self.no_retry_on
        no_retry_on = check_exception_classes("no_retry_on", no_retry_on)
        check_retry_lists(retry_on, no_retry_on)
        object.__setattr__(self, "expires", check_expires(self.expires))
        check_queue_name(self.queue)
        check_concurrency(self.concurrency)
        object.__setattr__(self, "rate", parse_rate(self.rate))
        # Normalised (one class -> a tuple) on a frozen instance: only while it is made.
        object.__setattr__(self, "retry_on", retry_on)
        object.__setattr__(self, "no_retry_on", no_retry_on)
        names = None if retry_on is None else exception_names(retry_on)
        object.__setattr__(self, "retry_on_names", names)
        object.__setattr__(self, "no_retry_on_names", exception_names(no_retry_on))

    def replace(self, overrides: dict[str, Any]) -> TaskOptions:
        """A copy with ``overrides`` (names from ``CALL_OPTIONS``), validated as the
        decorator's options are."""
        unknown_options(overrides, CALL_OPTIONS, "per-call")
        return dataclasses.replace(self, **overrides)


class Task:
    """A registered function plus its options.

    Importable functions are stored by name (a worker imports them); functions from
    ``__main__`` or closures are stored by value (cloudpickle), pickled at enqueue
    time so globals defined after the decorator are included.
    """

    def __init__(self, queue: Enqueuer, fn: Callable[..., Any], name: str, options: TaskOptions):
        # First: it copies the attributes of ``fn``, which for a Task registered again on
        # another queue include that task's queue and options.
        functools.update_wrapper(self, fn)
        self.__dict__.pop("options", None)  # a function's own attribute would hide options()
        self.queue = queue
        self.fn = fn
        self.name = name
        self.config = options
        self.by_value = not is_importable(fn)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, now, without the queue."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.config}>"

    def options(self, **overrides: Any) -> Task:
        """This task with some options overridden for the jobs enqueued through it:
        ``task.options(retries=0, timeout=5.0).delay(x)``, or ``.s(x)`` in a workflow.

        Takes ``retries``, ``timeout``, ``priority``, ``backoff``, ``backoff_cap``,
        ``retry_on``, ``no_retry_on`` and ``expires``, checked as strictly as the
        decorator's. The
        variant has the same name (its jobs are jobs of this task); the task itself, and
        its registration, are unchanged.

        Raises ConfigError for an unknown option or an invalid value.
        """
        config = self.config.replace(overrides)
        variant = object.__new__(Task)
        variant.__dict__.update(self.__dict__, config=config)
        return variant

    def func_bytes(self) -> bytes | None:
        return dump_callable(self.fn) if self.by_value else None

    def delay(self, /, *args: Any, **kwargs: Any) -> Job:
        """Enqueue one job, ready now (or once ``depends_on=``, jobs or job ids, have
        ended; see ``mpqueue.dependencies``). ``key=``: a unique key: while a job of
        this task with that key exists and has not failed (dead, cancelled, expired),
        that job is returned instead of a new one. ``expires=``: seconds from now, or a
        timezone-aware datetime, by which the job must start, else it ends ``expired``
        without running (see ``mpqueue.expiry``). All three are taken here, not passed
        to the function (pass such arguments with ``schedule(args, kwargs)``)."""
        if "depends_on" in kwargs or "key" in kwargs or "expires" in kwargs:
            depends_on, key = kwargs.pop("depends_on", None), kwargs.pop("key", None)
            expires = kwargs.pop("expires", None)
            return self.queue.enqueue(
                self, args, kwargs, depends_on=depends_on, key=key, expires=expires
            )
        return self.queue.enqueue(self, args, kwargs)

    def s(self, /, *args: Any, **kwargs: Any) -> Signature:
        """A signature: this task with these arguments, for ``chain``, ``group`` and
        ``chord`` (``key=`` and ``expires=`` are taken as ``delay`` takes them; an
        ``expires`` in seconds counts from the workflow's ``delay()``)."""
        key = kwargs.pop("key", None)
        if "expires" in kwargs:
            return Signature(self.options(expires=kwargs.pop("expires")), args, kwargs, key)
        return Signature(self, args, kwargs, key)

    def schedule(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        delay: float | None = None,
        at: datetime | float | None = None,
        priority: int | None = None,
        depends_on: Dependencies = None,
        key: str | None = None,
        expires: Expires = None,
    ) -> Job:
        """Enqueue one job that runs not before ``now + delay`` seconds, or ``at`` (an
        aware/naive datetime or epoch seconds); ``depends_on``, ``key`` and ``expires``
        as in ``delay`` (the deadline must come after the run time)."""
        return self.queue.enqueue(
            self,
            tuple(args),
            kwargs or {},
            delay=delay,
            at=at,
            priority=priority,
            depends_on=depends_on,
            key=key,
            expires=expires,
        )

    def map(
        self,
        arg_tuples: Iterable[Iterable[Any]],
        *,
        priority: int | None = None,
        key: Callable[..., str] | None = None,
        expires: Expires = None,
    ) -> list[Job]:
        """Enqueue one job per argument tuple, all in one write transaction. ``key``:
        called with each job's arguments, it gives the job's unique key; ``expires``:
        every job's deadline to start (both as in ``delay``)."""
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for args in arg_tuples:
            if type(args) is tuple:  # the common case, without the slower ABC check
                calls.append((args, {}))
                continue
            if isinstance(args, (str, bytes)) or not isinstance(args, Iterable):
                raise ConfigError(
                    f"map() takes one tuple of arguments per job, e.g. "
                    f"[(1,), (2,)]; got {describe(args)}"
                )
            calls.append((tuple(args), {}))
        keys = None if key is None else [key(*args) for args, _ in calls]
        return self.queue.enqueue_many(self, calls, priority=priority, keys=keys, expires=expires)


class Signature(NamedTuple):
    """A task with its arguments, not yet enqueued (``task.s(*args, **kwargs)``).

    A tuple: a group of thousands is built from thousands of them."""

    task: Task
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = {}
    key: str | None = None

    @property
    def queue(self) -> Enqueuer:
        return self.task.queue

    def delay(self) -> Job:
        return self.queue.enqueue(self.task, self.args, self.kwargs, key=self.key)
