"""Which standing offers a producer's enqueue may use (LMDB hand-off; issue 10, item 6):
only a live child of a server whose heartbeat is younger than its lease. Written into a
real store by hand, so each case is exact; the process tests are in
tests/serve/test_handoff.py."""

from __future__ import annotations

import os
import subprocess

import pytest

from mpqueue import Queue
from mpqueue.records import now_ms
from mpqueue.store.lmdb import keys

SERVER = "thishost:0123456789ab:4026531836:4242:1700000000000"


def _offer(queue: Queue, child_pids: list[int], entry: dict | bytes | None) -> None:
    """Make SERVER offer ``child_pids``, stamped with the heartbeat and lease of its
    registry ``entry`` as a server's heartbeat stamps it; raw bytes: an offer value
    no server of this version wrote; None: an offer as servers before the stamp wrote
    it (bare pids)."""
    if isinstance(entry, dict):
        queue.store.register_server(SERVER, entry)
        value = keys.encode_offer(entry["heartbeat_ms"], int(entry["lease_s"] * 1000), child_pids)
    else:
        value = keys.encode_pids(child_pids) if entry is None else entry

    def write(tx):  # type: ignore[no-untyped-def]
        tx.put(keys.DB_OFFERS, keys.server_key(SERVER), value)

    queue.store.env.write(write)  # type: ignore[attr-defined]


def _entry(age_ms: int, lease_s: float = 10.0) -> dict:
    return {
        "pid": 4242,
        "host": "thishost",
        "heartbeat_ms": now_ms() - age_ms,
        "children": [],
        "lease_s": lease_s,
    }


def _offers(queue: Queue) -> dict[str, list[int]]:
    def read(tx):  # type: ignore[no-untyped-def]
        return {
            keys.decode_worker_key(k): keys.decode_offer(v)[2]  # type: ignore[index]
            for k, v in tx.scan(keys.DB_OFFERS)
        }

    return queue.store.env.read(read)  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("case", ["fresh", "stale", "own lease", "unstamped", "unreadable"])
def test_hand_off_only_to_a_server_with_a_fresh_heartbeat(store_path, case) -> None:
    entry = {
        "fresh": _entry(0),
        "stale": _entry(11_000),
        "own lease": _entry(1_500, 1.0),
        "unstamped": None,
        "unreadable": b"\x02not an offer",
    }[case]
    with Queue(store_path) as queue:
        _offer(queue, [os.getpid()], entry)  # a live "child": this process
        queue.store.waker.hint = lambda child_pid, job_id: None  # no child to wake
        job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
        if case == "fresh":
            assert job.state == "processing"
            assert [(c.server_id, c.child_pid) for c in queue.store.claims()] == [
                (SERVER, os.getpid())
            ]
        else:  # queued for a live server, and the offer withdrawn
            assert job.state == "ready" and queue.store.claims() == []
            assert _offers(queue) == {}


def test_dead_children_are_skipped_and_dropped_from_the_offer(store_path, dead_pid) -> None:
    with Queue(store_path) as queue:
        _offer(queue, [dead_pid, os.getpid(), dead_pid], _entry(0))
        queue.store.waker.hint = lambda child_pid, job_id: None
        job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
        assert job.state == "processing"
        assert [c.child_pid for c in queue.store.claims()] == [os.getpid()]
        assert _offers(queue) == {SERVER: [dead_pid]}  # only what came after it is left
        _offer(queue, [dead_pid], _entry(0))
        assert queue.task_by_name("tests.support.tasks.add").delay(3, 4).state == "ready"
        assert _offers(queue) == {}


def test_a_heartbeat_restamps_the_servers_offer(store_path) -> None:
    """Producers read freshness from the offer alone: the server's heartbeat commit
    refreshes the offer's stamp, so an idle server's offer stays good while it beats."""
    with Queue(store_path) as queue:
        _offer(queue, [os.getpid()], _entry(11_000))  # offered, then 11 s without a beat
        queue.store.register_server(SERVER, _entry(0))  # the next beat
        queue.store.waker.hint = lambda child_pid, job_id: None
        assert queue.task_by_name("tests.support.tasks.add").delay(1, 2).state == "processing"
