"""``Task``: what ``@queue.task`` returns. Calling it runs locally; ``delay``,
``schedule`` and ``map`` enqueue."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from .config import TaskOptions
from .display import describe
from .errors import ConfigError
from .registry import is_importable
from .serializer import dump_callable

if TYPE_CHECKING:
    from .app import Queue
    from .job import Job


class Task:
    """A registered function plus its options.

    Importable functions are stored by name (a worker imports them); functions from
    ``__main__`` or closures are stored by value (cloudpickle), pickled at enqueue
    time so globals defined after the decorator are included.
    """

    def __init__(self, queue: Queue, fn: Callable[..., Any], name: str, options: TaskOptions):
        self.queue = queue
        self.fn = fn
        self.name = name
        self.options = options
        self.by_value = not is_importable(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, /, *args: Any, **kwargs: Any) -> Any:
        """Run the function here, now, without the queue."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} {self.options}>"

    def func_bytes(self) -> bytes | None:
        return dump_callable(self.fn) if self.by_value else None

    def delay(self, /, *args: Any, **kwargs: Any) -> Job:
        """Enqueue one job, ready now."""
        return self.queue.enqueue(self, args, kwargs)

    def schedule(
        self,
        args: Iterable[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        delay: float | None = None,
        at: datetime | float | None = None,
        priority: int | None = None,
    ) -> Job:
        """Enqueue one job that runs not before ``now + delay`` seconds, or ``at`` (an
        aware/naive datetime or epoch seconds)."""
        return self.queue.enqueue(
            self, tuple(args), kwargs or {}, delay=delay, at=at, priority=priority
        )

    def map(self, arg_tuples: Iterable[Iterable[Any]], *, priority: int | None = None) -> list[Job]:
        """Enqueue one job per argument tuple, all in one write transaction."""
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
        return self.queue.enqueue_many(self, calls, priority=priority)
