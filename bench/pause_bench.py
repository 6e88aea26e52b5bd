"""Pause benchmark (issue 13): a paused backlog must cost the other jobs' claims nothing.

    python -m bench.pause_bench [--backlog N] [--jobs N] [--rounds N] [--path DIR]
                                [--store lmdb|postgres] [--pg-url URL] [--out FILE.json]

Rows, measured in this one run on fresh durable stores (LMDB: a new directory under
``--path``; PostgreSQL: a new schema of ``--pg-url``, or of a throwaway server):

  drain    ``serve --workers 2`` drains ``--jobs`` no-op jobs (``map``, timed from the
           enqueue to the last one done) on a store that also holds ``--backlog`` ready
           jobs of a paused task, and on one that holds none; the two kinds alternate,
           ``--rounds`` times each. The ratio is paused-backlog time over none.
  pause    ``queue.pause(task)`` and ``queue.resume(task)`` of the ``--backlog`` jobs:
           jobs moved per second (the slowest round).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from typing import Any

from bench.common import md_table, save_json, verdict
from bench.serve_bench import DRAIN_POLL_S, Server, wait_until
from bench.store_bench import machine
from bench.workflow_bench import Stores, alternate, log, pg_url_for, store_options
from mpqueue import Queue

NOOP, HELD = "bench.jobs.noop", "bench.jobs.stamp"
KINDS = ("none", "paused")
CHUNK = 10_000
# "Unchanged within noise" on this 2-core machine: the drain may be at most this much
# slower with the paused backlog than without it.
DRAIN_RATIO_LIMIT = 1.15


def _fill(queue: Queue, name: str, count: int) -> None:
    task = queue.task_by_name(name)
    for start in range(0, count, CHUNK):
        task.map([(i,) for i in range(start, min(count, start + CHUNK))])


def _timed(call: Any) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def bench_round(stores: Stores, kind: str, backlog: int, jobs: int) -> dict[str, float]:
    """One drain, after a pause and before a resume when ``kind`` is "paused"."""
    out: dict[str, float] = {}
    with stores.fresh() as where:
        with Queue(where) as queue:
            if kind == "paused":
                _fill(queue, HELD, backlog)
                out["pause_s"] = _timed(lambda: queue.pause(HELD))
                assert queue.stats()["ready"] == backlog
        with Server(where, 2), Queue(where) as queue:
            started = time.perf_counter()
            _fill(queue, NOOP, jobs)
            wait_until(
                lambda: queue.stats()["done"] >= jobs, 300, "the jobs to be done", DRAIN_POLL_S
            )
            out["drain_s"] = time.perf_counter() - started
            if kind == "paused":
                assert queue.stats()["done"] == jobs  # no held job ran
                out["resume_s"] = _timed(lambda: queue.resume(HELD))
    return out


def run(stores: Stores, backlog: int, jobs: int, rounds: int) -> dict[str, Any]:
    found: dict[str, list[dict[str, float]]] = {kind: [] for kind in KINDS}
    for r, kind in alternate(KINDS, rounds):
        found[kind].append(bench_round(stores, kind, backlog, jobs))
        log(f"  round {r} {kind}: {found[kind][-1]}")
    drains = {kind: [row["drain_s"] for row in found[kind]] for kind in KINDS}
    return {
        "backlog": backlog,
        "jobs": jobs,
        "drain_s": drains,
        "ratio": statistics.median(drains["paused"]) / statistics.median(drains["none"]),
        "pause_s": [row["pause_s"] for row in found["paused"]],
        "resume_s": [row["resume_s"] for row in found["paused"]],
    }


def report(result: dict[str, Any]) -> str:
    backlog, jobs, drains = result["backlog"], result["jobs"], result["drain_s"]
    ratio = result["ratio"]
    rows = [
        [
            f"drain {jobs:,} no-op jobs, no backlog (median)",
            f"{statistics.median(drains['none']):.2f} s",
            "",
            "",
        ],
        [
            f"drain {jobs:,} no-op jobs beside {backlog:,} paused (median)",
            f"{statistics.median(drains['paused']):.2f} s",
            "",
            "",
        ],
        [
            "paused backlog / none",
            f"{ratio:.2f}",
            f"<= {DRAIN_RATIO_LIMIT}",
            verdict(ratio <= DRAIN_RATIO_LIMIT),
        ],
        [
            f"pause of {backlog:,} ready jobs (slowest)",
            f"{backlog / max(result['pause_s']):,.0f} jobs/s",
            "",
            "",
        ],
        [
            f"resume of {backlog:,} held jobs (slowest)",
            f"{backlog / max(result['resume_s']):,.0f} jobs/s",
            "",
            "",
        ],
    ]
    head = f"{result['store']}, {result['machine']}, {result['date']}"
    return head + "\n\n" + md_table(["row", "measured", "target", ""], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=100_000, help="paused jobs [100000]")
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs drained per round [5000]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind [3]")
    store_options(parser)
    opts = parser.parse_args()
    with pg_url_for(opts) as pg_url:
        stores = Stores(opts.store, opts.path, pg_url)
        result = {
            "store": opts.store,
            "machine": machine(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            **run(stores, opts.backlog, opts.jobs, opts.rounds),
        }
    print(report(result))
    save_json(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
