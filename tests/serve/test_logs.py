"""``mpqueue serve --log-format json``: every stderr line (the server's and its children's)
parses with ``json.loads``; at ``info`` each job that ended has its line, with its outcome,
from the coordinator (a crash the child cannot report too). The plain format and the
default level are as they were: no per-job lines unless asked for."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime

import pytest

from mpqueue import Queue

from ..support.hook_tasks import LOG_ENV
from ..support.serve_helpers import ROOT

HOOKS = "tests.support.hook_tasks"
SERVE = "tests.support.serve_tasks"
PLAIN_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ mpqueue(\.\w+)+: ")


def _serve(
    store: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "mpqueue", "--path", store, "serve", "--workers", "2"]
    cmd += ["--until-empty", *args]
    env = dict(env or os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def _enqueue(store: str, marker: str) -> dict[str, str]:
    """One job that is done, one dead after two failed runs, one whose worker dies on
    every run (three crashes: retried twice, then dead); their ids by role."""
    with Queue(store) as queue:
        return {
            "done": queue.task_by_name(f"{HOOKS}.echo").delay(1).id,
            "exploded": queue.task_by_name(f"{HOOKS}.echo").delay(2, explode=True).id,
            "dead": queue.task_by_name(f"{HOOKS}.always_fails").delay("x").id,
            "crash": queue.task_by_name(f"{SERVE}.suicide").delay(marker, "c").id,
        }


@pytest.mark.timeout(90)
def test_json_lines_parse_and_carry_every_job_with_its_outcome(tmp_path):
    store = str(tmp_path / "store")
    ids = _enqueue(store, str(tmp_path / "marker"))
    env = dict(os.environ, **{LOG_ENV: str(tmp_path / "hooks.log")})
    run = _serve(store, "--log-format", "json", "--log-level", "info", env=env)
    assert run.returncode == 1, run.stderr  # jobs ended dead
    lines = [json.loads(line) for line in run.stderr.splitlines()]  # every line is JSON
    assert lines and all(
        {"time", "level", "logger", "message", "server_id"} <= set(e) for e in lines
    )
    server_ids = {e["server_id"] for e in lines}
    assert len(server_ids) == 1  # the children's lines carry their server's id
    for entry in lines:
        stamp = datetime.fromisoformat(entry["time"].replace("Z", "+00:00"))
        assert entry["time"].endswith("Z") and stamp.utcoffset().total_seconds() == 0
    jobs = [e for e in lines if e["logger"] == "mpqueue.jobs"]
    assert all(e["level"] == "info" for e in jobs)
    runs = {
        role: [(e["outcome"], e["attempt"], e.get("error_kind")) for e in jobs if e["job_id"] == i]
        for role, i in ids.items()
    }
    assert runs == {
        "done": [("done", 1, None)],
        "exploded": [("done", 1, None)],
        "dead": [("retried", 1, "exception"), ("dead", 2, "exception")],
        "crash": [("retried", 1, "crash"), ("retried", 2, "crash"), ("dead", 3, "crash")],
    }
    for entry in jobs:
        assert entry["task"].startswith("tests.support.")
        assert isinstance(entry["duration_s"], float) and entry["duration_s"] >= 0
        assert entry["job_id"] in entry["message"]
    # the raising hooks of the exploded job were logged by its child, in JSON, traceback in
    hooks = [e for e in lines if e["logger"] == "mpqueue.hooks"]
    assert {e["level"] for e in hooks} == {"error"} and len(hooks) == 2
    assert all(ids["exploded"] in e["message"] and "Traceback" in e["exception"] for e in hooks)


@pytest.mark.timeout(90)
def test_plain_is_the_default_format_and_job_lines_need_info(tmp_path):
    store = str(tmp_path / "store")
    ids = _enqueue(store, str(tmp_path / "marker"))
    default = _serve(store, "--no-progress")
    assert default.returncode == 1, default.stderr
    assert "mpqueue.jobs" not in default.stderr  # off at the default level (warning)
    assert f"job {ids['dead']} (tests.support.hook_tasks.always_fails) is dead" in default.stderr
    records = [line for line in default.stderr.splitlines() if line[:1].isdigit()]
    assert all(PLAIN_LINE.match(line) for line in records)  # the rest: hooks' tracebacks
    assert len(records) == 7  # 2 raising hooks, 3 crashes, 2 dead

    ids = _enqueue(store, str(tmp_path / "marker"))
    info = _serve(store, "--no-progress", "--log-level", "info")
    job_lines = [line for line in info.stderr.splitlines() if " INFO mpqueue.jobs: " in line]
    assert all(PLAIN_LINE.match(line) for line in info.stderr.splitlines() if line[:1].isdigit())
    done = f"INFO mpqueue.jobs: job {ids['done']} (tests.support.hook_tasks.echo) done after "
    assert any(done in line and line.endswith("s (attempt 1)") for line in job_lines)
    assert any(ids["crash"] in line and "dead after" in line for line in job_lines)
    assert len(job_lines) == 7


def test_help_explains_the_option():
    done = subprocess.run(
        [sys.executable, "-m", "mpqueue", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    text = " ".join(done.stdout.split())
    assert "--log-format [plain|json]" in text and "one JSON object a line" in text
    assert "[default: plain]" in text and "[default: warning]" in text


def test_progress_lines_stay_out_of_the_json_stream(tmp_path):
    store = str(tmp_path / "store")
    with Queue(store) as queue:
        queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    run = _serve(store, "--log-format", "json")
    assert run.returncode == 0 and run.stderr == ""  # nothing at warning, no progress lines
