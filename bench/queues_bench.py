"""Named queues benchmark (issue 15): what serving several queues costs a drain.

    python -m bench.queues_bench [--jobs N] [--backlog N] [--rounds N] [--path DIR]
                                 [--store lmdb|postgres] [--pg-url URL] [--out FILE.json]

``serve --workers 2`` drains ``--jobs`` no-op jobs (``map``, timed from the first enqueue
to the last one done) on a fresh durable store (LMDB: a new directory under ``--path``;
PostgreSQL: a new schema of ``--pg-url``, or of a throwaway server), in four kinds of
round, alternating, ``--rounds`` times each:

  default    every job in the default queue, the server serving every queue (the
             baseline: what a user of no named queue runs)
  ten        the jobs spread over 10 named queues, the server serving every queue
             (the merged claim across the queues' indexes)
  selected   the same 10 queues, the server started with ``--queues q0,...,q9``
             (preference order: a claim visits them in turn)
  backlog    every job in queue ``fast``, beside ``--backlog`` ready jobs of queue
             ``slow`` that the server (``--queues fast``) does not serve

Each kind's median drain time is compared with the baseline's: the issue asks that
queues in use keep >= 90% of the throughput (a ratio of time <= 1/0.9).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Any

from bench.common import md_table, save_json, verdict
from bench.serve_bench import Server, wait_until
from bench.store_bench import machine
from bench.workflow_bench import Stores, alternate, log, pg_url_for
from mpqueue import Queue

NOOP = "bench.jobs.noop"
KINDS = ("default", "ten", "selected", "backlog")
TEN = tuple(f"q{i}" for i in range(10))
CHUNK = 10_000
TIME_RATIO_LIMIT = 1 / 0.9  # >= 90% of the baseline's throughput


def _fill(queue: Queue, queues: tuple[str, ...], count: int) -> None:
    """``count`` no-op jobs, dealt round-robin over ``queues`` (one map per queue)."""
    task = queue.task_by_name(NOOP)
    for start in range(0, count, CHUNK):
        batch = range(start, min(count, start + CHUNK))
        for i, name in enumerate(queues):
            mine = [(n,) for n in batch if n % len(queues) == i]
            if mine:
                task.options(queue=name).map(mine) if name != "default" else task.map(mine)


def _serve_args(kind: str) -> tuple[str, ...]:
    if kind == "selected":
        return ("--queues", ",".join(TEN))
    if kind == "backlog":
        return ("--queues", "fast")
    return ()


def _queues_of(kind: str) -> tuple[str, ...]:
    return {"default": ("default",), "backlog": ("fast",)}.get(kind, TEN)


def bench_round(stores: Stores, kind: str, jobs: int, backlog: int) -> float:
    with stores.fresh() as where:
        if kind == "backlog":
            with Queue(where) as queue:
                _fill(queue, ("slow",), backlog)
        with Server(where, 2, *_serve_args(kind)), Queue(where) as queue:
            started = time.perf_counter()
            _fill(queue, _queues_of(kind), jobs)
            wait_until(lambda: queue.stats()["done"] >= jobs, 300, "the jobs to be done")
            took = time.perf_counter() - started
            if kind == "backlog":
                assert queue.gauges().queues["slow"]["ready"] == backlog  # none of them ran
    return took


def run(stores: Stores, jobs: int, backlog: int, rounds: int) -> dict[str, Any]:
    drains: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for r, kind in alternate(KINDS, rounds):
        drains[kind].append(bench_round(stores, kind, jobs, backlog))
        log(f"  round {r} {kind}: {drains[kind][-1]:.2f} s")
    base = statistics.median(drains["default"])
    return {
        "jobs": jobs,
        "backlog": backlog,
        "drain_s": drains,
        "ratio": {kind: statistics.median(drains[kind]) / base for kind in KINDS[1:]},
    }


def report(result: dict[str, Any]) -> str:
    jobs, drains = result["jobs"], result["drain_s"]
    names = {
        "default": "default queue only, serving all",
        "ten": "10 named queues, serving all",
        "selected": "10 named queues, --queues q0,...,q9",
        "backlog": f"queue fast, beside {result['backlog']:,} ready in slow (--queues fast)",
    }
    rows = []
    for kind in KINDS:
        median = statistics.median(drains[kind])
        rows.append(
            [
                f"drain {jobs:,} no-op jobs: {names[kind]} (median)",
                f"{jobs / median:,.0f} jobs/s",
                "",
                "",
            ]
        )
    for kind, ratio in result["ratio"].items():
        rows.append(
            [
                f"{kind} time / default time",
                f"{ratio:.2f}",
                f"<= {TIME_RATIO_LIMIT:.2f}",
                verdict(ratio <= TIME_RATIO_LIMIT),
            ]
        )
    head = f"{result['store']}, {result['machine']}, {result['date']}"
    return head + "\n\n" + md_table(["row", "measured", "target", ""], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs drained per round [5000]")
    parser.add_argument("--backlog", type=int, default=100_000, help="unserved ready jobs [100000]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind [3]")
    parser.add_argument("--path", default=None, help="parent directory of the LMDB stores")
    parser.add_argument("--store", choices=("lmdb", "postgres"), default="lmdb")
    parser.add_argument("--pg-url", default=None, help="PostgreSQL server [a throwaway one]")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    opts = parser.parse_args()
    with pg_url_for(opts) as pg_url:
        stores = Stores(opts.store, opts.path, pg_url)
        result = {
            "store": opts.store,
            "machine": machine(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            **run(stores, opts.jobs, opts.backlog, opts.rounds),
        }
    print(report(result))
    save_json(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
