"""The store interface by role (store/base.py): which backends have hand-off, and the
default every backend without it gets."""

from __future__ import annotations

import pytest

from mpqueue.store import open_store
from mpqueue.store.base import HandOff, JobStore, Schedules, ServerRegistry, Store

from ..support.pg_helpers import pg_url  # noqa: F401


def test_the_optimized_lmdb_store_has_hand_off(tmp_path) -> None:
    store = open_store(str(tmp_path / "store"))
    try:
        assert isinstance(store, JobStore) and isinstance(store, ServerRegistry)
        assert store.hand_off is store and isinstance(store.hand_off, HandOff)
    finally:
        store.close()


def test_the_legacy_lmdb_layout_has_none(tmp_path) -> None:
    store = open_store(str(tmp_path / "store"), mode="legacy")
    try:
        assert store.hand_off is None
    finally:
        store.close()


def test_the_memory_store_has_none() -> None:
    store = open_store("memory://")
    try:
        assert not isinstance(store, HandOff) and store.hand_off is None
        assert store.finish_and_claim([], "s1", 1, 0) == ([], [])
    finally:
        store.close()


def test_postgres_has_none_and_its_cycle_takes_no_idle_children(pg_url: str) -> None:
    store = open_store(pg_url)
    try:
        assert not isinstance(store, HandOff) and store.hand_off is None
        assert store.finish_and_claim([], "s1", 1, 0) == ([], [])
    finally:
        store.close()


def test_a_backend_without_hand_off_writes_nothing_for_it() -> None:
    # The abstract methods a backend must write are the job verbs, the registry, the
    # periodic schedules and close: none of hand-off's.
    assert {"recall", "inbox", "handed_job"}.isdisjoint(Store.__abstractmethods__)
    assert (
        Store.__abstractmethods__
        == JobStore.__abstractmethods__
        | Schedules.__abstractmethods__
        | {
            "register_server",
            "servers",
            "unregister_server",
            "close",
        }
    )


@pytest.mark.parametrize("method", ["recall", "inbox", "handed_job", "finish_and_claim"])
def test_hand_off_declares_its_verbs(method: str) -> None:
    assert method in HandOff.__abstractmethods__
