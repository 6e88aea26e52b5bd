"""Whoever can write a value into the store must not run code in a process that only
reads it (issue 10, item 3): records and registry entries are decoded without pickle;
pickle-era records are read without globals and rewritten on open.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import lmdb
import msgpack
import pytest

from mpqueue import ConfigError, Queue
from mpqueue.store.codec import RECORD_V1, RECORD_V2, decode_record, encode_record
from mpqueue.store.lmdb import keys
from mpqueue.store.lmdb.env import _OPEN_ENVS

from ..support.helpers import Plant
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.second_user import as_nobody, public_dir  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def _raw_env(path: str) -> lmdb.Environment:
    assert os.path.realpath(path) not in _OPEN_ENVS, "close the store before a raw handle"
    return lmdb.open(path, max_dbs=len(keys.ALL_DBS) + 2, subdir=True)


def _cli(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "mpqueue", "--path", path, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.timeout(120)
def test_planted_pickles_run_no_code_in_list_show_stats_or_serve(tmp_path):
    path = str(tmp_path / "store")
    proof = tmp_path / "code-ran"
    with Queue(path) as queue:
        add = queue.task_by_name("tests.support.tasks.add")
        victim, bystander = add.map([(1, 1), (2, 2)])
    planted = RECORD_V1 + pickle.dumps(Plant(str(proof)))
    env = _raw_env(path)
    try:  # (each open_db before the write transaction: it would wait for it)
        jobs_db, by_name, workers = (
            env.open_db(db) for db in (keys.DB_JOBS, keys.DB_BY_NAME, keys.DB_WORKERS)
        )
        with env.begin(write=True) as txn:
            txn.put(keys.job_key(victim.id), planted, db=jobs_db)
            for key, _ in list(txn.cursor(db=by_name)):
                if key.endswith(victim.id.encode()):
                    txn.put(key, planted, db=by_name)
            txn.put(keys.server_key("planted-server"), pickle.dumps(Plant(str(proof))), db=workers)
    finally:
        env.close()

    for args in (["list"], ["show", victim.id], ["stats"], ["list", "--json"]):
        _cli(path, *args)
        assert not proof.exists(), f"`mpqueue {' '.join(args)}` ran the planted code"
    result = _cli(path, "serve", "--until-empty", "--workers", "1")
    assert not proof.exists(), "serve ran the planted code"
    with Queue(path) as queue:
        assert queue.get(bystander.id).state == "done", result.stdout + result.stderr
        assert queue.get(victim.id).state == "dead"  # shown as a corrupt stand-in


def test_pickle_era_records_are_read_and_rewritten_on_open(tmp_path):
    path = str(tmp_path / "store")
    with Queue(path) as queue:
        jobs = queue.task_by_name("tests.support.tasks.add").map([(i, i) for i in range(5)])
        # as the pickle era wrote them: without the fields added since (previews)
        before = {j.id: queue.store.get(j.id).evolve(preview=None) for j in jobs}
    env = _raw_env(path)
    try:  # write them back as the old code did: a pickled tuple behind b"\x01"
        db, meta = env.open_db(keys.DB_JOBS), env.open_db(keys.DB_META)
        with env.begin(write=True) as txn:
            for job_id, rec in before.items():
                row = msgpack.unpackb(encode_record(rec)[1:], use_list=False)[:-1]  # no signature
                txn.put(keys.job_key(job_id), RECORD_V1 + pickle.dumps(row, protocol=5), db=db)
            txn.delete(keys.META_CODEC, db=meta)
    finally:
        env.close()
    with Queue(path) as queue:
        assert {j.id: queue.store.get(j.id) for j in jobs} == before
    env = _raw_env(path)
    try:
        db = env.open_db(keys.DB_JOBS)
        with env.begin() as txn:
            raws = [txn.get(keys.job_key(j), db=db) for j in before]
    finally:
        env.close()
    assert all(raw[:1] == RECORD_V2 for raw in raws)
    assert [decode_record(raw) for raw in raws] == list(before.values())


# ---- who may open a store ----------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o000])
def test_new_stores_are_private_whatever_the_umask(tmp_path, umask):
    path = str(tmp_path / "store")
    old = os.umask(umask)
    try:
        with Queue(path) as queue:
            queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o700
    for name in ("data.mdb", "lock.mdb"):
        assert os.stat(os.path.join(path, name)).st_mode & 0o777 == 0o600, name


def _make_store_dir_as_nobody(path: str) -> bool:
    os.mkdir(path, 0o755)
    return True


def test_a_store_another_user_made_is_refused_unless_shared(public_dir, monkeypatch):
    os.chmod(public_dir, 0o1777)  # like /tmp: anyone may create a directory there
    path = os.path.join(public_dir, "store")
    as_nobody(_make_store_dir_as_nobody, path)
    with pytest.raises(ConfigError, match="belongs to uid 65534.*MPQUEUE_SHARED_STORE"):
        Queue(path).stats()
    assert os.listdir(path) == []  # nothing was written into it
    result = _cli(path, "stats")
    assert result.returncode != 0 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("Error: ") and "uid 65534" in result.stderr
    monkeypatch.setenv("MPQUEUE_SHARED_STORE", "1")
    with Queue(path) as queue:
        assert queue.stats()["total"] == 0


@pytest.mark.parametrize("victim", ["", "data.mdb", "lock.mdb"])
def test_a_store_others_can_write_is_refused_naming_the_fix(tmp_path, victim):
    path = str(tmp_path / "store")
    with Queue(path) as queue:
        queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    os.chmod(os.path.join(path, victim), 0o777 if not victim else 0o666)
    with pytest.raises(ConfigError, match="writable by group or others.*chmod -R go-w"):
        Queue(path).stats()
    result = _cli(path, "list")
    assert result.returncode != 0 and result.stderr.startswith("Error: "), result.stderr


@pytest.mark.timeout(120)
def test_a_planted_registry_row_runs_no_code_in_postgres_servers(pg_url, tmp_path):
    import psycopg

    proof = tmp_path / "code-ran"
    with Queue(pg_url) as queue:
        job = queue.task_by_name("tests.support.tasks.add").delay(2, 3)
        queue.stats()  # the schema exists now
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO mpqueue_workers (worker_id, info, heartbeat_at) "
            "VALUES (%s, %s, now() - interval '1 hour')",
            ("planted-server", pickle.dumps(Plant(str(proof)))),
        )
    result = _cli(pg_url, "serve", "--until-empty", "--workers", "1")
    assert not proof.exists(), "a PostgreSQL server ran the planted registry row"
    assert result.returncode == 0, result.stderr[-2000:]
    with Queue(pg_url) as queue:
        assert queue.get(job.id).result(timeout=5) == 5
