"""Hooks under ``mpqueue serve``: registered at import time on the queue of the task's
module (tests/support/hook_tasks.py), found by the child that imports it, run there once
per event with the job; a raising hook changes nothing; ``child_start`` once per child.
On LMDB and PostgreSQL (the hooks run in the child, whatever the store)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from mpqueue import Queue
from mpqueue.records import FINISHED_STATES, JobState

from ..support.hook_tasks import LOG_ENV, read_log
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import servers, wait_until  # noqa: F401

TASKS = "tests.support.hook_tasks"


@pytest.fixture(params=["lmdb", "postgres"])
def store_location(request, tmp_path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "store")


@pytest.fixture
def hook_log(tmp_path, monkeypatch) -> str:
    """The file the hooks write to; servers started after this inherit its name."""
    path = str(tmp_path / "hooks.log")
    monkeypatch.setenv(LOG_ENV, path)
    return path


def _finished(queue: Queue, job_ids: list[str], timeout: float = 30.0) -> list:
    def done() -> list | None:
        records = queue.store.get_many(job_ids)
        ok = all(r is not None and r.state in FINISHED_STATES for r in records)
        return records if ok else None

    return wait_until(done, timeout, "every job finished")  # type: ignore[no-any-return]


def _by_job(entries: list[dict]) -> dict[str, list[dict]]:
    jobs: dict[str, list[dict]] = {}
    for entry in entries:
        if "job" in entry:
            jobs.setdefault(entry["job"], []).append(entry)
    return jobs


@pytest.mark.timeout(90)
def test_hooks_run_once_per_event_in_the_child_with_the_job(store_location, servers, hook_log):
    with Queue(store_location) as queue:
        echo = queue.task_by_name(f"{TASKS}.echo")
        jobs = [echo.delay(i) for i in range(6)]
        exploded = echo.delay(99, explode=True)  # its hooks raise, SystemExit included
        server = servers(store_location, "--workers", "2")
        records = _finished(queue, [j.id for j in [*jobs, exploded]])
        children = set(server.wait_ready(queue, 2))
    assert all(r.state is JobState.DONE for r in records)
    assert exploded.result(timeout=0)["x"] == 99  # the result is intact
    entries = read_log(hook_log)
    by_job = _by_job(entries)
    assert set(by_job) == {r.id for r in records}
    for rec, job in zip(records, [*jobs, exploded]):
        result = job.result(timeout=0)
        lines = by_job[rec.id]
        assert [e["event"] for e in lines] == ["start", "success"], lines
        assert {e["pid"] for e in lines} == {result["pid"]}  # in the child that ran it
        assert result["pid"] != os.getpid() and result["pid"] in children
        assert all(e["attempt"] == 1 and e["task"] == f"{TASKS}.echo" for e in lines)
        assert lines[0]["args"] == [result["x"]] and lines[0]["result"] is None
        assert lines[1]["result"] == result
    # child_start: once per child, before that child's first job
    starts = [e["pid"] for e in entries if e["event"] == "child_start"]
    assert Counter(starts) == Counter(set(starts)) and set(starts) <= children
    for pid in {e["pid"] for e in entries if "job" in e}:
        first_job = next(i for i, e in enumerate(entries) if e["pid"] == pid and "job" in e)
        assert entries.index({"event": "child_start", "pid": pid}) < first_job
    log = server.log()
    assert "start hook tests.support.hook_tasks.explode raised" in log
    assert "success hook tests.support.hook_tasks.explode raised" in log
    assert "RuntimeError: start hook exploded" in log and "SystemExit: 3" in log


@pytest.mark.timeout(90)
def test_a_failing_job_fires_failure_and_retry_then_failure_and_dead(
    store_location, servers, hook_log
):
    """retries=1: two runs, the first retried, the second dead; each fires its own."""
    with Queue(store_location) as queue:
        job = queue.task_by_name(f"{TASKS}.always_fails").delay("x")
        servers(store_location, "--workers", "1")
        (rec,) = _finished(queue, [job.id])
    assert rec.state is JobState.DEAD and rec.attempts == 2
    lines = _by_job(read_log(hook_log))[job.id]
    assert [(e["event"], e["attempt"]) for e in lines] == [
        ("start", 1),
        ("failure", 1),
        ("retry", 1),
        ("start", 2),
        ("failure", 2),
        ("dead", 2),
    ]
    assert [e["exception"] for e in lines] == [None, "RuntimeError", "RuntimeError"] * 2


@pytest.mark.timeout(60)
def test_a_job_cancelled_while_it_runs_fires_cancelled(tmp_path, servers, hook_log):
    path = str(tmp_path / "store")
    with Queue(path) as queue:
        job = queue.task_by_name(f"{TASKS}.until_cancelled").delay()
        servers(path, "--workers", "1")
        wait_until(lambda: _by_job(read_log(hook_log)).get(job.id), 20, "the job started")
        queue.cancel(job.id)
        (rec,) = _finished(queue, [job.id])
    assert rec.state is JobState.CANCELLED
    lines = _by_job(read_log(hook_log))[job.id]
    assert [(e["event"], e["exception"]) for e in lines] == [
        ("start", None),
        ("cancelled", "Cancelled"),
    ]


@pytest.mark.timeout(60)
def test_child_start_runs_when_the_child_starts_for_imported_modules(tmp_path, servers, hook_log):
    """With --import, the set-up runs in each child before any job comes: none here."""
    path = str(tmp_path / "store")
    with Queue(path) as queue:
        server = servers(path, "--workers", "2", "--import", TASKS)
        children = set(server.wait_ready(queue, 2))

        def both_started() -> list[int] | None:
            starts = [e["pid"] for e in read_log(hook_log) if e["event"] == "child_start"]
            return starts if set(starts) == children else None

        starts = wait_until(both_started, 20, "child_start in both children")
    assert sorted(starts) == sorted(children)  # once each
    assert Path(hook_log).read_text().count('"job"') == 0
