"""``mpqueue top``: the figures of a store with known contents (``--once``, ``--json``),
the frames' rates and percentiles on every backend, the live view quitting on q in a
pty, and rich imported by nothing else."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpqueue import Queue
from mpqueue.cli import cli
from mpqueue.records import JobState, Progress, now_ms
from mpqueue.top import Watcher

from ..store.test_contract import add, queue, record, store, store_location  # noqa: F401
from ..support.helpers import claim_all, done, failed, mpqueue_without
from ..support.pg_helpers import pg_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
TASK = "tests.support.tasks.add"


def _known(store) -> dict[str, str]:
    """One done, one dead ("the known error"), one running (progress 3/10 "loading",
    ready 2 s before its claim), two ready (the first due 30 s ago) and one scheduled
    job; {role: job id}."""
    now = now_ms()
    early = [record().evolve(created_at_ms=now - 2000, run_at_ms=now - 2000) for _ in range(3)]
    finished, died, running = add(store, *early)
    claim_all(store, "srv-1", now=now)
    done(store, finished, 3, worker="srv-1", now=now + 500)
    failed(store, died, "the known error", worker="srv-1", now=now + 700, retryable=False)
    store.record_progress({running: Progress(3.0, 10.0, "loading", now)})
    add(store, record(run_at_ms=now - 30_000), record(), record(run_at_ms=now + 3_600_000))
    return {"done": finished, "dead": died, "running": running}


@pytest.fixture
def lmdb_store(tmp_path: Path):
    with Queue(str(tmp_path / "store")) as q:
        yield q.store, str(tmp_path / "store")


def _top(path: str, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--path", path, "top", *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.timeout(60)
def test_once_prints_the_known_figures(lmdb_store):
    store, path = lmdb_store
    ids = _known(store)
    out = _top(path, "--once")
    lines = out.splitlines()
    states = next(i for i, line in enumerate(lines) if line.split()[:2] == ["ready", "scheduled"])
    counts = dict(zip(lines[states].split(), lines[states + 1].split()))
    assert counts == {
        "ready": "2",
        "scheduled": "1",
        "processing": "1",
        "done": "1",
        "dead": "1",
        "waiting": "0",
        "cancelled": "0",
        "expired": "0",
        "total": "6",
    }
    (running,) = [line for line in lines if ids["running"] in line]
    assert running.split()[:3] == ["srv-1", "-", TASK]
    assert running.rstrip().endswith("3/10 (30%) loading")
    (dead,) = [line for line in lines if ids["dead"] in line]
    assert dead.rstrip().endswith("RuntimeError: the known error") and TASK in dead
    (latency,) = [line for line in lines if line.split()[:2] == ["start", "latency"]]
    assert latency.split()[2:] == ["2.000", "s", "2.000", "s", "1"]
    for figure in ("run time", "done/s", "failed/s"):  # one frame: no rate, no run time
        (line,) = [line for line in lines if line.strip().startswith(figure)]
        assert "n/a" in line
    assert "paused: nothing" in lines[0] and "Running (1)" in out
    assert re.search(r"oldest ready due 3\d\.\d s ago", lines[0]), lines[0]


@pytest.mark.timeout(60)
@pytest.mark.timeout(60)
def test_named_queues_get_a_table_of_their_own(lmdb_store):
    store, path = lmdb_store
    assert "Jobs by queue" not in _top(path, "--once")  # none in use: no table
    add(store, record(queue="heavy"), record(queue="heavy"), record())
    claim_all(store, "srv-1")
    add(store, record(queue="heavy"))
    lines = [line.strip() for line in _top(path, "--once").splitlines()]
    at = lines.index("Jobs by queue")
    rows = {line.split()[0]: line.split()[1:] for line in lines[at + 2 : at + 4]}
    assert rows == {"default": ["0", "1"], "heavy": ["1", "2"]}
    snap = json.loads(_top(path, "--once", "--json"))
    assert snap["queues"] == {
        "default": {"ready": 0, "processing": 1},
        "heavy": {"ready": 1, "processing": 2},
    }


def test_json_is_the_snapshot(lmdb_store):
    store, path = lmdb_store
    ids = _known(store)
    store.pause("some.task")
    snap = json.loads(_top(path, "--once", "--json"))
    assert snap["depth"] == dict(store.stats())
    assert snap["paused"] == {"all": False, "tasks": ["some.task"]}
    assert snap["done_per_s"] is None and snap["failed_per_s"] is None
    assert 30 <= snap["oldest_ready_age_s"] < 60
    assert snap["run_time"] is None
    assert snap["start_latency"] == {"count": 1, "p50_s": 2.0, "p95_s": 2.0}
    assert snap["running_total"] == 1
    (job,) = snap["running"]
    assert (job["job_id"], job["task"], job["server"], job["child_pid"]) == (
        ids["running"],
        TASK,
        "srv-1",
        None,
    )
    assert (job["progress"]["done"], job["progress"]["total"]) == (3.0, 10.0)
    assert job["progress"]["message"] == "loading" and job["elapsed_s"] >= 0
    (failure,) = snap["failures"]
    assert failure["job_id"] == ids["dead"] and failure["error"] == "RuntimeError: the known error"
    assert failure["task"] == TASK and failure["finished_at_ms"] is not None


@pytest.mark.timeout(60)
def test_frames_give_rates_and_run_times(store):  # every backend
    watcher = Watcher(store)
    a, b, c = add(store, record(), record(), record())
    t0 = now_ms()  # after the records: each is due at its own creation time
    claim_all(store, "srv-1", now=t0)
    first = watcher.frame(at_ms=t0 + 100)
    assert first.done_per_s is None and first.run_time is None and first.running_total == 3
    done(store, a, 1, worker="srv-1", now=t0 + 1500)
    failed(store, b, worker="srv-1", now=t0 + 3500, retryable=False)
    second = watcher.frame(at_ms=t0 + 2100)  # 2 s after the first: one done, one dead
    assert (second.done_per_s, second.failed_per_s) == (0.5, 0.5)
    assert second.run_time is not None and second.run_time.count == 2
    assert (second.run_time.p50_s, second.run_time.p95_s) == (1.5, 3.5)
    assert [r.job_id for r in second.running] == [c] and second.running_total == 1
    # A minute later the window holds the last frames only: no change, rate 0.
    later = watcher.frame(at_ms=t0 + 70_000)
    later = watcher.frame(at_ms=t0 + 71_000)
    assert (later.done_per_s, later.failed_per_s) == (0.0, 0.0)
    assert later.run_time is None and later.start_latency is None
    assert [f.job_id for f in later.failures] == [b]
    assert store.get(c).state is JobState.PROCESSING  # top only reads


# ---- the live view --------------------------------------------------------------------
def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MPQUEUE_PATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env | extra


@pytest.mark.timeout(60)
def test_live_view_refreshes_and_quits_on_q(lmdb_store):
    store, path = lmdb_store
    ids = _known(store)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpqueue", "--path", path, "top", "--interval", "0.2"],
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env=_env(COLUMNS="200", LINES="60", TERM="xterm"),
        close_fds=True,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while ids["running"].encode() not in seen and time.monotonic() < deadline:
            if select.select([leader], [], [], 0.5)[0]:
                seen += os.read(leader, 65536)
        assert ids["running"].encode() in seen, seen[-2000:]
        os.write(leader, b"q")
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)


# ---- without rich ---------------------------------------------------------------------
def _without_rich(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, bool]:
    return mpqueue_without("rich", tmp_path, *args)


@pytest.mark.timeout(90)
def test_only_what_draws_imports_rich(tmp_path):
    """rich is a dependency, but a command that draws nothing never pays its import."""
    path = str(tmp_path / "store")
    plain = ("stats",), ("list",), ("top", "--json"), ("serve", "--until-empty", "--workers", "1")
    for args in plain:  # serve's stderr is no terminal: plain progress lines
        run, imported = _without_rich(tmp_path, "--path", path, *args)
        assert run.returncode == 0 and not imported, (args, run.stderr)
    run, imported = _without_rich(tmp_path, "--path", path, "top", "--once")
    assert imported and run.returncode != 0
