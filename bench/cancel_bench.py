"""Cancel benchmark (issue 13): stopping a running job, and cancelling a backlog.

    python -m bench.cancel_bench [--rounds N] [--jobs N] [--path DIR]
                                 [--store lmdb|postgres] [--pg-url URL] [--out FILE.json]

Rows, measured in this one run on fresh durable stores (LMDB: a new directory under
``--path``; PostgreSQL: a new schema of ``--pg-url``, or of a throwaway server):

  running  ``serve --workers 2`` in a subprocess runs ``bench.jobs.spin_until_stopped``
           (a pure-Python loop); once the job has started, ``job.cancel()``. Timed from
           the call to (a) the job's own ``finally`` (the child stopped it) and (b) the
           store reading ``cancelled`` (the server committed it), ``--rounds`` times.
  bulk     ``--jobs`` queued jobs of one task (enqueued with ``map``, not timed), then
           ``queue.cancel(name=...)``: jobs cancelled per second, in batches of
           ``cancellation.BULK_BATCH`` a transaction.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

from bench.common import md_table, save_json, verdict
from bench.serve_bench import Server, percentiles
from bench.store_bench import machine
from bench.workflow_bench import Stores, log, pg_url_for, store_options
from mpqueue import Queue
from mpqueue.records import JobState

SPIN, NOOP = "bench.jobs.spin_until_stopped", "bench.jobs.noop"
RUNNING_TARGET_P50_MS = 50.0
BULK_TARGET_JOBS_S = 50_000
POLL_S = 0.0005


def _wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout} s")
        time.sleep(POLL_S)


def _notes(path: str) -> dict[str, int]:
    try:
        with open(path, encoding="ascii") as fh:
            return {what: int(ns) for what, ns in (line.split() for line in fh)}
    except FileNotFoundError:
        return {}


def bench_running(stores: Stores, rounds: int, notes_dir: str) -> dict[str, Any]:
    stopped_ms, committed_ms = [], []
    with stores.fresh() as where, Server(where, 2), Queue(where) as queue:
        spin = queue.task_by_name(SPIN)
        for r in range(rounds):
            notes = os.path.join(notes_dir, f"spin-{r}")
            job = spin.delay(notes)
            _wait(lambda: "start" in _notes(notes), 30, "the job to start")
            asked = time.time_ns()
            assert job.cancel()
            stop = _wait(lambda: _notes(notes).get("stop"), 30, "the job to stop")
            _wait(lambda: queue.store.get(job.id).state is JobState.CANCELLED, 30, "cancelled")
            done = time.time_ns()
            stopped_ms.append((stop - asked) / 1e6)
            committed_ms.append((done - asked) / 1e6)
    return {
        "rounds": rounds,
        "stopped_ms": percentiles(stopped_ms),
        "committed_ms": percentiles(committed_ms),
    }


def bench_bulk(stores: Stores, jobs: int, rounds: int) -> dict[str, Any]:
    rates = []
    for _ in range(rounds):
        with stores.fresh() as where, Queue(where) as queue:
            noop = queue.task_by_name(NOOP)
            for start in range(0, jobs, 10_000):
                noop.map([(i,) for i in range(start, min(jobs, start + 10_000))])
            started = time.perf_counter()
            report = queue.cancel(name=NOOP)
            elapsed = time.perf_counter() - started
            assert len(report.cancelled) == jobs and queue.stats()["cancelled"] == jobs
        rates.append(jobs / elapsed)
        log(f"  bulk: {rates[-1]:,.0f} jobs/s")
    return {"jobs": jobs, "jobs_s": rates}


def report(result: dict[str, Any]) -> str:
    running, bulk = result["running"], result["bulk"]
    p50 = running["stopped_ms"]["p50"]
    rate = min(bulk["jobs_s"])
    rows = [
        [
            "running job: cancel() to the job stopped (p50 / p95)",
            f"{p50:.1f} / {running['stopped_ms']['p95']:.1f} ms",
            f"<= {RUNNING_TARGET_P50_MS:.0f} ms p50",
            verdict(p50 <= RUNNING_TARGET_P50_MS),
        ],
        [
            "running job: cancel() to 'cancelled' committed (p50 / p95)",
            f"{running['committed_ms']['p50']:.1f} / {running['committed_ms']['p95']:.1f} ms",
            "",
            "",
        ],
        [
            f"bulk cancel of {bulk['jobs']:,} queued jobs (slowest of {len(bulk['jobs_s'])})",
            f"{rate:,.0f} jobs/s",
            f">= {BULK_TARGET_JOBS_S:,} jobs/s",
            verdict(rate >= BULK_TARGET_JOBS_S),
        ],
    ]
    head = f"{result['store']}, {result['machine']}, {result['date']}"
    return head + "\n\n" + md_table(["row", "measured", "target", ""], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30, help="running-job cancels [30]")
    parser.add_argument("--jobs", type=int, default=100_000, help="bulk cancel size [100000]")
    parser.add_argument("--bulk-rounds", type=int, default=3, help="bulk cancels [3]")
    store_options(parser)
    opts = parser.parse_args()
    with pg_url_for(opts) as pg_url, tempfile.TemporaryDirectory() as notes_dir:
        stores = Stores(opts.store, opts.path, pg_url)
        result = {
            "store": opts.store,
            "machine": machine(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            "running": bench_running(stores, opts.rounds, notes_dir),
            "bulk": bench_bulk(stores, opts.jobs, opts.bulk_rounds),
        }
    print(report(result))
    save_json(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
