"""Shared fixtures: a store path in a temp dir, a Queue in each store mode, a waiter."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from mpqueue import Queue

from .support.helpers import wait_until

MODES = ("optimized", "legacy")


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
