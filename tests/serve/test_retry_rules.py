"""What is retried, under ``mpqueue serve``: ``retry_on``, ``no_retry_on``, ``Fail`` and
per-call ``task.options(...)``, decided in the worker child from the names the job
record holds; for tasks imported by path (serve_tasks.py) and stored by value (a
script's ``__main__``), on LMDB and PostgreSQL. Timeouts and crashes stay retried.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mpqueue import Queue
from mpqueue.records import FINISHED_STATES, JobState

from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import env, read_runs, servers, wait_until  # noqa: F401
from ..support.serve_tasks import Transient

TASKS = "tests.support.serve_tasks"


@pytest.fixture(params=["lmdb", "postgres"])
def store_location(request, tmp_path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "store")


def _all_finished(queue: Queue, job_ids: list[str], timeout: float) -> dict[str, object]:
    def finished() -> dict[str, object] | None:
        records = queue.store.get_many(job_ids)
        if all(r is not None and r.state in FINISHED_STATES for r in records):
            return {job_id: rec for job_id, rec in zip(job_ids, records)}
        return None

    return wait_until(finished, timeout, "every job finished")  # type: ignore[no-any-return]


@pytest.mark.timeout(90)
def test_the_lists_fail_and_options_decide_what_is_retried(store_location, servers, tmp_path):
    """Each job raises one kind of error; its task's lists (or its call's options) say
    whether it runs again. A job that ends at once has run exactly once: it kept the
    retries it did not use."""
    marker = str(tmp_path / "markers.log")
    with Queue(store_location) as queue:
        refuses = queue.task_by_name(f"{TASKS}.refuses_values")
        io_only = queue.task_by_name(f"{TASKS}.retries_io")
        anything = queue.task_by_name(f"{TASKS}.retries_anything")
        cases = {  # tag: (task, kind raised, runs expected, error type of the last)
            "no_retry_on": (refuses, "value", 1, "ValueError"),
            "not_in_no_retry_on": (refuses, "runtime", 4, "RuntimeError"),
            "retry_on_mismatch": (io_only, "key", 1, "KeyError"),
            "retry_on_match": (io_only, "transient", 4, "Transient"),
            "fail": (anything, "fail", 1, "Fail"),
            "plain": (anything, "runtime", 4, "RuntimeError"),
            "options_retries_0": (anything.options(retries=0), "runtime", 1, "RuntimeError"),
            "options_any": (io_only.options(retry_on=None), "key", 4, "KeyError"),
            # retry_on OSError, no_retry_on its subclass Transient: the nearest decides
            "options_nearest": (
                io_only.options(no_retry_on=Transient),
                "transient",
                1,
                "Transient",
            ),
        }
        jobs = {tag: task.delay(marker, tag, kind) for tag, (task, kind, _, _) in cases.items()}
        assert jobs["options_retries_0"].record.max_retries == 0
        assert anything.config.retries == 3  # options() left the task alone
        servers(store_location, "--workers", "2")
        ids = [job.id for job in jobs.values()]
        records = _all_finished(queue, ids, 60)
    runs = read_runs(Path(marker))
    for tag, (_, _, expected_runs, error_type) in cases.items():
        rec = records[jobs[tag].id]
        assert rec.state is JobState.DEAD, tag
        assert rec.attempts == expected_runs == len(runs[tag]), (tag, rec.attempts)
        assert [e.type for e in rec.errors] == [error_type] * expected_runs, tag
    assert records[jobs["fail"].id].errors[-1].kind == "fail"
    assert records[jobs["fail"].id].errors[-1].message == "given up"
    assert records[jobs["retry_on_match"].id].retry_on == ("builtins.OSError",)


@pytest.mark.timeout(60)
def test_timeouts_and_crashes_are_retried_whatever_the_lists_say(env, servers):
    """A task whose ``retry_on`` names only KeyError still gets its retry after a
    timeout and after killing its own worker."""
    marker = str(env.marker)
    crash = env.task("crashes_despite_lists").delay(marker, "crash")
    timeout = env.task("times_out_despite_lists").delay(marker, "timeout")
    servers(env.path, "--workers", "2", "--timeout-grace", "0.5")
    records = _all_finished(env.queue, [crash.id, timeout.id], 40)
    for job, kind in ((crash, "crash"), (timeout, "timeout")):
        rec = records[job.id]
        assert rec.state is JobState.DEAD and rec.attempts == 2, (kind, rec.errors)
        assert [e.kind for e in rec.errors] == [kind, kind]


SCRIPT = """
    import json, sys
    from mpqueue import Queue

    queue = Queue(sys.argv[1])


    class Transient(Exception):
        pass


    class Permanent(Transient):
        pass


    @queue.task(retries=3, backoff=0.02, backoff_cap=0.02, retry_on=(Transient,),
                no_retry_on=(Permanent,))
    def flaky(kind):
        raise {"transient": Transient, "permanent": Permanent, "other": LookupError}[kind](kind)


    jobs = {kind: flaky.delay(kind).id for kind in ("transient", "permanent", "other")}
    print(json.dumps(jobs))
"""


@pytest.mark.timeout(60)
def test_a_task_stored_by_value_honours_its_lists(env, servers, tmp_path):
    """A task and its exception classes defined in a script's ``__main__``: the worker
    matches the raised class by the names the record holds (``__main__.Transient``),
    with nothing of the script imported."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = subprocess.run(
        [sys.executable, str(script), env.path],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    jobs = json.loads(out)
    first = env.queue.store.get(jobs["transient"])
    assert first.func is not None  # stored by value
    assert first.retry_on == ("__main__.Transient",)
    assert first.no_retry_on == ("__main__.Permanent",)
    servers(env.path, "--workers", "2")
    records = _all_finished(env.queue, list(jobs.values()), 40)
    attempts = {kind: records[job_id].attempts for kind, job_id in jobs.items()}
    assert attempts == {"transient": 4, "permanent": 1, "other": 1}
    assert all(records[job_id].state is JobState.DEAD for job_id in jobs.values())
