"""``mpqueue.Executor`` with real servers: the behaviours of ``ProcessPoolExecutor`` users
rely on (ordered ``map``, exceptions from ``result()``, ``wait``/``as_completed``,
``shutdown(cancel_futures=True)``), and what durability adds (a segfault costs one
attempt of one item; a killed script's server stops; a keyed map run again computes
only what is missing). Job bodies are plain functions in support/executor_tasks.py.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from mpqueue import ConfigError, Executor, ExecutorBroken, JobFailed, Queue
from mpqueue.records import JobState
from mpqueue.serve.launcher import EXECUTOR_BATCH, EXECUTOR_PREFETCH

from ..support import executor_tasks
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import ROOT, env, gone, read_runs, servers, wait_until  # noqa: F401


def _starts(marker: Path) -> dict[str, int]:
    """How many times each tag's body started."""
    return {tag: len(runs) for tag, runs in read_runs(marker).items()}


@pytest.mark.timeout(60)
def test_map_returns_results_in_order_and_submit_takes_any_callable(env):
    with Executor(env.path, max_workers=2) as ex:
        assert list(ex.map(executor_tasks.square, range(20))) == [i * i for i in range(20)]
        assert list(ex.map(pow, [2, 3], [5, 2])) == [32, 9]  # several iterables, zipped
        offset = 10
        future = ex.submit(lambda x: x + offset, 1)  # a closure goes by value
        assert future.result(timeout=30) == 11
        assert env.queue.get(future.job_id).state == "done"


@pytest.mark.timeout(60)
def test_calls_inside_a_batch_of_its_queue_are_refused(env):
    with Executor(env.queue, max_workers=1) as ex:
        before = env.queue.stats()
        with env.queue.batch():
            with pytest.raises(ConfigError, match="inside queue.batch"):
                ex.submit(executor_tasks.square, 2)
            with pytest.raises(ConfigError, match="inside queue.batch"):
                ex.map(executor_tasks.square, [1, 2])
        assert env.queue.stats() == before
        assert ex.submit(executor_tasks.square, 3).result(timeout=30) == 9  # outside: fine


@pytest.mark.timeout(60)
def test_a_failed_job_raises_job_failed_with_the_remote_error(env):
    with Executor(env.path, max_workers=1, retries=0) as ex:
        future = ex.submit(executor_tasks.fail, "boom")
        with pytest.raises(JobFailed) as caught:
            future.result(timeout=30)
        assert caught.value.error.type == "ValueError"
        assert caught.value.error.message == "boom"
        assert "executor_tasks.py" in caught.value.error.traceback
        assert isinstance(future.exception(), JobFailed)
        results = ex.map(executor_tasks.fail, ["in map"])
        with pytest.raises(JobFailed, match="in map"):
            next(results)


@pytest.mark.timeout(60)
def test_futures_work_with_wait_and_as_completed(env):
    marker = str(env.marker)
    with Executor(env.path, max_workers=2) as ex:
        futures = [ex.submit(executor_tasks.marked, marker, i, s) for i, s in enumerate([0.3, 0])]
        done, _ = concurrent.futures.wait(
            futures, timeout=30, return_when=concurrent.futures.FIRST_COMPLETED
        )
        assert done
        finished = list(concurrent.futures.as_completed(futures, timeout=30))
        assert sorted(f.result() for f in finished) == [0, 1]
        done, not_done = concurrent.futures.wait(futures, timeout=0)
        assert len(done) == 2 and not not_done


@pytest.mark.timeout(60)
def test_map_times_out_like_the_standard_library(env, tmp_path):
    """The timeout counts from the map() call; leaving the iterator on it cancels every
    item not read yet, so those still queued never run."""
    marker, release = str(env.marker), str(tmp_path / "release")
    with Executor(env.path, max_workers=1) as ex:
        tags = ["held", "after-1", "after-2"]
        results = ex.map(executor_tasks.hold_until, [marker] * 3, tags, [release] * 3,
                         timeout=0.5)  # fmt: skip
        with pytest.raises(TimeoutError):
            next(results)
        (tmp_path / "release").touch()  # the held job is cancelled, stopped by its server
    assert _starts(env.marker) in ({}, {"held": 1})  # it may not have started in time


@pytest.mark.timeout(60)
def test_shutdown_with_cancel_futures_leaves_queued_items_never_run(env, tmp_path):
    """One worker holds the first item; the other nine wait (some of them already sent
    to the worker ahead of time). Cancelled, their jobs end cancelled: none ever starts,
    and the running one is stopped."""
    marker, release = str(env.marker), tmp_path / "release"
    ex = Executor(env.path, max_workers=1)
    held = ex.submit(executor_tasks.hold_until, marker, "held", str(release))
    queued = [ex.submit(executor_tasks.marked, marker, i) for i in range(9)]
    wait_until(lambda: "held" in read_runs(env.marker), 30, "the first item started")
    ex.shutdown(wait=False, cancel_futures=True)
    assert all(f.cancelled() for f in queued)
    done, _ = concurrent.futures.wait(queued, timeout=5)
    assert len(done) == 9  # cancelled futures count as done for wait()
    ex.shutdown(wait=True)  # the held job is stopped by its cancel, the server stops
    assert held.cancelled()  # still pending when cancelled
    assert _starts(env.marker) == {"held": 1}
    stats = env.queue.stats()
    assert stats["cancelled"] == stats["total"] == 10, stats
    assert "cancel_futures" in env.queue.get(held.job_id).error.message
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(executor_tasks.square, 2)


@pytest.mark.timeout(60)
def test_a_segfault_costs_one_attempt_of_one_item(env):
    marker = str(env.marker)
    tags = list(range(6))
    with Executor(env.path, max_workers=2, backoff=0.05, backoff_cap=0.05) as ex:
        futures = [ex.submit(executor_tasks.segfault_once, marker, t, t == 2) for t in tags]
        assert [f.result(timeout=30) for f in futures] == tags
        crashed = env.queue.get(futures[2].job_id)
    assert crashed is not None and crashed.attempts == 2 and len(crashed.errors) == 1
    assert _starts(env.marker) == {str(t): 2 if t == 2 else 1 for t in tags}


@pytest.mark.timeout(60)
def test_a_live_server_is_used_and_another_started_when_it_stops(env, servers):
    server = servers(env.path, "--workers", "1")
    pids = server.wait_ready(env.queue, 1)
    with Executor(env.path, max_workers=2) as ex:
        assert set(ex.map(executor_tasks.worker_pid, range(4))) <= set(pids)
        assert [info["pid"] for info in env.queue.store.servers().values()] == [server.pid]
        server.send(signal.SIGTERM)
        server.wait(30)
        # No server now: within a second the Executor starts its own.
        late = set(ex.map(executor_tasks.worker_pid, range(4), timeout=30))
        assert late and not late & set(pids)
        owners = [info["pid"] for info in env.queue.store.servers().values()]
        assert len(owners) == 1 and owners[0] != server.pid
    assert env.queue.store.servers() == {}  # the Executor stopped what it started


@pytest.mark.timeout(60)
def test_the_server_it_starts_claims_far_ahead_for_tiny_jobs(env):
    """Its server takes the Executor's prefetch and batch (serve/launcher.py), not
    serve's defaults: a map of tiny items pays a commit per ~1,000 of them."""
    with Executor(env.path, max_workers=1) as ex:
        assert list(ex.map(executor_tasks.square, [2])) == [4]
        (info,) = env.queue.store.servers().values()
        argv = psutil.Process(info["pid"]).cmdline()
    assert argv[argv.index("--prefetch") + 1] == str(EXECUTOR_PREFETCH)
    assert argv[argv.index("--batch") + 1] == str(EXECUTOR_BATCH)


@pytest.mark.timeout(60)
def test_a_queues_secret_goes_to_the_server_it_starts(tmp_path, monkeypatch):
    """The queue's secret, not the one in this environment: a server checking another
    secret would dead-letter the jobs as badly signed."""
    monkeypatch.setenv("MPQUEUE_SECRET", "another secret")
    with Queue(tmp_path / "store", secret="s3cret") as queue:
        with Executor(queue, max_workers=1, retries=0) as ex:
            assert list(ex.map(executor_tasks.square, [3])) == [9]


def _command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:  # it just exited
        return ""


@pytest.mark.timeout(60)
def test_a_postgresql_store_is_served_with_the_url_out_of_argv(pg_url):
    with Executor(pg_url, max_workers=1) as ex:
        assert list(ex.map(executor_tasks.square, range(5))) == [0, 1, 4, 9, 16]
        command_lines = [_command_line(p) for p in psutil.Process().children(recursive=True)]
        assert any("serve" in line for line in command_lines)
        assert not any("postgres" in line for line in command_lines)  # it is in the env


@pytest.mark.timeout(60)
def test_bad_arguments_are_one_line_errors(env):
    with Executor(env.path, max_workers=1) as ex:
        with pytest.raises(ConfigError, match="chunksize"):
            ex.map(executor_tasks.square, [1], chunksize=0)
        with pytest.raises(ConfigError, match="callable"):
            ex.submit(42)  # type: ignore[arg-type]
    assert env.queue.stats()["total"] == 0


@pytest.mark.timeout(60)
def test_servers_that_never_start_break_the_executor(tmp_path):
    """A server that exits before it serves, three times in a row: the pending futures
    fail with ExecutorBroken (a BrokenExecutor) instead of waiting for ever."""
    queue = Queue(tmp_path / "store")
    assert queue.store.servers() == {}  # the store is open: its mode is read no more
    queue.mode = "no-such-mode"  # and `mpqueue --mode no-such-mode` exits 2 at once
    with queue, Executor(queue, max_workers=1) as ex:
        future = ex.submit(executor_tasks.square, 3)
        assert isinstance(future.exception(timeout=30), concurrent.futures.BrokenExecutor)
        with pytest.raises(ExecutorBroken, match="exited 3 times"):
            ex.submit(executor_tasks.square, 4)


SCRIPT = """\
import sys
from mpqueue import Executor
from tests.support.executor_tasks import hold_until, marked, square

store, marker, release, items = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if items < 0:  # no shutdown: the interpreter's exit stops the server
    print(Executor(store, max_workers=1).submit(square, 3).result())
    sys.exit()
with Executor(store, max_workers=1) as ex:
    if items == 0:  # one job that waits for the release file
        print(ex.submit(hold_until, marker, "held", release).result())
    else:
        n = range(items)
        keyed = ex.map(marked, [marker] * items, n, [0.05] * items,
                       key=lambda marker, i, seconds: f"item-{i}")
        print(list(keyed))
"""


def _script(tmp_path: Path, store: str, marker: Path, items: int) -> subprocess.Popen[str]:
    path = tmp_path / "script.py"
    path.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    release = str(tmp_path / "release")
    with open(tmp_path / "script.log", "a") as log:  # the script's and its server's
        return subprocess.Popen(
            [sys.executable, str(path), store, str(marker), release, str(items)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )


def _serving_pid(queue: Queue) -> int:
    def found() -> int | None:
        return next((info["pid"] for info in queue.store.servers().values()), None)

    return wait_until(found, 30, "the script's server registered")  # type: ignore[no-any-return]


@pytest.mark.timeout(60)
def test_an_executor_left_open_stops_its_server_at_exit(env, tmp_path):
    script = _script(tmp_path, env.path, env.marker, -1)
    out, _ = script.communicate(timeout=30)
    assert script.returncode == 0 and out.strip() == "9"
    assert env.queue.store.servers() == {}  # it stopped and unregistered


@pytest.mark.timeout(90)
def test_a_killed_scripts_server_finishes_its_job_and_stops(env, tmp_path):
    """SIGKILL leaves the script no chance to stop its server: its keeper dies with the
    script and the server gets one SIGTERM (serve/launcher.py), so it finishes the
    running job before it exits (two SIGTERMs, as Linux may send a multi-threaded
    process's child, would kill the job: this failed about one run in ten before the
    keeper)."""
    script = _script(tmp_path, env.path, env.marker, 0)
    try:
        server_pid = _serving_pid(env.queue)
        wait_until(lambda: "held" in read_runs(env.marker), 30, "the job started")
        script.kill()
        script.wait(10)
        (tmp_path / "release").touch()
        wait_until(lambda: gone(server_pid), 30, "the orphaned server stopped")
    finally:
        script.kill()
        script.wait(10)
    jobs = [(job.state, job.attempts, job.errors) for job in env.queue.list()]
    assert jobs == [(JobState.DONE.value, 1, ())], (
        tmp_path / "script.log"
    ).read_text() + env.marker.read_text()


@pytest.mark.timeout(90)
def test_a_keyed_map_killed_halfway_and_run_again_computes_only_what_is_missing(env, tmp_path):
    items = 10
    first = _script(tmp_path, env.path, env.marker, items)
    try:
        wait_until(
            lambda: (
                sum(r.ended for runs in read_runs(env.marker).values() for r in runs) >= 3
                or first.poll() is not None
            ),
            30,
            "three items done",
        )
        assert first.poll() is None, "the script ended before it could be killed"
        first.kill()
    finally:
        first.kill()
        first.wait(10)
    again = _script(tmp_path, env.path, env.marker, items)
    out, _ = again.communicate(timeout=60)
    assert again.returncode == 0
    assert out.strip() == str(list(range(items)))
    assert _starts(env.marker) == {str(i): 1 for i in range(items)}
