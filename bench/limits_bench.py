"""Concurrency limits benchmark (issue 15): unlimited jobs beside a limited task's
backlog run as fast as alone.

    python -m bench.limits_bench [--jobs N] [--limited N] [--concurrency N] [--rounds N]
                                 [--path DIR] [--store lmdb|postgres] [--pg-url URL]
                                 [--out FILE.json]

Two kinds of round, alternating, ``--rounds`` times each, each on a fresh durable store
(as ``bench.queues_bench``) drained by ``serve --workers 2``:

  alone    ``--jobs`` no-op jobs (``bench.jobs.noop``) in the default queue, nothing else
           in the store
  beside   the same, enqueued once the store holds ``--limited`` ready jobs of the
           no-op under another name (``bench.jobs.noop_a``) with a task limit of
           ``--concurrency`` (1), in the same default queue, and the server has started
           on them

Each round is timed from the first enqueue of the unlimited jobs to the moment all of
them have ended (read by their ids, ``Store.endings``, oldest first: the limited jobs,
which go on running one at a time beside them, are not counted). The issue asks that
the unlimited ones keep >= 90% of their throughput alone: beside's median time over
alone's <= 1/0.9. The limited jobs that ran during a round are recorded too: they show
the limit in use (at concurrency 1, one in each claim, since a slot comes back with
each outcome) and cost the unlimited ones that much of the workers' time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from bench.common import md_table, save_json, verdict
from bench.queues_bench import TIME_RATIO_LIMIT, fill, measured, over, server_cpu_s
from bench.serve_bench import DRAIN_POLL_S, Server, wait_until
from bench.workflow_bench import Stores, alternate, log, store_options
from mpqueue import Queue
from mpqueue.records import FINISHED_STATES

LIMITED = "bench.jobs.noop_a"
KINDS = ("alone", "beside")
READ_AHEAD = 512  # ids whose endings one poll reads past the first unfinished one


class Ended:
    """Whether every job of ``ids`` has ended, polled cheaply: jobs end roughly in the
    order they were enqueued, so each poll reads from the first one not seen ended."""

    def __init__(self, queue: Queue, ids: Sequence[str]):
        self.queue, self.ids, self.seen = queue, ids, 0

    def __call__(self) -> bool:
        while self.seen < len(self.ids):
            window = self.ids[self.seen : self.seen + READ_AHEAD]
            endings = self.queue.store.endings(window)
            ended = 0
            for ending in endings:
                if ending is None or ending.state not in FINISHED_STATES:
                    break
                ended += 1
            self.seen += ended
            if ended < len(window):
                return False
        return True


def bench_round(
    stores: Stores, kind: str, jobs: int, limited: int, concurrency: int
) -> dict[str, float]:
    with stores.fresh() as where:
        if kind == "beside":
            with Queue(where) as queue:
                queue.limit_task(LIMITED, concurrency=concurrency)
                fill(queue, ("default",), limited, (LIMITED,))
        with Server(where, 2) as server, Queue(where) as queue:
            done_before = queue.stats()["done"]  # limited jobs the server ran as it started
            cpu = server_cpu_s(server)
            started = time.perf_counter()
            ids = fill(queue, ("default",), jobs)
            wait_until(Ended(queue, ids), 300, "the unlimited jobs to end", DRAIN_POLL_S)
            took = time.perf_counter() - started
            cpu = server_cpu_s(server) - cpu
            ran = queue.stats()["done"] - done_before - jobs
            if kind == "beside":
                (limit,) = queue.limits()
                assert limit.name == LIMITED and limit.running <= concurrency
    return {"s": took, "cpu_s": cpu, "limited_ran": ran}


def run(stores: Stores, jobs: int, limited: int, concurrency: int, rounds: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    cpus: dict[str, list[float]] = {kind: [] for kind in KINDS}
    ran: list[int] = []
    for r, kind in alternate(KINDS, rounds):
        got = bench_round(stores, kind, jobs, limited, concurrency)
        times[kind].append(got["s"])
        cpus[kind].append(got["cpu_s"])
        if kind == "beside":
            ran.append(int(got["limited_ran"]))
        log(
            f"  round {r} {kind}: {got['s']:.2f} s, server CPU {got['cpu_s']:.2f} s, "
            f"{got['limited_ran']} limited jobs ran"
        )
    return {
        "jobs": jobs,
        "limited": limited,
        "concurrency": concurrency,
        "drain_s": times,
        "cpu_s": cpus,
        "limited_ran": ran,
        "ratio": over(statistics.median(times["beside"]), statistics.median(times["alone"])),
        "cpu_ratio": over(statistics.median(cpus["beside"]), statistics.median(cpus["alone"])),
    }


def report(result: dict[str, Any]) -> str:
    jobs, times = result["jobs"], result["drain_s"]
    beside = (
        f"beside {result['limited']:,} ready jobs of a task limited to "
        f"concurrency={result['concurrency']}"
    )
    cpus = result["cpu_s"]

    def rate(kind: str) -> str:
        per_job = statistics.median(cpus[kind]) / jobs * 1e6
        return (
            f"{jobs / statistics.median(times[kind]):,.0f} jobs/s, server CPU {per_job:,.0f} us/job"
        )

    rows = [
        [f"{jobs:,} unlimited no-op jobs alone (median)", rate("alone"), "", ""],
        [f"the same {beside} (median)", rate("beside"), "", ""],
        [
            "limited jobs run meanwhile, per round",
            " / ".join(f"{n:,}" for n in result["limited_ran"]),
            "",
            "",
        ],
        [
            f"beside time / alone's (CPU: {result['cpu_ratio']:.2f})",
            f"{result['ratio']:.2f}",
            f"<= {TIME_RATIO_LIMIT:.2f} (>= 90% throughput)",
            verdict(result["ratio"] <= TIME_RATIO_LIMIT),
        ],
    ]
    head = f"{result['store']}, {result['machine']}, {result['date']}"
    return head + "\n\n" + md_table(["row", "measured", "target", ""], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="unlimited jobs [20000]")
    parser.add_argument("--limited", type=int, default=100_000, help="limited ready jobs [100000]")
    parser.add_argument("--concurrency", type=int, default=1, help="the limited task's limit [1]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind [3]")
    store_options(parser)
    opts = parser.parse_args()
    result = measured(
        opts, lambda stores: run(stores, opts.jobs, opts.limited, opts.concurrency, opts.rounds)
    )
    print(report(result))
    save_json(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
