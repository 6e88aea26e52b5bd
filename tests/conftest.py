"""Shared fixtures: a store path in a temp dir, a Queue in each store mode, a waiter."""

from __future__ import annotations

import time
from typing import Callable, Iterator

import pytest

from mpqueue import Queue

MODES = ("optimized", "legacy")


def wait_until(predicate: Callable[[], object], timeout: float = 10.0,
               interval: float = 0.005) -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s: {predicate!r}")
        time.sleep(interval)


@pytest.fixture
def store_path(tmp_path) -> str:
    return str(tmp_path / "store")


@pytest.fixture(params=MODES)
def mode(request) -> str:
    return str(request.param)


@pytest.fixture
def queue(store_path: str, mode: str) -> Iterator[Queue]:
    q = Queue(store_path, mode=mode)
    try:
        yield q
    finally:
        q.close()


@pytest.fixture
def waiter() -> Callable[..., object]:
    return wait_until
