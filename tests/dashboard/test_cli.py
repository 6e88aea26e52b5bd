"""``mpqueue dashboard`` as a command: its refusals, and a real server answering."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

pytest.importorskip("starlette", reason="the dashboard tests need the 'dashboard' extra")

from mpqueue import Queue

from ..support.helpers import run_cli
from .helpers import populate, served


def test_listening_beyond_loopback_needs_a_token(tmp_path):
    result = run_cli("--path", str(tmp_path / "s"), "dashboard", "--host", "0.0.0.0", cwd=tmp_path)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a token" in lines[0] and "--token" in lines[0]


def test_help_says_what_it_does(tmp_path):
    result = run_cli("dashboard", "--help", cwd=tmp_path)
    assert result.returncode == 0
    for word in ("--host", "--port", "--token", "--read-only", "never unpickles"):
        assert word in result.stdout


@pytest.mark.timeout(90)
def test_a_real_server_serves_the_pages_and_checks_its_token(tmp_path):
    location = str(tmp_path / "store")
    with Queue(location) as queue:
        jobs = populate(queue)
    with served(location, "--token", "t0ken") as url:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/")
        assert refused.value.code == 401
        ask = urllib.request.Request(url + f"/jobs/{jobs['dead']}")
        ask.add_header("Authorization", "Bearer t0ken")
        with urllib.request.urlopen(ask) as reply:
            assert reply.status == 200 and b"&lt;script&gt;" in reply.read()


def test_dead_requeue_can_schedule_a_re_drive(tmp_path):
    location = str(tmp_path / "store")
    with Queue(location) as queue:
        jobs = populate(queue)
    later = run_cli(
        "--path", location, "dead", "requeue", jobs["dead"], "--delay", "600", cwd=tmp_path
    )
    assert later.returncode == 0, later.stderr
    bad = run_cli(
        "--path", location, "dead", "requeue", "--all", "--at", "02:00 tomorrow", cwd=tmp_path
    )
    assert bad.returncode == 1 and "--at must be an ISO date" in bad.stderr
    with Queue(location) as queue:
        rec = queue.store.get(jobs["dead"])
        assert rec.state.value == "scheduled" and rec.run_at_ms > rec.created_at_ms + 590_000


@pytest.mark.timeout(120)
def test_a_real_server_writes_the_result_preview(tmp_path):
    """The preview of a result travels from the child that ran the job, on its pipe,
    to the coordinator's commit."""
    location = str(tmp_path / "store")
    with Queue(location) as queue:
        job = queue.task_by_name("tests.support.tasks.add").delay(40, 2)
    result = run_cli("--path", location, "serve", "--until-empty", "--workers", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with Queue(location) as queue:
        rec = queue.store.get(job.id)
        assert (rec.state.value, rec.preview, rec.result_preview) == ("done", "40, 2", "42")
