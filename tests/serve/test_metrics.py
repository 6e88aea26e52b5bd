"""Prometheus metrics (issue 14): a real ``serve --metrics-port`` scraped over HTTP while
its jobs run, ``--metrics-file`` at the end of an ``--until-empty`` run, ``mpqueue
metrics``; a server without a metrics option never imports prometheus_client."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mpqueue import Queue
from mpqueue.records import now_ms

from ..store.test_contract import record
from ..support.helpers import mpqueue_without, run_cli, wait_until
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import ROOT, servers  # noqa: F401

ADD, FAIL = "tests.support.cli_tasks.add", "tests.support.cli_tasks.fail"  # fail: retries=0
HOLD = "tests.support.executor_tasks.hold_until"  # runs until its release file exists
SUICIDE = "tests.support.serve_tasks.suicide"  # kills its worker on each of its 3 runs
SWALLOW = "tests.support.serve_tasks.swallow_timeout"  # eats its 1 s soft timeout: killed
N_DONE, N_DEAD = 5, 3


@pytest.fixture(params=["lmdb", "postgres"])
def location(request, tmp_path):
    """A store on LMDB (in tmp_path) or PostgreSQL (a schema of its own)."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "store")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _enqueue(location: str) -> None:
    with Queue(location) as queue:
        for i in range(N_DONE):
            queue.task_by_name(ADD).delay(i, 1)
        for i in range(N_DEAD):
            queue.task_by_name(FAIL).delay(f"no {i}")


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a text-format page: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def _sum(samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def _scrape(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return str(reply.read().decode("utf-8"))
    except (urllib.error.URLError, ConnectionError):
        return None  # not listening yet


def _assert_counts(samples) -> None:
    """The counters and histograms of a server that ran the jobs of ``_enqueue``."""
    finished = {
        dict(labels)["task"] + ":" + dict(labels)["outcome"]: v
        for (name, labels), v in samples.items()
        if name == "mpqueue_jobs_finished_total"
    }
    assert finished == {f"{ADD}:done": N_DONE, f"{FAIL}:dead": N_DEAD}
    assert _value(samples, "mpqueue_job_run_seconds_count", task=ADD) == N_DONE
    assert _value(samples, "mpqueue_job_failures_total", task=FAIL, kind="exception") == N_DEAD
    assert _value(samples, "mpqueue_job_failures_total", task=ADD, kind="exception") is None
    assert _value(samples, "mpqueue_job_run_seconds_count", task=FAIL) == N_DEAD
    assert _value(samples, "mpqueue_job_start_latency_seconds_count", task=ADD) == N_DONE
    assert _value(samples, "mpqueue_job_start_latency_seconds_count", task=FAIL) == N_DEAD
    assert _value(samples, "mpqueue_job_run_seconds_bucket", task=ADD, le="+Inf") == N_DONE
    assert _value(samples, "mpqueue_cycle_seconds_count") >= 1
    assert _value(samples, "mpqueue_commit_seconds_count") >= 1
    assert _value(samples, "mpqueue_store_up") == 1
    assert _value(samples, "mpqueue_jobs", state="done") == N_DONE
    assert _value(samples, "mpqueue_jobs", state="dead") == N_DEAD
    assert _value(samples, "mpqueue_jobs", state="ready") == 0
    assert _value(samples, "mpqueue_oldest_ready_age_seconds") == 0  # none ready


@pytest.mark.timeout(90)
def test_a_scrape_counts_the_jobs_by_task_and_outcome(location, servers, tmp_path):
    port = _free_port()
    server = servers(location, "--workers", "2", "--metrics-port", str(port))
    first = wait_until(lambda: server.proc.poll() is None and _scrape(port), 20, "metrics up")
    before = _samples(first)
    assert _value(before, "mpqueue_store_up") == 1
    assert _sum(before, "mpqueue_jobs_finished_total") == 0
    _enqueue(location)

    def all_counted():
        # The store's gauges and the server's counters are two reads of one scrape
        # (docs/observability.md): a commit between them shows the counters ahead.
        text = _scrape(port)
        samples = _samples(text) if text else {}
        counted = _sum(samples, "mpqueue_jobs_finished_total") >= N_DONE + N_DEAD
        stored = (
            _value(samples, "mpqueue_jobs", state="done"),
            _value(samples, "mpqueue_jobs", state="dead"),
        ) == (N_DONE, N_DEAD)
        return counted and stored and samples

    samples = wait_until(all_counted, 30, "every job counted")
    _assert_counts(samples)

    # Both workers are ready and, the queue empty, idle.
    def both_idle():
        samples = _samples(_scrape(port) or "")
        return _value(samples, "mpqueue_workers_idle") == 2 and samples

    idle = wait_until(both_idle, 20, "workers idle")
    assert _value(idle, "mpqueue_workers_busy") == 0
    with Queue(location) as queue:
        queue.pause(ADD)
        queue.task_by_name(ADD).delay(9)
    paused = _samples(_scrape(port) or "")
    assert _value(paused, "mpqueue_task_paused", task=ADD) == 1
    assert _value(paused, "mpqueue_paused") == 0
    assert _value(paused, "mpqueue_jobs", state="ready") == 1
    # A job that runs until released keeps one worker busy.
    release = tmp_path / "release"
    with Queue(location) as queue:
        held = queue.task_by_name(HOLD).delay(str(tmp_path / "marker"), "h", str(release))

    def one_busy():
        # One scrape reads the store's counts and then the workers' gauges (the server's
        # own slots), not one snapshot: a claim committed and dispatched in between
        # shows its busy worker but not yet its processing job.
        samples = _samples(_scrape(port) or "")
        busy = _value(samples, "mpqueue_workers_busy") == 1
        return busy and _value(samples, "mpqueue_jobs", state="processing") == 1 and samples

    busy = wait_until(one_busy, 20, "one worker busy and its job processing")
    assert _value(busy, "mpqueue_workers_idle") == 1
    release.touch()
    assert held.result(timeout=20) == "h"
    wait_until(both_idle, 20, "workers idle again")


@pytest.mark.timeout(90)
def test_metrics_file_at_the_end_of_an_until_empty_run(tmp_path):
    store = str(tmp_path / "store")
    _enqueue(store)
    out = tmp_path / "textfiles" / "mpqueue.prom"
    out.parent.mkdir()
    run = run_cli(
        "--path", store, "serve", "-w", "2", "--until-empty", "--metrics-file", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # jobs ended dead
    _assert_counts(_samples(out.read_text()))
    assert os.listdir(out.parent) == ["mpqueue.prom"]  # the temporary file was renamed


@pytest.mark.timeout(90)
def test_worker_restarts_by_reason(tmp_path):
    """A worker killed by its job is a crash (each of the job's three runs); one that ran
    its --max-tasks-per-child is retired; one the server killed (a job that ignored its
    timeout) is killed. The crashed runs count as retried, then dead."""
    store = str(tmp_path / "store")
    with Queue(store) as queue:
        for i in range(4):
            queue.task_by_name(ADD).delay(i)  # first: the first worker runs two, retires
        queue.task_by_name(SUICIDE).delay(str(tmp_path / "marker"), "c")
        queue.task_by_name(SWALLOW).delay(str(tmp_path / "marker"), "s")
    out = tmp_path / "mpqueue.prom"
    run = run_cli(
        "--path", store, "serve", "-w", "1", "--until-empty", "--max-tasks-per-child", "2",
        "--timeout-grace", "0.2", "--metrics-file", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # the suicide job ended dead
    samples = _samples(out.read_text())
    restarts = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "mpqueue_worker_restarts_total"
    }
    assert restarts.pop("crashed") == 3
    assert restarts.pop("retired") >= 1
    assert restarts.pop("killed") == 1
    assert not restarts
    assert _value(samples, "mpqueue_jobs_finished_total", task=SUICIDE, outcome="retried") == 2
    assert _value(samples, "mpqueue_jobs_finished_total", task=SUICIDE, outcome="dead") == 1
    assert _value(samples, "mpqueue_jobs_finished_total", task=ADD, outcome="done") == 4
    assert _value(samples, "mpqueue_jobs_finished_total", task=SWALLOW, outcome="dead") == 1
    assert _value(samples, "mpqueue_job_run_seconds_count", task=SUICIDE) == 3
    # How they failed: three crashes, one timeout kill, nothing else.
    failures = {
        (dict(labels)["task"], dict(labels)["kind"]): v
        for (name, labels), v in samples.items()
        if name == "mpqueue_job_failures_total"
    }
    assert failures == {(SUICIDE, "crash"): 3, (SWALLOW, "timeout"): 1}


@pytest.mark.timeout(60)
def test_mpqueue_metrics_prints_the_store_gauges(location, tmp_path):
    with Queue(location) as queue:
        for i in range(4):
            queue.task_by_name(ADD).delay(i)
        queue.task_by_name(ADD).schedule((0,), delay=3600)
        queue.store.add([record(ADD, priority=1, run_at_ms=now_ms() - 120_000)])  # due 2 min ago
        queue.task_by_name(ADD).options(queue="heavy").delay(9)
        queue.pause(None)
    started_ms = now_ms()
    run = run_cli("--path", location, "metrics", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    samples = _samples(run.stdout)
    took_s = (now_ms() - started_ms) / 1000
    assert 120 <= _value(samples, "mpqueue_oldest_ready_age_seconds") <= 120 + took_s + 1
    assert _value(samples, "mpqueue_jobs", state="ready") == 6
    assert _value(samples, "mpqueue_queue_jobs", queue="heavy", state="ready") == 1
    assert _value(samples, "mpqueue_queue_jobs", queue="default", state="ready") == 5
    assert _value(samples, "mpqueue_queue_jobs", queue="heavy", state="processing") == 0
    assert _value(samples, "mpqueue_jobs", state="scheduled") == 1
    assert _value(samples, "mpqueue_jobs", state="done") == 0
    assert _value(samples, "mpqueue_paused") == 1
    assert _value(samples, "mpqueue_store_up") == 1
    assert not any(name.startswith("mpqueue_jobs_finished") for name, _ in samples)


@pytest.mark.timeout(60)
def test_a_port_in_use_is_one_line_and_runs_nothing(tmp_path):
    store = str(tmp_path / "store")
    _enqueue(store)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = run_cli(
            "--path", store, "serve", "--until-empty", "--metrics-port", str(port), cwd=tmp_path
        )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"Error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
    with Queue(store) as queue:
        assert queue.stats()["ready"] == N_DONE + N_DEAD  # nothing ran
    bad = run_cli("--path", store, "serve", "--metrics-port", "70000", cwd=tmp_path)
    assert bad.returncode == 2 and "70000" in bad.stderr


# ---- without the extra ------------------------------------------------------------------
def _without_prometheus(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, bool]:
    return mpqueue_without("prometheus_client", tmp_path, *args)


@pytest.mark.timeout(90)
def test_serve_without_a_metrics_option_imports_nothing_of_prometheus_client(tmp_path):
    store = str(tmp_path / "store")
    _enqueue(store)
    run, imported = _without_prometheus(tmp_path, "--path", store, "serve", "--until-empty")
    assert run.returncode == 1, run.stderr  # ran every job (some ended dead)
    assert not imported
    with Queue(store) as queue:
        assert queue.stats()["done"] == N_DONE
    # The blocker works: a metrics option imports it, and its absence is one line.
    for args in (("serve", "--until-empty", "--metrics-port", str(_free_port())), ("metrics",)):
        run, imported = _without_prometheus(tmp_path, "--path", store, *args)
        assert imported and run.returncode == 1
        (line,) = run.stderr.strip().splitlines()
        assert line.startswith("Error: metrics need prometheus-client")
        assert line.endswith("pip install 'mpqueue[metrics]'")


def test_plain_counts_render_as_prometheus_clients_own_histogram_and_counter():
    """The server keeps its figures as plain counts (cheap on the hot path); a scrape of
    them reads exactly as prometheus_client's Histogram and Counter fed the same."""
    import prometheus_client as prom

    from mpqueue.metrics import RUN_BUCKETS, Buckets, Counts, ServerCollector

    values = [0.0, 0.001, 0.0011, 0.5, 3, 1800, 1e9, 0.25]  # on bounds, between, beyond
    theirs = prom.CollectorRegistry()
    histogram = prom.Histogram("h_seconds", "h", ["task"], buckets=RUN_BUCKETS, registry=theirs)
    counter = prom.Counter("c", "c", ["task"], registry=theirs)
    ours = (Buckets("h_seconds", "h", ["task"], RUN_BUCKETS), Counts("c", "c", ["task"]))
    for i, value in enumerate(values):
        task = "ab"[i % 2]
        histogram.labels(task).observe(value)
        counter.labels(task).inc()
        ours[0].observe(value, task)
        ours[1].inc(task)
    mine = prom.CollectorRegistry()
    mine.register(ServerCollector(*ours))
    expected = _samples(prom.generate_latest(theirs).decode())
    expected = {k: v for k, v in expected.items() if not k[0].endswith("_created")}
    assert _samples(prom.generate_latest(mine).decode()) == expected
