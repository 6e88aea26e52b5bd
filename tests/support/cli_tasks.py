"""Importable tasks for tests/cli/test_commands.py (the CLI resolves them by import path)."""

from typing import Any

from mpqueue import Queue

# Never opened: the CLI rebinds these tasks to the queue of its own --path.
queue = Queue()


@queue.task
def add(a: int, b: int = 0) -> int:
    return a + b


@queue.task(retries=0, priority=5)
def fail(message: str = "boom") -> Any:
    raise ValueError(message)


def plain(x: Any) -> Any:
    """A plain function, not a registered task: enqueued with default options."""
    return x


NOT_CALLABLE = 42
