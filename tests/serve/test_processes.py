"""``mpqueue serve`` and the processes around it (issue 10, item 6): a job's own
children die with its worker, ``serve`` leaves no process behind when it exits, and
signals that are not a stop request change nothing. Real processes, real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from mpqueue.records import JobState

from ..support.serve_helpers import ROOT, env, gone, servers, wait_until  # noqa: F401

GONE_WITHIN_S = 5.0


KINDS = ["child", "daemon"]  # a plain child of the job; a double-forked setsid daemon


def _grandchild(
    env,
    servers,
    tmp_path: Path,
    task: str,
    *args: object,
    serve_args: tuple[str, ...] = (),
    kind: str = "child",
):
    """Start a server whose one job starts a ``sleep 300`` descendant of ``kind``;
    returns the server, the job, the worker's pid and the descendant's pid."""
    pid_file = tmp_path / f"grandchild.{kind}"
    job = env.task(task).delay(str(env.marker), "g", str(pid_file), *args)
    server = servers(env.path, "--workers", "1", *serve_args)
    wait_until(pid_file.exists, 20, "the job started its grandchild")
    worker_pid = env.runs()["g"][0].pid
    grandchild = int(pid_file.read_text())
    assert not gone(grandchild)
    if kind == "daemon":
        wait_until(
            lambda: os.getsid(grandchild) == grandchild,
            10,
            "the daemon in its own session, out of the worker's group",
        )
    return server, job, worker_pid, grandchild


def _assert_gone(pid: int, after: str) -> None:
    wait_until(lambda: gone(pid), GONE_WITHIN_S, f"grandchild {pid} gone after {after}")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_timeout_kill_takes_the_jobs_children(env, servers, tmp_path, kind):
    server, job, _, grandchild = _grandchild(
        env,
        servers,
        tmp_path,
        "spawn_sleeper_and_hang",
        serve_args=("--timeout-grace", "0.2"),
        kind=kind,
    )
    wait_until(lambda: env.record(job).state is JobState.DEAD, 20, "the job timed out")
    assert "killed" in env.record(job).errors[-1].message
    _assert_gone(grandchild, "the timeout kill")
    assert server.proc.poll() is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_soft_timeout_takes_the_jobs_children(env, servers, tmp_path, kind):
    server, job, worker, grandchild = _grandchild(
        env, servers, tmp_path, "spawn_sleeper_and_time_out", kind=kind
    )
    wait_until(lambda: env.record(job).state is JobState.DEAD, 20, "the job timed out")
    assert env.record(job).errors[-1].type == "JobTimeout"
    _assert_gone(grandchild, "the job's soft timeout")
    assert server.children(env.queue) == [worker]  # the worker itself lives on


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_sigterm_of_serve_takes_the_jobs_children(env, servers, tmp_path, kind):
    server, job, _, grandchild = _grandchild(
        env, servers, tmp_path, "spawn_sleeper", 30.0, serve_args=("--grace", "0.3"), kind=kind
    )
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0
    _assert_gone(grandchild, "serve stopped")
    assert env.record(job).state is JobState.READY  # put back, as before


@pytest.mark.timeout(60)
def test_a_killed_worker_takes_its_jobs_children(env, servers, tmp_path):
    server, job, worker, grandchild = _grandchild(env, servers, tmp_path, "spawn_sleeper", 30.0)
    os.kill(worker, signal.SIGKILL)
    _assert_gone(grandchild, "its worker was killed")
    wait_until(lambda: env.record(job).state is JobState.DEAD, 20, "the crash charged")
    assert server.proc.poll() is None


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_a_dead_coordinator_takes_the_jobs_children(env, servers, tmp_path, kind):
    server, _, worker, grandchild = _grandchild(
        env, servers, tmp_path, "spawn_sleeper", 30.0, kind=kind
    )
    server.send(signal.SIGKILL)
    server.wait(10)
    _assert_gone(worker, "its coordinator was killed")
    _assert_gone(grandchild, "its coordinator was killed")


@pytest.mark.timeout(60)
def test_sigusr1_and_sigusr2_change_nothing(env, servers):
    """SIGUSR1/SIGUSR2 to serve and its workers, and the stop signals to the workers
    (only serve decides what happens to a running job), change nothing."""
    jobs = env.task("sleepy").map([(str(env.marker), i, 0.5) for i in range(4)])
    server = servers(env.path, "--workers", "2")
    children = set(server.wait_ready(env.queue, 2))
    wait_until(lambda: len(env.runs()) >= 2, 20, "two jobs running")
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        for pid in (server.pid, *children):
            os.kill(pid, signum)
    for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        for pid in children:
            os.kill(pid, signum)
    wait_until(lambda: env.stats()["done"] == 4, 20, "every job done")
    assert server.proc.poll() is None
    assert set(server.children(env.queue)) == children  # no worker died or was replaced
    assert all(env.record(job).attempts == 1 for job in jobs)
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0


def _descendants(pid: int) -> set[int]:
    try:
        return {p.pid for p in psutil.Process(pid).children(recursive=True)}
    except psutil.NoSuchProcess:
        return set()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("run", range(3))
def test_nothing_outlives_serve_after_sigterm(env, servers, run):
    """A supervisor that sees the main pid end must find nothing left: not the workers,
    not the forkserver, not the resource tracker (seen before in 7 of 10 stops)."""
    server = servers(env.path, "--workers", "2")
    workers = set(server.wait_ready(env.queue, 2))
    # the workers, the forkserver they were forked from and the resource tracker
    seen = wait_until(
        lambda: (d := _descendants(server.pid)) >= workers and len(d) >= 4 and d,
        10,
        "serve's descendants",
    )
    server.send(signal.SIGTERM)
    assert server.wait(10) == 0
    left = {pid for pid in seen if not gone(pid)}
    assert not left, f"still running after serve exited: {left}"


def _can_unshare_pid() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        return False
    probe = subprocess.run(
        [unshare, "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


def _in_new_pid_namespace(*argv: str, **popen: object) -> subprocess.Popen:
    """Run ``python argv`` as pid 1 of a new pid namespace (as in a container)."""
    cmd = ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, *argv]
    return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), **popen)  # type: ignore[call-overload]


@pytest.mark.timeout(60)
@pytest.mark.skipif(not _can_unshare_pid(), reason="needs root and unshare --pid")
def test_two_pid_namespaces_on_one_lmdb_store_get_a_clear_error(tmp_path):
    """Two containers' processes with the same pid (here both pid 1) cannot share an
    LMDB store; the second one is told why, in one line, instead of 'Resource
    temporarily unavailable'."""
    path = str(tmp_path / "store")
    holder = _in_new_pid_namespace(
        "-c",
        "import sys; from mpqueue.store import open_store; s = open_store(sys.argv[1]);"
        " print('open', flush=True); sys.stdin.read()",
        path,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        other = _in_new_pid_namespace(
            "-m",
            "mpqueue",
            "--path",
            path,
            "stats",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        out, err = other.communicate(timeout=30)
        assert other.returncode == 1, (out, err)
        assert err.startswith("Error: ") and err.count("\n") == 1, err
        assert "another pid namespace" in err and "PostgreSQL" in err, err
    finally:
        holder.stdin.close()
        holder.wait(10)
