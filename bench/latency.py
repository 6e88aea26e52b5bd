"""Scenario ``latency``: enqueue-to-start on an idle runner, p50/p95/p99, per mode and
against the peers.

Each sample enqueues one ``bench.jobs.stamp`` job (it returns the wall time it started),
waits for it, then lets the runner go idle for 5 ms. Latency is the job's start time
minus the time just before the enqueue call, so the enqueue's own commit is included.
Runners: mpqueue ``serve`` (2 workers) in legacy mode (0.5 s polls), in optimized mode
claiming only on 0.5 s poll ticks (``--poll-only``), and in optimized mode with its
default wake-ups; a warm ``ProcessPoolExecutor``; Huey's consumer (process workers) with
its default polling and with a 1 ms poll.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import psutil

from bench import jobs
from bench.common import Progress, md_table
from bench.huey_peer import HueyConsumer, make_huey, wait_results
from bench.serve_bench import Server, bench_latency, percentiles, temp_store

WORKERS = 2
IDLE_S = 0.005
# key, label, mpqueue mode or peer, extra options, jitter (the runner's poll interval)
VARIANTS: tuple[tuple[str, str, str, tuple[str, ...], float], ...] = (
    ("legacy", "mpqueue legacy, 0.5 s poll", "legacy", ("--poll-interval", "0.5"), 0.5),
    (
        "poll-only",
        "mpqueue optimized, `--poll-only`, 0.5 s poll",
        "optimized",
        ("--poll-only", "--poll-interval", "0.5"),
        0.5,
    ),
    ("default", "mpqueue optimized, default (wake-ups)", "optimized", (), 0.0),
    ("executor", "ProcessPoolExecutor, warm", "executor", (), 0.0),
    ("huey", "Huey SQLite, default polling (-d 0.1)", "huey", (), 0.1),
    (
        "huey-1ms",
        "Huey SQLite, 1 ms polling (-d 0.001 -m 0.001)",
        "huey",
        ("-d", "0.001", "-m", "0.001"),
        0.001,
    ),
)
FULL = dict(
    idle_cpu_s=5.0,
    samples={
        "legacy": 60,
        "poll-only": 60,
        "default": 300,
        "executor": 300,
        "huey": 150,
        "huey-1ms": 300,
    },
)
QUICK = dict(
    idle_cpu_s=2.0,
    samples={
        "legacy": 12,
        "poll-only": 12,
        "default": 40,
        "executor": 40,
        "huey": 20,
        "huey-1ms": 40,
    },
)


def steps(cfg: dict[str, Any]) -> int:
    return len(VARIANTS)


def executor_latency(samples: int) -> dict[str, Any]:
    with ProcessPoolExecutor(max_workers=WORKERS) as ex:
        for f in [ex.submit(jobs.noop, i) for i in range(WORKERS * 4)]:
            f.result()  # start every worker before the clock
        values, after_call = [], []
        for i in range(samples):
            before = time.time()
            future = ex.submit(jobs.stamp, i)
            after = time.time()
            started = future.result(timeout=30)
            values.append((started - before) * 1000)
            after_call.append((started - after) * 1000)
            time.sleep(IDLE_S)
    return {
        "samples": samples,
        "from_call_ms": percentiles(values),
        "from_commit_ms": percentiles(after_call),
    }


def huey_latency(samples: int, *extra: str, jitter_s: float = 0.0) -> dict[str, Any]:
    with temp_store() as path:
        filename = os.path.join(path, "huey.db")
        huey, tasks = make_huey(filename)
        with HueyConsumer(filename, WORKERS, *extra) as consumer:
            tasks["noop"](0)
            wait_results(huey, 1, 60, consumer.proc)  # consumer up and polling
            values, after_call = [], []
            for i in range(samples):
                before = time.time()
                result = tasks["stamp"](i)
                after = time.time()
                started = _wait_value(lambda: result.get(), 30)
                values.append((started - before) * 1000)
                after_call.append((started - after) * 1000)
                time.sleep(IDLE_S + random.uniform(0.0, jitter_s))
        huey.storage.close()
    return {
        "samples": samples,
        "from_call_ms": percentiles(values),
        "from_commit_ms": percentiles(after_call),
    }


def idle_cpu_percent(kind: str, extra: tuple[str, ...], seconds: float) -> float:
    """CPU used by an idle runner's whole process tree (coordinator or consumer plus its
    workers), in percent of one core, over ``seconds`` after it has started."""
    with temp_store() as path:
        if kind == "huey":
            filename = os.path.join(path, "huey.db")
            huey, tasks = make_huey(filename)
            with HueyConsumer(filename, WORKERS, *extra) as consumer:
                tasks["noop"](0)
                wait_results(huey, 1, 60, consumer.proc)
                value = _tree_cpu(consumer.proc.pid, seconds)
            huey.storage.close()
            return value
        with Server(os.path.join(path, "store"), WORKERS, *extra, mode=kind) as server:
            return _tree_cpu(server.proc.pid, seconds)


def _tree_cpu(pid: int, seconds: float) -> float:
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]

    def used() -> float:
        total = 0.0
        for proc in procs:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    time.sleep(0.5)  # let start-up work settle
    before = used()
    time.sleep(seconds)
    return (used() - before) / seconds * 100


def _wait_value(get: Callable[[], Any], timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while (value := get()) is None:
        if time.monotonic() > deadline:
            raise TimeoutError("huey result did not arrive")
        time.sleep(0.0005)
    return value


def run(cfg: dict[str, Any], progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {"config": cfg, "variants": {}}
    for key, label, kind, extra, jitter in VARIANTS:
        n = cfg["samples"][key]
        progress.step(f"latency: {label} ({n} samples)")
        if kind == "executor":
            r = executor_latency(n)
        elif kind == "huey":
            r = huey_latency(n, *extra, jitter_s=jitter)
        else:
            r = bench_latency(n, kind, *extra, jitter_s=jitter)
        if kind != "executor":
            r["idle_cpu_percent"] = idle_cpu_percent(kind, extra, cfg["idle_cpu_s"])
        out["variants"][key] = {"label": label, "idle_jitter_s": jitter, **r}
    return out


def report(res: dict[str, Any]) -> str:
    rows = []
    for key, label, _, _, _ in VARIANTS:
        r = res["variants"][key]
        p, c = r["from_call_ms"], r["from_commit_ms"]
        rows.append(
            [
                label,
                r["samples"],
                f"{p['p50']:.2f}",
                f"{p['p95']:.2f}",
                f"{p['p99']:.2f}",
                f"{p['max']:.2f}",
                f"{c['p50']:.2f}",
                f"{c['p99']:.2f}",
                _cpu(r),
            ]
        )
    table = md_table(
        [
            "runner (idle, 2 workers)",
            "samples",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "after enqueue returned: p50 ms",
            "p99 ms",
            "idle CPU, % of a core",
        ],
        rows,
    )
    return (
        table
        + "\n\n"
        + (
            "- Enqueue call to job start, wall clock, one job at a time. Between samples the "
            "runner idles 5 ms plus a random 0 to its poll interval (0.5 s for the polling "
            "mpqueue modes, 0.1 s / 1 ms for Huey), so arrivals fall at random points of the "
            "poll cycle instead of locking to its ticks. The last two columns start the clock "
            "when the enqueue call has returned (its durable commit done); below zero, the "
            "job started before the call returned (mpqueue wakes the child it handed the job "
            "to right after the commit, while `delay()` builds the Job it returns). "
            "Idle CPU: user + "
            "system time of the runner's process tree (coordinator/consumer and workers) over "
            f"{res['config']['idle_cpu_s']:g} s with nothing queued, measured separately. "
            "mpqueue and Huey commit durably (fsync) before the job can start; the executor "
            "keeps nothing."
        )
    )


def _cpu(r: dict[str, Any]) -> str:
    return f"{r['idle_cpu_percent']:.1f}" if "idle_cpu_percent" in r else "n/a (blocked in a pipe)"
