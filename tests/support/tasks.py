"""Importable sample tasks (workers and spawned test processes import them by name).

The module-level Queue opens nothing until used; tests enqueue these tasks on their own
queue with ``queue.task_by_name("tests.support.tasks.add")``.
"""

from __future__ import annotations

from mpqueue import Queue, Retry

queue = Queue()


@queue.task
def add(a: int, b: int) -> int:
    return a + b


@queue.task(retries=0)
def noop(*args: object, **kwargs: object) -> None:
    return None


@queue.task(retries=2, backoff=0.5, backoff_cap=4.0)
def fail(message: str = "boom") -> None:
    raise RuntimeError(message)


@queue.task(retries=5)
def retry_later(delay_s: float = 1.0) -> None:
    raise Retry(delay_s, "not yet")


@queue.task(priority=5, name="tests.support.tasks.urgent")
def urgent(x: int) -> int:
    return x


def total(values: list[int]) -> int:
    """A chord's callback: the sum of its members' results."""
    return sum(values)


def type_names(values: list[object]) -> list[str]:
    """A chord's callback that shows what it received in each member's place."""
    return [type(value).__name__ for value in values]
