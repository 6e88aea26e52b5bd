"""The command line, through click's CliRunner on a real store in tmp_path.

Every error case checks three things: a one-line ``Error: ...`` on stderr, a non-zero
exit code, and a store exactly as it was before the command.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from mpqueue import Queue
from mpqueue.cli import cli
from mpqueue.records import ErrorInfo, Outcome, now_ms

from ..support import cli_tasks
from ..support.helpers import run_cli

ADD = cli_tasks.add.name
FAIL = cli_tasks.fail.name
PLAIN = f"{cli_tasks.__name__}.plain"
MISSING_ID = "0" * 32

Run = Callable[..., Result]


# ---- fixtures and helpers ---------------------------------------------------------
@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's $MPQUEUE_PATH or writes into the work tree."""
    monkeypatch.delenv("MPQUEUE_PATH", raising=False)
    monkeypatch.chdir(tmp_path)
    # The CLI puts the current directory on sys.path; keep that out of other tests.
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture
def store(tmp_path: Path) -> str:
    return str(tmp_path / "store")


@pytest.fixture
def run(store: str) -> Run:
    """Run the CLI against ``store``: ``run("list", "--json", input="y\\n")``."""

    def invoke(*args: str, input: str | None = None, path: str | None = store) -> Result:
        prefix = [] if path is None else ["--path", path]
        return CliRunner().invoke(cli, [*prefix, *args], input=input, prog_name="mpqueue")

    return invoke


def snapshot(path: str) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Everything a command could change: the counts and every job."""
    with Queue(path) as queue:
        return queue.stats(), [job.to_dict() for job in queue.list()]


def enqueue(path: str, task: str, *args: Any, **kwargs: Any) -> str:
    with Queue(path) as queue:
        return queue.enqueue(queue.task_by_name(task), args, kwargs).id


def claim_and_finish(path: str, outcome: Callable[[str], Outcome]) -> str:
    """Claim the one ready job with the highest priority and apply ``outcome(id)``."""
    with Queue(path) as queue:
        rec = queue.store.claim("w", 1, now_ms())[0]
        queue.store.finish([outcome(rec.id)], now_ms())
        return rec.id


def make_dead(path: str, message: str = "boom") -> str:
    """A dead job, failed through the store API as a worker would."""
    enqueue(path, FAIL, message)  # priority 5: claimed before the add jobs
    error = ErrorInfo(
        "ValueError",
        message,
        traceback=f"Traceback (most recent call "
        f'last):\n  File "cli_tasks.py"\nValueError: {message}\n',
        attempt=1,
        at_ms=now_ms(),
    )
    return claim_and_finish(
        path, lambda job_id: Outcome.failed(job_id, "w", error, retryable=False)
    )


def make_done(path: str, value: Any) -> str:
    from mpqueue.serializer import dump_result

    enqueue(path, FAIL, "never raised")
    return claim_and_finish(path, lambda job_id: Outcome.done(job_id, "w", dump_result(value)))


@pytest.fixture
def filled(store: str) -> dict[str, str]:
    """A store with one job in each of ready, scheduled, done and dead."""
    ids = {"done": make_done(store, {"answer": 42}), "dead": make_dead(store)}
    ids["ready"] = enqueue(store, ADD, 1, b=2)
    with Queue(store) as queue:
        ids["scheduled"] = queue.enqueue(queue.task_by_name(ADD), (5,), {}, delay=3600).id
    return ids


def assert_clean_error(result: Result, code: int, *needles: str) -> None:
    """One ``Error:`` line on stderr, the expected exit code, no traceback."""
    assert result.exit_code == code, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


def assert_fails_cleanly(
    run: Run, store: str, code: int, args: list[str], *needles: str, input: str | None = None
) -> Result:
    before = snapshot(store)
    result = run(*args, input=input)
    assert_clean_error(result, code, *needles)
    assert snapshot(store) == before
    return result


# ---- enqueue ----------------------------------------------------------------------
def test_enqueue_prints_the_id_and_stores_the_job(run: Run, store: str) -> None:
    result = run("enqueue", ADD, "[1]", "--kwargs", '{"b": 2}', "--priority", "7")
    assert result.exit_code == 0, result.output
    job_id = result.stdout.strip()
    with Queue(store) as queue:
        job = queue.get(job_id)
        assert job is not None
        assert (job.name, job.state, job.priority) == (ADD, "ready", 7)
        assert job.args() == ((1,), {"b": 2})


def test_enqueue_json_output_and_delay(run: Run, store: str) -> None:
    before_ms = now_ms()
    result = run("enqueue", ADD, "[1, 2]", "--delay", "60", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert job["name"] == ADD and job["state"] == "scheduled"
    assert job["run_at_ms"] >= before_ms + 60_000
    assert snapshot(store)[1] == [job]


def test_enqueue_with_a_deadline_and_a_key(run: Run, store: str) -> None:
    before_ms = now_ms()
    first = json.loads(
        run("enqueue", ADD, "[1, 2]", "--expires", "30", "--key", "p-1", "--json").stdout
    )
    assert first["key"] == "p-1"
    assert before_ms + 30_000 <= first["expires_at_ms"] <= now_ms() + 30_000
    again = run("enqueue", ADD, "[9, 9]", "--key", "p-1")  # the held key: the same job
    assert again.exit_code == 0 and again.stdout.strip() == first["id"]
    assert snapshot(store)[0]["total"] == 1


def test_enqueue_without_args_uses_the_task_options(run: Run, store: str) -> None:
    result = run("enqueue", FAIL, "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout)
    assert (job["priority"], job["max_retries"]) == (5, 0)  # from @queue.task(...)


def test_enqueue_a_plain_function(run: Run) -> None:
    result = run("enqueue", PLAIN, '["x"]', "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == PLAIN


def test_enqueue_finds_a_module_in_the_current_directory(
    run: Run, store: str, tmp_path: Path
) -> None:
    module = "mpqueue_cli_cwd_tasks"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent("""
        def square(x):
            return x * x
    """)
    )
    sys.path[:] = [p for p in sys.path if p not in ("", str(tmp_path), ".")]
    try:
        result = run("enqueue", f"{module}.square", "[3]")
    finally:
        sys.modules.pop(module, None)
    assert result.exit_code == 0, result.output
    assert snapshot(store)[1][0]["name"] == f"{module}.square"


@pytest.mark.parametrize(
    "args, code, needles",
    [
        (["no_such_module_xyz.task"], 1, ["no_such_module_xyz.task"]),
        ([f"{cli_tasks.__name__}.no_such_task"], 1, ["no_such_task"]),
        ([f"{cli_tasks.__name__}.NOT_CALLABLE"], 1, ["not callable"]),
        ([ADD, '{"a": 1}'], 2, ["ARGS", "JSON array", "object"]),
        ([ADD, "3"], 2, ["ARGS", "JSON array", "number"]),
        ([ADD, '"3"'], 2, ["ARGS", "JSON array", "string"]),
        ([ADD, "[1,"], 2, ["ARGS", "invalid JSON"]),
        ([ADD, "[1]", "--kwargs", "{b: 2}"], 2, ["--kwargs", "invalid JSON"]),
        ([ADD, "[1]", "--kwargs", "[2]"], 2, ["--kwargs", "JSON object"]),
        ([ADD, "[1]", "--delay", "-1"], 1, ["delay", ">= 0"]),
        ([ADD, "[1]", "--delay", "nan"], 1, ["delay"]),
        ([ADD, "[1]", "--delay", "1e16"], 1, ["delay must be at most 3153600000 s", "1e+16"]),
        ([ADD, "[1]", "--delay", "inf"], 1, ["delay"]),
        ([ADD, "[1]", "--delay", "soon"], 2, ["--delay", "soon"]),
        ([ADD, "[1]", "--priority", str(2**40)], 1, ["priority"]),
        ([ADD, "[1]", "--expires", "-5"], 1, ["expires"]),
        ([ADD, "[1]", "--expires", "later"], 2, ["--expires", "later"]),
        ([ADD, "[1]", "--key", ""], 1, ["key"]),
        ([ADD, "[1]", "[2]"], 2, ["unexpected extra argument"]),
        ([], 2, ["TASK"]),
    ],
)
def test_enqueue_rejects_bad_input(
    run: Run, store: str, filled: dict[str, str], args: list[str], code: int, needles: list[str]
) -> None:
    assert_fails_cleanly(run, store, code, ["enqueue", *args], *needles)


# ---- list -------------------------------------------------------------------------
def test_list_table(run: Run, filled: dict[str, str]) -> None:
    result = run("list")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["ID", "NAME", "STATE", "ATTEMPTS", "PRIORITY"]
    assert "RUN AT" in header
    assert sorted(row.split()[0] for row in rows) == sorted(filled.values())
    by_id = {row.split()[0]: row.split() for row in rows}
    assert by_id[filled["dead"]][1:5] == [FAIL, "dead", "1", "5"]


def test_list_json_and_filters(run: Run, filled: dict[str, str]) -> None:
    everything = json.loads(run("list", "--json").stdout)
    assert {job["id"] for job in everything} == set(filled.values())
    assert [j["id"] for j in json.loads(run("list", "--state", "dead", "--json").stdout)] == [
        filled["dead"]
    ]
    named = json.loads(run("list", "--name", ADD, "--json").stdout)
    assert {job["id"] for job in named} == {filled["ready"], filled["scheduled"]}
    oldest = json.loads(run("list", "--limit", "2", "--json").stdout)
    assert [job["id"] for job in oldest] == [filled["done"], filled["dead"]]
    assert json.loads(run("list", "--name", "nobody", "--json").stdout) == []


def test_list_empty_store(run: Run) -> None:
    result = run("list")
    assert result.exit_code == 0 and result.stdout.strip() == "No jobs."


def _map(path: str, count: int) -> list[str]:
    with Queue(path) as queue:
        return [job.id for job in queue.task_by_name(ADD).map([(i, i) for i in range(count)])]


def test_list_shows_a_default_limit_and_says_when_there_are_more(run: Run, store: str) -> None:
    ids = _map(store, 150)
    result = run("list")
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ids[:100]  # the oldest 100
    assert "more" in result.stderr and "--limit N or --all" in result.stderr
    listed = run("list", "--json")
    assert [job["id"] for job in json.loads(listed.stdout)] == ids[:100]  # still JSON
    assert "--all" in listed.stderr
    everything = run("list", "--all", "--json")
    assert [job["id"] for job in json.loads(everything.stdout)] == ids
    assert everything.stderr == ""
    exact = run("list", "--limit", "150", "--json")  # all of them: nothing to report
    assert len(json.loads(exact.stdout)) == 150 and exact.stderr == ""
    assert run("list", "--limit", "149").stderr != ""


def test_dead_list_has_the_same_limit(run: Run, store: str) -> None:
    dead = [make_dead(store, f"boom {i}") for i in range(3)]
    result = run("dead", "list", "--limit", "2", "--json")
    assert [job["id"] for job in json.loads(result.stdout)] == dead[:2]
    assert "--all" in result.stderr
    assert len(json.loads(run("dead", "list", "--all", "--json").stdout)) == 3


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--limit", "3", "--all"], ["--limit", "--all"]),
        (["--state", "bad"], ["bad", "--state", "dead"]),
        (["--limit", "-1"], ["--limit"]),
        (["--limit", "many"], ["--limit"]),
    ],
)
def test_list_rejects_bad_options(
    run: Run, store: str, filled: dict[str, str], args: list[str], needles: list[str]
) -> None:
    assert_fails_cleanly(run, store, 2, ["list", *args], *needles)


# ---- show -------------------------------------------------------------------------
def test_show_a_done_job(run: Run, filled: dict[str, str]) -> None:
    result = run("show", filled["done"])
    assert result.exit_code == 0, result.output
    for label in (
        "id:",
        "name:",
        "state:",
        "priority:",
        "attempts:",
        "timeout:",
        "backoff:",
        "created at:",
        "run at:",
        "finished at:",
        "args:",
        "kwargs:",
        "result:",
        "errors:",
    ):
        assert label in result.stdout, label
    assert "{'answer': 42}" in result.stdout
    assert "['never raised']" in result.stdout or "('never raised',)" in result.stdout


def test_show_a_dead_job_with_its_traceback(run: Run, filled: dict[str, str]) -> None:
    result = run("show", filled["dead"])
    assert result.exit_code == 0, result.output
    assert "ValueError: boom" in result.stdout
    assert "Traceback (most recent call last):" in result.stdout
    assert "result:" not in result.stdout


def test_show_json(run: Run, filled: dict[str, str]) -> None:
    done = json.loads(run("show", filled["done"], "--json").stdout)
    assert done["result"] == {"answer": 42} and done["state"] == "done"
    assert done["args"] == ["never raised"] and done["kwargs"] == {}
    dead = json.loads(run("show", filled["dead"], "--json").stdout)
    assert dead["errors"][0]["type"] == "ValueError"
    assert "Traceback" in dead["errors"][0]["traceback"]
    assert {"backoff_base_s", "backoff_cap_s", "max_retries", "timeout_s"} <= set(dead)


def test_show_prints_a_jobs_retry_lists_only_when_it_has_them(run: Run, store: str) -> None:
    with Queue(store) as queue:
        task = queue.task_by_name(PLAIN)
        listed = task.options(retry_on=(OSError,), no_retry_on=(FileNotFoundError,)).delay(1)
        nothing = task.options(retry_on=()).delay(2)
        plain = task.delay(3)
    shown = run("show", listed.id).stdout
    assert "retry on:    builtins.OSError\n" in shown
    assert "no retry on: builtins.FileNotFoundError\n" in shown
    assert "retry on:    nothing (no exception)\n" in run("show", nothing.id).stdout
    assert "retry on" not in run("show", plain.id).stdout
    as_json = json.loads(run("show", listed.id, "--json").stdout)
    assert as_json["retry_on"] == ["builtins.OSError"]
    assert as_json["no_retry_on"] == ["builtins.FileNotFoundError"]
    plain_json = json.loads(run("show", plain.id, "--json").stdout)
    assert plain_json["retry_on"] is None and plain_json["no_retry_on"] == []


def test_show_json_of_unusual_arguments(run: Run, store: str) -> None:
    job_id = enqueue(store, PLAIN, {(1, 2): {3}}, b"raw")
    shown = json.loads(run("show", job_id, "--json").stdout)
    assert shown["args"] == [{"(1, 2)": "{3}"}, "b'raw'"]


def test_show_cuts_a_huge_result_unless_full(run: Run, store: str) -> None:
    job_id = make_done(store, ["x" * 3_000_000, b"y" * 1_000_000])
    shown = run("show", job_id)
    assert shown.exit_code == 0, shown.output
    assert len(shown.stdout) < 10_000
    (line,) = [line for line in shown.stdout.splitlines() if line.startswith("result:")]
    assert line.startswith("result:      ['xxx") and line.endswith("--full shows all)")
    as_json = json.loads(run("show", job_id, "--json").stdout)
    assert len(as_json["result"][0]) < 3_000 and as_json["result"][0].endswith("all)")
    whole = run("show", job_id, "--full")
    assert "x" * 3_000_000 in whole.stdout and "--full shows all" not in whole.stdout
    assert (
        json.loads(run("show", job_id, "--json", "--full").stdout)["result"][0] == "x" * 3_000_000
    )


@pytest.mark.parametrize("job_id", [MISSING_ID, "not-an-id"])
def test_show_unknown_job(run: Run, store: str, filled: dict[str, str], job_id: str) -> None:
    assert_fails_cleanly(run, store, 1, ["show", job_id], "no job", job_id)


# ---- stats ------------------------------------------------------------------------
def test_stats(run: Run, store: str, filled: dict[str, str]) -> None:
    counts = snapshot(store)[0]
    nothing = {"all": False, "tasks": []}
    with Queue(store) as queue:
        due_ms = queue.store.get(filled["ready"]).run_at_ms
    before_ms = now_ms()
    shown = json.loads(run("stats", "--json").stdout)
    age = shown.pop("oldest_ready_age_s")
    by_queue = shown.pop("queues")
    assert shown == {**counts, "paused": nothing}
    assert by_queue == {"default": {"ready": counts["ready"], "processing": counts["processing"]}}
    assert (before_ms - due_ms) / 1000 <= age <= (now_ms() - due_ms) / 1000
    text = run("stats").stdout
    for state, count in counts.items():
        assert f"{state}:" in text and str(count) in text
    assert "paused:     nothing" in text
    assert re.search(r"^oldest ready: due \d+\.\d s ago$", text, re.M), text
    assert counts["total"] == 4


def test_queues_on_the_command_line(run: Run, store: str) -> None:
    heavy = [run("enqueue", ADD, "[1, 2]", "--queue", "heavy").stdout.strip() for _ in range(2)]
    plain = run("enqueue", ADD, "[3, 4]").stdout.strip()
    shown = json.loads(run("stats", "--json").stdout)["queues"]
    assert shown == {
        "default": {"ready": 1, "processing": 0},
        "heavy": {"ready": 2, "processing": 0},
    }
    text = run("stats").stdout
    assert re.search(r"^heavy\s+2\s+0$", text, re.M) and re.search(r"^default\s+1\s+0$", text, re.M)
    listed = json.loads(run("list", "--queue", "heavy", "--json").stdout)
    assert [job["id"] for job in listed] == heavy and {j["queue"] for j in listed} == {"heavy"}
    assert [j["id"] for j in json.loads(run("list", "--queue", "default", "--json").stdout)] == [
        plain
    ]
    header = run("list").stdout.splitlines()[0]
    assert header.split()[:4] == ["ID", "NAME", "STATE", "QUEUE"]
    assert re.search(r"^queue:\s+heavy$", run("show", heavy[0]).stdout, re.M)
    for bad in (["enqueue", ADD, "[1]", "--queue", "no spaces"], ["list", "--queue", "a,b"]):
        result = CliRunner().invoke(cli, ["--path", store, *bad])
        assert result.exit_code != 0 and "bad queue name" in result.output
    assert json.loads(run("stats", "--json").stdout)["total"] == 3  # the bad ones added nothing


def test_stats_without_a_ready_job_has_no_age(run: Run, store: str) -> None:
    assert json.loads(run("stats", "--json").stdout)["oldest_ready_age_s"] is None
    assert "oldest ready: none" in run("stats").stdout


def test_stats_says_what_is_paused(run: Run, store: str, filled: dict[str, str]) -> None:
    run("pause", ADD)
    run("pause")
    counts = snapshot(store)[0]
    shown = json.loads(run("stats", "--json").stdout)
    del shown["oldest_ready_age_s"], shown["queues"]
    assert shown == {**counts, "paused": {"all": True, "tasks": [ADD]}}
    assert f"paused:     every job, {ADD}" in run("stats").stdout


# ---- dead -------------------------------------------------------------------------
def test_dead_list(run: Run, filled: dict[str, str]) -> None:
    result = run("dead", "list")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert "LAST ERROR" in header
    assert row.startswith(filled["dead"]) and "ValueError: boom" in row
    jobs = json.loads(run("dead", "list", "--json").stdout)
    assert [job["id"] for job in jobs] == [filled["dead"]]


def test_dead_list_empty(run: Run) -> None:
    assert run("dead", "list").stdout.strip() == "No dead jobs."
    assert json.loads(run("dead", "list", "--json").stdout) == []


def test_dead_requeue_one(run: Run, store: str, filled: dict[str, str]) -> None:
    result = run("dead", "requeue", filled["dead"])
    assert result.exit_code == 0, result.output
    assert filled["dead"] in result.stdout
    with Queue(store) as queue:
        job = queue.get(filled["dead"])
        assert job is not None and (job.state, job.attempts) == ("ready", 0)
        assert queue.stats()["dead"] == 0


def test_dead_requeue_all(run: Run, store: str, filled: dict[str, str]) -> None:
    second = make_dead(store, "again")
    result = run("dead", "requeue", "--all")
    assert result.exit_code == 0, result.output
    assert "Requeued 2" in result.stdout
    states = {job["id"]: job["state"] for job in snapshot(store)[1]}
    assert states[filled["dead"]] == states[second] == "ready"


@pytest.mark.parametrize(
    "args, code, needles",
    [
        ([MISSING_ID], 1, ["no job", MISSING_ID]),
        (["garbage"], 1, ["no job", "garbage"]),
        ([], 2, ["JOB_ID", "--all"]),
        ([MISSING_ID, "--all"], 2, ["JOB_ID", "--all"]),
    ],
)
def test_dead_requeue_rejects_bad_input(
    run: Run, store: str, filled: dict[str, str], args: list[str], code: int, needles: list[str]
) -> None:
    assert_fails_cleanly(run, store, code, ["dead", "requeue", *args], *needles)


def test_dead_requeue_refuses_a_job_that_is_not_dead(
    run: Run, store: str, filled: dict[str, str]
) -> None:
    assert_fails_cleanly(run, store, 1, ["dead", "requeue", filled["done"]], "only dead jobs")


def test_dead_purge_with_yes(run: Run, store: str, filled: dict[str, str]) -> None:
    make_dead(store, "again")
    result = run("dead", "purge", "--yes")
    assert result.exit_code == 0, result.output
    assert "Deleted 2" in result.stdout
    counts, jobs = snapshot(store)
    assert counts["dead"] == 0 and counts["total"] == 3
    assert filled["dead"] not in {job["id"] for job in jobs}


def test_dead_purge_asks_first(run: Run, store: str, filled: dict[str, str]) -> None:
    result = run("dead", "purge", input="y\n")
    assert result.exit_code == 0, result.output
    assert "Delete 1 dead job" in result.stdout
    assert snapshot(store)[0]["dead"] == 0


@pytest.mark.parametrize("answer", ["n\n", ""])
def test_dead_purge_declined_changes_nothing(
    run: Run, store: str, filled: dict[str, str], answer: str
) -> None:
    before = snapshot(store)
    result = run("dead", "purge", input=answer)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert snapshot(store) == before


def test_dead_purge_with_nothing_to_purge(run: Run) -> None:
    result = run("dead", "purge")
    assert result.exit_code == 0 and "No dead jobs" in result.stdout


# ---- global options and errors ----------------------------------------------------
def test_path_from_the_environment(run: Run, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPQUEUE_PATH", store)
    job_id = run("enqueue", ADD, "[1]", path=None).stdout.strip()
    assert [job["id"] for job in snapshot(store)[1]] == [job_id]


def test_default_path_is_in_the_current_directory(run: Run, tmp_path: Path) -> None:
    assert run("enqueue", ADD, "[1]", path=None).exit_code == 0
    assert snapshot(str(tmp_path / "mpqueue-data"))[0]["total"] == 1


def test_legacy_mode(run: Run) -> None:
    job_id = run("--mode", "legacy", "enqueue", ADD, "[1]").stdout.strip()
    jobs = json.loads(run("--mode", "legacy", "list", "--json").stdout)
    assert [job["id"] for job in jobs] == [job_id]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--mode", "fast", "list"], ["--mode", "fast"]),
        (["frobnicate"], ["frobnicate"]),
        (["dead", "resurrect"], ["resurrect"]),
    ],
)
def test_usage_errors_are_one_line(
    run: Run, store: str, filled: dict[str, str], args: list[str], needles: list[str]
) -> None:
    assert_fails_cleanly(run, store, 2, args, *needles)


def test_path_that_is_a_file(run: Run, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    assert_clean_error(run("stats", path=str(tmp_path / "afile")), 2, "afile")


def test_every_option_is_explained() -> None:
    def walk(command: click.Command) -> list[click.Command]:
        subs = getattr(command, "commands", {}).values()
        return [command, *(c for sub in subs for c in walk(sub))]

    for command in walk(cli):
        assert command.help, command.name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, f"{command.name} {param.opts}"


def test_help_of_every_command(run: Run) -> None:
    for args in (
        ["--help"],
        ["enqueue", "-h"],
        ["list", "--help"],
        ["show", "--help"],
        ["stats", "--help"],
        ["dead", "--help"],
        ["dead", "purge", "--help"],
    ):
        result = run(*args)
        assert result.exit_code == 0 and result.stdout.startswith("Usage: mpqueue"), args


def _run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd)


def test_python_dash_m_help(tmp_path: Path) -> None:
    started = time.monotonic()
    done = _run_module("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: mpqueue")
    for command in ("enqueue", "list", "show", "stats", "dead"):
        assert command in done.stdout
    assert not (tmp_path / "mpqueue-data").exists()  # --help opens no store
    assert time.monotonic() - started < 60


def test_python_dash_m_error_is_one_line(tmp_path: Path) -> None:
    done = _run_module("--path", str(tmp_path / "s"), "show", MISSING_ID, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"Error: no job with id '{MISSING_ID}'\n"


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_check_on_a_missing_store_says_so_and_creates_nothing(tmp_path: Path, json_flag) -> None:
    missing = tmp_path / "no-such-store"
    done = run_cli("--path", str(missing), "check", *json_flag, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == f"Error: no store at {str(missing)!r}: nothing to check\n"
    assert not missing.exists()


# ---- workflows ------------------------------------------------------------------------------
def _chord(store: str, members: int) -> tuple[str, list[str]]:
    from mpqueue import chord, group

    with Queue(store) as queue:
        add = queue.task_by_name(ADD)
        callback = chord(group(add.s(i, b=1) for i in range(members)), add.s(b=0)).delay()
        assert callback.group is not None
        return callback.id, callback.group.ids


def test_show_lists_dependencies_and_dependents(run: Run, store: str) -> None:
    callback, members = _chord(store, 25)
    shown = run("show", callback)
    assert shown.exit_code == 0, shown.output
    assert "state:       waiting" in shown.stdout and "depends on:  25" in shown.stdout
    assert f"  {members[0]}  ready" in shown.stdout and members[-1] not in shown.stdout
    assert "and 5 more (--full lists them all)" in shown.stdout
    assert "inputs:      its dependencies' results, as a list" in shown.stdout
    assert members[-1] in run("show", callback, "--full").stdout
    member = run("show", members[3])
    assert f"dependents:  1\n  {callback}  waiting" in member.stdout
    as_json = json.loads(run("show", callback, "--json").stdout)
    assert as_json["depends_on"] == members and as_json["pass_results"] == "all"
    assert json.loads(run("show", members[0], "--json").stdout)["dependents"] == [callback]


def test_list_and_stats_show_waiting_jobs(run: Run, store: str) -> None:
    callback, _ = _chord(store, 3)
    listed = json.loads(run("list", "--state", "waiting", "--json").stdout)
    assert [job["id"] for job in listed] == [callback]
    counts = json.loads(run("stats", "--json").stdout)
    assert counts["waiting"] == 1 and counts["ready"] == 3 and counts["cancelled"] == 0
    assert "waiting:" in run("stats").stdout


# ---- cancel -------------------------------------------------------------------------
def test_cancel_by_id_prints_what_it_did(run: Run, filled: dict[str, str], store: str) -> None:
    result = run("cancel", filled["ready"], filled["done"], "--reason", "typo")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Cancelled 1 queued job(s); 1 had ended already."
    with Queue(store) as queue:
        job = queue.get(filled["ready"])
        assert job is not None and job.state == "cancelled" and "typo" in job.error.message


def test_cancel_bulk_dry_run_then_json(run: Run, store: str) -> None:
    ids = [enqueue(store, ADD, i, b=i) for i in range(3)]
    before = snapshot(store)
    result = run("cancel", "--name", ADD, "--dry-run")
    assert result.exit_code == 0 and result.output.strip() == "Would cancel 3 queued job(s)."
    assert snapshot(store) == before
    result = run("cancel", "--name", ADD, "--state", "ready", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["counts"]["cancelled"] == 3 and sorted(out["cancelled"]) == sorted(ids)
    assert out["dry_run"] is False and snapshot(store)[0]["cancelled"] == 3


def test_cancel_a_missing_id_exits_1_naming_it(run: Run, filled: dict[str, str]) -> None:
    result = run("cancel", filled["ready"], MISSING_ID)
    assert result.exit_code == 1
    assert f"no job with id {MISSING_ID}" in result.output


@pytest.mark.parametrize(
    "args, code, needle",
    [
        (["cancel"], 2, "say what to cancel"),
        (["cancel", MISSING_ID, "--name", ADD], 2, "not both"),
        (["cancel", "--state", "done"], 2, "'done' is not one of"),
        (["cancel", "not-an-id"], 1, "not a job id"),
        (["cancel", "--state", "ready", "--reason", "x" * 1001], 1, "at most 1000"),
    ],
)
def test_cancel_rejects_bad_input(
    run: Run, store: str, filled: dict[str, str], args: list[str], code: int, needle: str
) -> None:
    assert_fails_cleanly(run, store, code, args, needle)


def test_show_and_list_print_a_jobs_progress(run: Run, filled: dict[str, str], store: str) -> None:
    from mpqueue.records import Progress

    with Queue(store) as queue:
        queue.store.record_progress({filled["ready"]: Progress(3, 10, "loading", now_ms())})
    result = run("show", filled["ready"])
    assert result.exit_code == 0 and "progress:    3/10 (30%) loading" in result.output
    result = run("list")
    assert "PROGRESS" in result.output and "3/10 (30%) loading" in result.output
    listed = {j["id"]: j for j in json.loads(run("list", "--json").output)}
    assert listed[filled["ready"]]["progress"]["done"] == 3
    assert listed[filled["done"]]["progress"] is None
    assert json.loads(run("show", filled["ready"], "--json").output)["progress"]["total"] == 10


# ---- pause / resume -------------------------------------------------------------------
def test_limits_lists_sets_and_removes_limits(run: Run, store: str) -> None:
    assert "No limits." in run("limits").output
    jobs = [enqueue(store, ADD, i, b=1) for i in range(3)]
    result = run("limits", "--set", f"task:{ADD}=1", "--set", "queue:heavy=4")
    assert result.exit_code == 0, result.output
    with Queue(store) as queue:
        assert [rec.id for rec in queue.store.claim("w", 10, now_ms())] == jobs[:1]
    shown = json.loads(run("limits", "--json").output)
    no_rate = {"rate": None, "rate_count": None, "rate_window_s": None}
    assert shown == [
        {"kind": "queue", "name": "heavy", "concurrency": 4, "running": 0, **no_rate},
        {"kind": "task", "name": ADD, "concurrency": 1, "running": 1, **no_rate},
    ]
    bad = run("limits", "--remove", "queue:heavy", "--set", "queue:other=0")
    assert bad.exit_code != 0 and "1..100000" in bad.output
    bad = run("limits", "--remove", "queue:heavy", "--rate", "queue:heavy=5/ms")
    assert bad.exit_code != 0 and "N/s, N/m or N/h" in bad.output
    assert len(json.loads(run("limits", "--json").output)) == 2  # nothing changed
    # --rate adds a rate and keeps the concurrency; --set changes it and keeps the rate
    assert run("limits", "--rate", "queue:heavy=30/10s").exit_code == 0
    assert run("limits", "--set", "queue:heavy=2").exit_code == 0
    heavy = json.loads(run("limits", "--json").output)[0]
    assert heavy["concurrency"] == 2 and heavy["rate"] == "30/10s"
    assert (heavy["rate_count"], heavy["rate_window_s"]) == (30, 10.0)
    assert run("limits", "--rate", "task:other.task=5/s").exit_code == 0
    assert "5/s" in run("limits").output
    removed = ("--remove", "queue:heavy", "--remove", f"task:{ADD}", "--remove", "task:other.task")
    assert run("limits", *removed).exit_code == 0
    assert json.loads(run("limits", "--json").output) == []


def test_pause_and_resume_hold_a_tasks_jobs_from_claims(run: Run, store: str) -> None:
    held, free = enqueue(store, ADD, 1, b=2), enqueue(store, FAIL, "x")
    result = run("pause", ADD)
    assert result.exit_code == 0, result.output
    assert f"Paused {ADD}." in result.output and f"Paused now: {ADD}" in result.output
    with Queue(store) as queue:
        assert [rec.id for rec in queue.store.claim("w", 10, now_ms())] == [free]
    again = json.loads(run("pause", ADD, "--json").output)
    assert again == {"task": ADD, "paused": True, "changed": False,
                     "now_paused": {"all": False, "tasks": [ADD]}}  # fmt: skip
    resumed = json.loads(run("resume", ADD, "--json").output)
    assert resumed["changed"] is True and resumed["now_paused"] == {"all": False, "tasks": []}
    with Queue(store) as queue:
        assert [rec.id for rec in queue.store.claim("w", 10, now_ms())] == [held]
    assert "was not paused; nothing changed" in run("resume", ADD).output


def test_pause_without_a_task_holds_every_job(run: Run, store: str) -> None:
    enqueue(store, ADD, 1, b=2)
    assert "Paused every job." in run("pause").output
    with Queue(store) as queue:
        assert queue.store.claim("w", 10, now_ms()) == []
    assert "Paused now: nothing" in run("resume").output
    with Queue(store) as queue:
        assert len(queue.store.claim("w", 10, now_ms())) == 1


def test_pause_rejects_a_bad_task_name_and_changes_nothing(run: Run, store: str) -> None:
    enqueue(store, ADD, 1, b=2)
    before = snapshot(store)
    assert_clean_error(run("pause", "bad\x00name"), 1, "name")
    assert snapshot(store) == before
    with Queue(store) as queue:
        assert not queue.paused()
