"""``mpqueue periodic list|pause|resume`` (CliRunner, a real LMDB store in tmp_path)."""

from __future__ import annotations

import json
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpqueue import Queue
from mpqueue.cli import cli
from mpqueue.identity import current
from mpqueue.periodic import Periodic, declare, fire_due
from mpqueue.periodic_slots import Spec
from mpqueue.records import now_ms
from mpqueue.schedules import ScheduleSpec

NAME = "reports.nightly"


def nightly() -> None:
    pass


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A store with two schedules: one fired once (its job ready), one never."""
    path = str(tmp_path / "store")
    with Queue(path) as queue:
        task = queue.task(nightly, name=NAME)
        other = queue.task(nightly, name="reports.hourly")
        defs = {
            NAME: Periodic(
                ScheduleSpec.of(NAME, Spec.parse(every=_s(10))),
                task,
                partial(queue._slot_jobs, task),
            ),
            "reports.hourly": Periodic(
                ScheduleSpec.of("reports.hourly", Spec.parse(every=_s(3600))),
                other,
                partial(queue._slot_jobs, other),
            ),
        }
        now = now_ms()
        declare(queue.store, defs, "nobody-there", now - 20_000, lambda d: True)
        fire_due(queue.store, defs, now, lambda: lambda d: True)
    return path


def _s(seconds: int):
    from datetime import timedelta

    return timedelta(seconds=seconds)


def run(store: str, *args: str):
    return CliRunner().invoke(cli, ["--path", store, *args], catch_exceptions=False)


def listing(store: str) -> dict[str, dict]:
    result = run(store, "periodic", "list", "--json")
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)}


def test_list_shows_spec_next_and_last_run_and_last_outcome(store):
    rows = listing(store)
    assert rows[NAME]["spec"] == "every 10s" and rows[NAME]["last_outcome"] == "ready"
    assert rows[NAME]["last_fired_ms"] is not None and rows[NAME]["next_due_ms"] is not None
    assert rows["reports.hourly"]["last_outcome"] is None
    # The declarer is a server id that names no process: not known dead, so not retired.
    assert not rows[NAME]["retired"] and not rows[NAME]["paused"]
    text = run(store, "periodic", "list").stdout
    assert "NEXT RUN" in text and "every 10s" in text and "ready" in text and "active" in text


def test_pause_and_resume_change_the_listing(store):
    assert run(store, "periodic", "pause", NAME).stdout == f"Paused {NAME}.\n"
    assert "already paused" in run(store, "periodic", "pause", NAME).stdout
    row = listing(store)[NAME]
    assert row["paused"] and row["next_due_ms"] is None
    assert run(store, "periodic", "resume", NAME).stdout == f"Resumed {NAME}.\n"
    assert "was not paused" in run(store, "periodic", "resume", NAME).stdout
    assert not listing(store)[NAME]["paused"]


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_an_unknown_name_is_a_one_line_error_that_changes_nothing(store, verb):
    before = listing(store)
    result = CliRunner().invoke(cli, ["--path", store, "periodic", verb, "nope"])
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: no periodic schedule named 'nope' in this store"
    ]
    assert listing(store) == before


def test_a_retired_schedule_shows_as_retired(tmp_path):
    path = str(tmp_path / "store")
    with Queue(path) as queue:
        task = queue.task(nightly, name=NAME)
        defs = {
            NAME: Periodic(
                ScheduleSpec.of(NAME, Spec.parse(every=_s(10))),
                task,
                partial(queue._slot_jobs, task),
            )
        }
        # A local server id whose process is gone (this pid, another start time).
        gone = replace(current(), started_ms=1).server_id
        declare(queue.store, defs, gone, now_ms(), lambda d: True)
    row = listing(path)[NAME]
    assert row["retired"], row
    assert "retired" in run(path, "periodic", "list").stdout


def test_help_explains_the_commands():
    result = CliRunner().invoke(cli, ["periodic", "--help"])
    assert result.exit_code == 0 and "retired" in result.stdout
    for verb in ("list", "pause", "resume"):
        assert CliRunner().invoke(cli, ["periodic", verb, "--help"]).exit_code == 0
