"""Damaged store files: refused with a one-line error before LMDB maps them, found by
``mpqueue check``, never a SIGBUS; ``mpqueue backup`` while a server runs; the server's
backoff on a store that keeps failing (a real full disk)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import struct
import subprocess
import sys
from pathlib import Path

import lmdb
import pytest

from mpqueue import Queue
from mpqueue.store.lmdb import meta as lmdb_meta
from mpqueue.store.lmdb.meta import check_data_file

from ..support.helpers import wait_until
from ..support.pg_helpers import pg_url  # noqa: F401  (fixture)
from ..support.serve_helpers import ROOT, servers  # noqa: F401  (fixture)

JOBS = 300


def cli(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "mpqueue", "--path", path, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_store(path: str, jobs: int = JOBS) -> None:
    with Queue(path) as queue:
        queue.task_by_name("tests.support.tasks.add").map([(i, 1) for i in range(jobs)])


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_one_line_corrupt(result: subprocess.CompletedProcess[str], data: Path) -> None:
    assert result.returncode > 0, (result.returncode, result.stderr)  # -7 would be SIGBUS
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "corrupt" in last and str(data) in last, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize("size", [8192, 0])
def test_a_truncated_data_file_is_refused_by_every_command(tmp_path: Path, size: int) -> None:
    path = str(tmp_path / "store")
    make_store(path)
    data = tmp_path / "store" / "data.mdb"
    os.truncate(data, size)
    before = digest(data)
    for args in (
        ["stats"],
        ["list"],
        ["check"],
        ["backup", str(tmp_path / "copy")],
        ["serve", "--workers", "1", "--until-empty"],
    ):
        result = cli(path, *args)
        assert_one_line_corrupt(result, data)
        assert result.returncode == (2 if args[0] == "check" else 1), args
    assert data.stat().st_size == size and digest(data) == before  # nothing rewrote it


def _tree_root(data: Path, name: bytes) -> int:
    """The root page of one named database, read from the main tree's root leaf."""
    raw = data.read_bytes()
    meta = max(
        (lmdb_meta.parse_meta(raw[at : at + 4096]) for at in (0, 4096)), key=lambda m: m.txn_id
    )
    page = raw[meta.main_root * 4096 : (meta.main_root + 1) * 4096]
    for node_at in lmdb_meta._node_offsets(page):
        _, _, _, key_size = struct.unpack_from("=HHHH", page, node_at)
        key_at = node_at + 8
        if page[key_at : key_at + key_size] == name:
            return int(struct.unpack_from("=Q", page, key_at + key_size + 40)[0])
    raise AssertionError(f"no database {name!r}")


@pytest.mark.timeout(120)
def test_a_corrupt_page_is_reported_as_corrupt_and_stops_the_server(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    make_store(path)
    assert cli(path, "check").returncode == 0
    data = tmp_path / "store" / "data.mdb"
    with open(data, "r+b") as fh:
        fh.seek(_tree_root(data, b"jobs") * 4096)
        fh.write(b"\xab" * 4096)
    result = cli(path, "check")
    assert_one_line_corrupt(result, data)
    assert result.returncode == 2
    as_json = json.loads(cli(path, "check", "--json").stdout)
    assert as_json["code"] == 2 and "corrupt" in as_json["corrupt"][0]
    served = cli(path, "serve", "--workers", "1", "--until-empty")  # opens fine, then fails
    assert_one_line_corrupt(served, data)


def test_check_finds_an_index_entry_without_a_job(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    make_store(path, jobs=3)
    with Queue(path) as queue:
        job = queue.list()[0]
        store = queue.store
        store.env.write(lambda tx: tx.delete(b"jobs", job.id.encode()))  # type: ignore[attr-defined]
    result = cli(path, "check")
    assert result.returncode == 1, result.stdout
    assert f"job {job.id}" in result.stdout and "does not exist" in result.stdout


def test_the_meta_check_passes_a_healthy_store_with_an_unwritten_tail(tmp_path: Path) -> None:
    """LMDB may leave pages it allocated and freed in one commit past the end of the
    file; the check must tell that from a truncation (it reads the free-page tree)."""
    env = lmdb.open(str(tmp_path), map_size=1 << 30, max_dbs=2, sync=False)
    dbs = [env.open_db(b"a"), env.open_db(b"b")]
    rng = random.Random(1)
    keys: list[bytes] = []
    gaps = 0
    for _ in range(6000):
        with env.begin(write=True) as txn:
            for _ in range(rng.randint(1, 60)):
                if keys and rng.random() < 0.5:
                    key = keys.pop(rng.randrange(len(keys)))
                    for db in dbs:
                        txn.delete(key, db=db)
                else:
                    keys.append(rng.randbytes(rng.randint(8, 60)))
                    txn.put(
                        keys[-1],
                        rng.randbytes(rng.choice([10, 100, 1000, 5000])),
                        db=rng.choice(dbs),
                    )
        check_data_file(str(tmp_path))  # raises StoreCorrupt if it misjudges the tail
        raw = (tmp_path / "data.mdb").read_bytes()
        last_page, _ = max(
            (struct.unpack_from("=QQ", raw, at + 136) for at in (0, 4096)), key=lambda meta: meta[1]
        )
        gaps += len(raw) < (last_page + 1) * 4096
    env.close()
    assert gaps, "this workload no longer leaves an unwritten tail: pick another seed"


@pytest.mark.timeout(120)
def test_backup_while_a_server_runs_jobs_opens_and_checks_clean(tmp_path: Path, servers) -> None:
    path = str(tmp_path / "store")
    make_store(path, jobs=2000)
    server = servers(path, "--workers", "2")
    with Queue(path) as queue:
        server.wait_ready(queue, 2)
        wait_until(lambda: queue.stats()["done"] > 0, 30, "jobs running")
        dest = tmp_path / "copy"
        result = cli(path, "backup", str(dest))
        assert result.returncode == 0, result.stderr
        assert oct(dest.stat().st_mode & 0o777) == "0o700"
        assert oct((dest / "data.mdb").stat().st_mode & 0o777) == "0o600"
    checked = cli(str(dest), "check", "--json")
    report = json.loads(checked.stdout)
    assert checked.returncode == 0 and report["jobs"] == 2000, report
    assert cli(path, "backup", str(dest)).returncode == 2  # not over an existing store
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0


@pytest.fixture
def full_disk(tmp_path: Path):
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)])


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    return filler


@pytest.mark.timeout(120)
def test_the_backoff_grows_on_a_full_disk_and_logs_once_per_step(
    tmp_path: Path, full_disk: Path, servers
) -> None:
    path = str(full_disk / "store")
    marker = tmp_path / "markers.log"
    with Queue(path) as queue:
        # Its 300 KB result needs new pages when it is committed: after the disk is full.
        job = queue.task_by_name("tests.support.serve_tasks.sleepy").delay(
            str(marker), "x" * 300_000, 1.0
        )
        server = servers(path, "--workers", "1")
        wait_until(lambda: marker.exists() and "start" in marker.read_text(), 30, "job start")
        filler = _fill(full_disk)
        top = "retrying in 1.60 s"  # reached after ~1.6 s of doubling from 0.05 s
        wait_until(lambda: top in server.log(), 30, "the backoff to grow to 1.6 s")
        warnings = [line for line in server.log().splitlines() if "store unavailable" in line]
        assert len(warnings) == 6, warnings  # 0.05, 0.1, 0.2, 0.4, 0.8, 1.6: one per step
        filler.unlink()
        wait_until(lambda: queue.get(job.id).state == "done", 30, "the job's commit")
    server.send(signal.SIGTERM)
    assert server.wait(30) == 0


def test_check_reports_an_undecodable_registry_entry(tmp_path: Path) -> None:
    path = str(tmp_path / "store")
    make_store(path, jobs=2)
    with Queue(path) as queue:
        queue.store.env.write(
            lambda tx: tx.put(  # type: ignore[attr-defined]
                b"workers", b"a-server", b"\x01\xc1 not msgpack"
            )
        )
    result = cli(path, "check", "--json")
    report = json.loads(result.stdout)
    assert result.returncode == 2 and report["code"] == 2, result.stdout
    assert any("registry entry of a-server" in line for line in report["corrupt"])


@pytest.mark.timeout(60)
def test_check_on_postgres_finds_a_row_at_odds_with_its_state(pg_url: str) -> None:
    import psycopg

    with Queue(pg_url) as queue:
        jobs = queue.task_by_name("tests.support.tasks.add").map([(1, 1), (2, 2)])
    assert cli(pg_url, "check").returncode == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:  # processing, held by nobody
        conn.execute(
            "UPDATE mpqueue_jobs SET state = 'processing', worker_id = NULL WHERE id = %s",
            (jobs[0].id,),
        )
    result = cli(pg_url, "check")
    assert result.returncode == 1 and jobs[0].id in result.stdout, result.stdout
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO mpqueue_workers (worker_id, info, heartbeat_at) "
            "VALUES ('a-server', '\\x01c1'::bytea, now())"
        )
    assert cli(pg_url, "check").returncode == 2
