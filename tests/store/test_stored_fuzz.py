"""Random bytes where a store keeps a value: a job record, a claim (processing index),
a hand-off offer and a server's registry entry, written with raw LMDB as another
program or a damaged disk could. Whatever they hold, no store call that a server, a
producer or a reader makes may fail because of them, every other job still runs, and
a real ``serve --until-empty`` still starts, runs every good job and exits cleanly.

The checks go through the store's public behaviour (a record that cannot be decoded
reads as a dead stand-in), not through the codec, which may change.
"""

from __future__ import annotations

import os

import hypothesis.strategies as st
import lmdb
import pytest
from hypothesis import HealthCheck, example, given, settings

from mpqueue import Queue
from mpqueue.identity import Identity, boot_id, host_id, pid_namespace
from mpqueue.records import JobRecord, JobState, Outcome, new_job_id, now_ms
from mpqueue.serve.recovery import reclaim_dead
from mpqueue.store.lmdb import keys
from mpqueue.store.lmdb.env import _OPEN_ENVS

from ..support.helpers import claim_all
from ..support.serve_helpers import env, servers  # noqa: F401


def dead_server(n: int) -> str:
    """The server id of a coordinator on this host that is gone: its pid is above any
    pid_max, so no process has it."""
    return Identity(host_id(), boot_id(), pid_namespace(), 2**22 + n, 1).server_id


GONE = dead_server(7)
OTHER_GONE = dead_server(8)
TARGETS = ("record", "claim", "offer", "registry")
NAME = "tests.support.tasks.add"
QUICK = "tests.support.serve_tasks.quick"


def raw_put(path: str, entries: list[tuple[bytes, bytes, bytes]]) -> None:
    """(db, key, value) written with a raw lmdb handle; every Queue on it is closed."""
    assert os.path.realpath(path) not in _OPEN_ENVS, "close the store before a raw handle"
    raw = lmdb.open(path, max_dbs=len(keys.ALL_DBS) + 2, subdir=True)
    try:
        dbs = {db: raw.open_db(db) for db, _, _ in entries}  # each opens in its own txn
        with raw.begin(write=True) as txn:
            for db, key, value in entries:
                txn.put(key, value, db=dbs[db])
    finally:
        raw.close()


def garbage_at(
    target: str, job_id: str, value: bytes, name: str = NAME
) -> list[tuple[bytes, bytes, bytes]]:
    """Where random bytes go for each target: the record of ``job_id`` (and its copy in
    the name index), the claim a dead server holds on it, that server's offer and its
    registry entry."""
    return {
        "record": [
            (keys.DB_JOBS, keys.job_key(job_id), value),
            (keys.DB_BY_NAME, keys.by_name_key(name, job_id), value),
        ],
        "claim": [(keys.DB_PROCESSING, keys.processing_key(GONE, job_id), value)],
        "offer": [(keys.DB_OFFERS, keys.server_key(GONE), value)],
        "registry": [(keys.DB_WORKERS, keys.server_key(GONE), value)],
    }[target]


@pytest.mark.timeout(120)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(TARGETS), value=st.binary(max_size=48))
@example(target="offer", value=b"")  # an offer of no child
@example(target="offer", value=b"\x00\x00\x00")  # not a whole pid
@example(target="offer", value=b"\x00" * 4)  # pid 0
@example(target="claim", value=b"\x02")  # a claim version with no body
@example(target="registry", value=b"\x80\x05K\x01.")  # a pickle, but not a dict
@example(target="record", value=b"")
def test_random_bytes_never_fail_a_store_call(tmp_path_factory, target, value):
    path = str(tmp_path_factory.mktemp("fuzz") / "store")
    with Queue(path) as queue:
        add = queue.task_by_name(NAME)
        jobs = add.map([(i, i) for i in range(3)])
        (held,) = queue.store.claim(GONE, 1, now_ms())  # a server that died held one
    victim = jobs[1].id if target == "record" else held.id
    raw_put(path, garbage_at(target, victim, value))

    with Queue(path) as queue:
        store = queue.store
        # What a starting server does, then a producer (the hand-off reads offers) and
        # the readers; none may raise.
        reclaim_dead(store, "me")
        store.servers()
        store.claims()
        late = queue.task_by_name(NAME).delay(9, 9)
        reclaim_dead(store, "me")  # a job handed to the dead server's "child" comes back
        claimed = claim_all(store, "me")
        store.finish([Outcome.done(r.id, "me", b"") for r in claimed], now_ms())
        listed = {job.id: job.state for job in queue.list()}
        assert store.stats()["total"] == 4 and len(listed) == 4
        assert store.claims() == []  # nothing left held by anyone
        good = {job.id for job in jobs} | {late.id}
        endings = store.endings([job.id for job in jobs])  # a chord callback's read
        assert [e.state.value for e in endings if e is not None] == [listed[j.id] for j in jobs]
        if target == "record":
            assert listed[victim] == "dead"  # the unreadable one, and only it
            good.discard(victim)
        assert {job_id for job_id, state in listed.items() if state == "done"} == good


@pytest.mark.timeout(120)
def test_serve_runs_every_good_job_past_bad_stored_values(env, servers):
    """One store with each kind of bad value at once; a real server starts, runs
    every good job to done, dead-letters the bad ones and exits cleanly."""
    marker = str(env.marker)
    quick = env.task("quick")
    good = quick.map([(marker, i) for i in range(9)])
    (unreadable,) = quick.map([(marker, "unreadable")])
    (held,) = env.queue.store.claim(GONE, 1, now_ms())  # a server that died held one
    assert held.id == good[0].id
    now = now_ms()
    out_of_bounds = [  # as older code accepted them
        JobRecord(
            id=new_job_id(),
            name=QUICK,
            state=JobState.READY,
            payload=good[0].record.payload,
            run_at_ms=now,
            created_at_ms=now,
            timeout_s=1e17,
        ),
        JobRecord(
            id=new_job_id(),
            name=QUICK,
            state=JobState.SCHEDULED,
            payload=good[0].record.payload,
            run_at_ms=now - 1,
            created_at_ms=now - 2,
            backoff_cap_s=float("inf"),
        ),
    ]
    env.queue.store.add(out_of_bounds)
    env.queue.close()
    raw_put(
        env.path,
        [
            *garbage_at("record", unreadable.id, b"\x01\xffnot a record", QUICK),
            *garbage_at("claim", held.id, b"\x03\x00garbage"),
            (keys.DB_WORKERS, keys.server_key(OTHER_GONE), b"\x80\x05garbage"),
            (keys.DB_OFFERS, keys.server_key(OTHER_GONE), b"\x00\x01\x02"),
        ],
    )

    server = servers(env.path, "--workers", "2", "--until-empty")
    rc = server.wait(60)
    log = server.log()
    assert rc == 0, log[-3000:]  # no job that ran died; the bad ones never ran
    assert "Traceback" not in log, log[-3000:]
    runs = env.runs()
    for job in good:
        assert env.record(job).state is JobState.DONE, job.id
    for rec in out_of_bounds:
        dead = env.queue.store.get(rec.id)
        assert dead.state is JobState.DEAD
        assert "stored value out of bounds" in dead.errors[-1].message
    assert env.queue.store.get(unreadable.id).state is JobState.DEAD
    assert "unreadable" not in runs
    stats = env.stats()
    assert (stats["done"], stats["dead"], stats["processing"]) == (9, 3, 0), stats
    assert set(env.queue.store.servers()) == set()  # the dead servers' entries are gone
