"""Scenario ``throughput``: jobs/s of no-op and ~10 ms CPU-bound jobs with 1..cores
workers, mpqueue (optimized and legacy) against a bare ``ProcessPoolExecutor`` and
against Huey (``SqliteHuey``, fsync on, process workers).

Every runner is measured the same way: the jobs are already queued (not timed), then
the clock runs from starting the runner until every job is done, so each runner's
start-up (worker processes, imports) is included:
- mpqueue: ``serve --until-empty`` in this process (``bench.serve_bench``);
- executor: a new pool, one future per job, until every result is back;
- Huey: ``huey_consumer -k process -w N`` started as a subprocess, until every result
  is stored in its SQLite database.
Legacy mpqueue polls every 0.5 s and takes one job per poll, so it runs a smaller
count (shown) at the highest worker count only.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from bench import jobs
from bench.common import Progress, md_table, spread, summary
from bench.huey_peer import HueyConsumer, make_huey, wait_results
from bench.serve_bench import enqueue, executor_run, temp_store
from mpqueue import Queue
from mpqueue.serve.coordinator import serve
from mpqueue.serve.settings import ServeSettings

CORES = os.cpu_count() or 1
KINDS = {"noop": ("no-op jobs", jobs.noop), "spin": ("10 ms CPU jobs", jobs.spin)}
FULL = dict(
    workers=list(range(1, CORES + 1)),
    reps=3,
    jobs={"noop": 5_000, "spin": 200},
    legacy_jobs=20,
    legacy_reps=1,
    startup_reps=3,
)
QUICK = dict(FULL, reps=1, jobs={"noop": 600, "spin": 40}, legacy_jobs=5, startup_reps=1)
RUNNERS = ("mpqueue", "executor", "huey")


def job_args(kind: str, n: int) -> list[tuple[Any, ...]]:
    return [(i,) for i in range(n)] if kind == "noop" else [(10.0,)] * n


def steps(cfg: dict[str, Any]) -> int:
    return (
        len(KINDS) * (len(cfg["workers"]) * len(RUNNERS) * cfg["reps"] + cfg["legacy_reps"])
        + len(RUNNERS) * cfg["startup_reps"]
    )


def mpqueue_run(kind: str, n: int, workers: int, mode: str = "optimized") -> float:
    """Seconds for ``serve --until-empty`` to run ``n`` queued jobs (fresh store)."""
    with temp_store() as path:
        store = os.path.join(path, "store")
        if mode == "optimized":
            enqueue(store, f"bench.jobs.{kind}", job_args(kind, n))
        else:  # a Queue in the other mode would migrate the store
            with Queue(store, mode=mode) as queue:
                queue.task_by_name(f"bench.jobs.{kind}").map(job_args(kind, n))
        started = time.perf_counter()
        code = serve(
            ServeSettings(path=store, workers=workers, mode=mode, until_empty=True, progress=False)
        )
        elapsed = time.perf_counter() - started
        if code != 0:
            raise RuntimeError(f"serve exited {code}")
        return elapsed


def huey_run(kind: str, n: int, workers: int) -> float:
    """Seconds for a fresh Huey consumer to run ``n`` queued jobs (results stored)."""
    with temp_store() as path:
        filename = os.path.join(path, "huey.db")
        huey, tasks = make_huey(filename)
        for args in job_args(kind, n):
            tasks[kind](*args)
        started = time.perf_counter()
        with HueyConsumer(filename, workers) as consumer:
            wait_results(huey, n, 60 + n, consumer.proc)
            elapsed = time.perf_counter() - started
        huey.storage.close()
        return elapsed


def executor_time(kind: str, n: int, workers: int) -> float:
    return executor_run(KINDS[kind][1], job_args(kind, n), workers)


def run(cfg: dict[str, Any], progress: Progress) -> dict[str, Any]:
    measure: dict[str, Callable[[str, int, int], float]] = {
        "mpqueue": mpqueue_run,
        "executor": executor_time,
        "huey": huey_run,
    }
    out: dict[str, Any] = {"config": cfg, "kinds": {}}
    for kind, (label, _) in KINDS.items():
        n = cfg["jobs"][kind]
        data: dict[str, Any] = {
            "label": label,
            "jobs": n,
            "runners": list(RUNNERS),
            "by_workers": {},
        }
        for workers in cfg["workers"]:
            row: dict[str, Any] = {}
            samples: dict[str, list[float]] = {r: [] for r in RUNNERS}
            for rep in range(cfg["reps"]):  # interleaved, so load drift hits all alike
                for runner in RUNNERS:
                    progress.step(
                        f"throughput: {label}, {workers} worker(s), {runner}, rep {rep + 1}"
                    )
                    samples[runner].append(n / measure[runner](kind, n, workers))
            for runner in RUNNERS:
                row[runner] = {"jobs_per_s": summary(samples[runner])}
            data["by_workers"][str(workers)] = row
        legacy = []
        for _rep in range(cfg["legacy_reps"]):
            progress.step(f"throughput: {label}, legacy mpqueue ({cfg['legacy_jobs']} jobs)")
            legacy.append(
                cfg["legacy_jobs"]
                / mpqueue_run(kind, cfg["legacy_jobs"], max(cfg["workers"]), "legacy")
            )
        data["legacy"] = {
            "jobs": cfg["legacy_jobs"],
            "workers": max(cfg["workers"]),
            "jobs_per_s": summary(legacy),
        }
        out["kinds"][kind] = data
    out["startup"] = startup(cfg, measure, progress)
    return out


def startup(
    cfg: dict[str, Any], measure: dict[str, Callable[[str, int, int], float]], progress: Progress
) -> dict[str, Any]:
    """Seconds for each runner to start, run 1 no-op job and finish: its fixed cost,
    which the counts above pay once per run."""
    workers = max(cfg["workers"])
    samples: dict[str, list[float]] = {r: [] for r in RUNNERS}
    for rep in range(cfg["startup_reps"]):
        for runner in RUNNERS:
            progress.step(f"throughput: start-up, 1 job, {runner}, rep {rep + 1}")
            samples[runner].append(measure[runner]("noop", 1, workers))
    return {"workers": workers, **{r: summary(v) for r, v in samples.items()}}


def report(res: dict[str, Any]) -> str:
    rows = []
    for data in res["kinds"].values():
        for w, row in sorted(data["by_workers"].items(), key=lambda kv: int(kv[0])):
            ours = row["mpqueue"]["jobs_per_s"]["median"]
            cells = [data["label"], f"{data['jobs']:,}", w]
            for runner in RUNNERS:
                cells.append(spread(row[runner]["jobs_per_s"], 1, 1))
            cells.append(f"{ours / row['executor']['jobs_per_s']['median']:.2f}x")
            cells.append(f"{ours / row['huey']['jobs_per_s']['median']:.2f}x")
            rows.append(cells)
        leg = data["legacy"]
        rows.append(
            [
                data["label"],
                f"{leg['jobs']:,}",
                str(leg["workers"]),
                f"legacy mode: {spread(leg['jobs_per_s'], 1, 2)}",
                "",
                "",
                "",
                "",
            ]
        )
    table = md_table(
        [
            "jobs",
            "count",
            "workers",
            "mpqueue (jobs/s)",
            "executor (jobs/s)",
            "Huey SQLite (jobs/s)",
            "mpqueue / executor",
            "mpqueue / Huey",
        ],
        rows,
    )
    cfg = res["config"]
    st = res["startup"]
    table += "\n\n" + md_table(
        ["fixed cost: start, run 1 no-op job, stop", "workers"] + [f"{r} (ms)" for r in RUNNERS],
        [["1 job", st["workers"]] + [spread(st[r], 1000, 0) for r in RUNNERS]],
    )
    return (
        table
        + "\n\n"
        + "\n".join(
            [
                f"- Median (min-max) of {cfg['reps']} interleaved repetitions; every run on a "
                f"fresh store; runner start-up included (see the module docstring of "
                f"`bench/throughput.py`). Plot: `throughput.png`.",
                "- mpqueue: `serve --until-empty`, default options (optimized, wake-ups, "
                "prefetch), fsync on every commit. Executor: `ProcessPoolExecutor` (fork), "
                "nothing durable. Huey: `SqliteHuey(fsync=True, journal_mode='wal')`, "
                "`huey_consumer -k process -w N` with its default polling (0.1 s, backing off).",
            ]
        )
    )
