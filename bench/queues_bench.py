"""Named queues and concurrency limits benchmark (issue 15): what serving several
queues, or limited tasks, costs a drain.

    python -m bench.queues_bench [--jobs N] [--backlog N] [--rounds N] [--kinds K,...]
                                 [--limit-concurrency N] [--path DIR]
                                 [--store lmdb|postgres] [--pg-url URL] [--out FILE.json]

``serve --workers 2`` drains ``--jobs`` no-op jobs (``map``, timed from the first enqueue
to the last one done) on a fresh durable store (LMDB: a new directory under ``--path``;
PostgreSQL: a new schema of ``--pg-url``, or of a throwaway server), in these kinds of
round, alternating (``--kinds`` picks some; ``default`` is always run), ``--rounds``
times each:

  default    every job in the default queue, the server serving every queue (the
             baseline: what a user of no named queue and no limit runs)
  ten        the jobs spread over 10 named queues, the server serving every queue
             (the merged claim across the queues' indexes)
  selected   the same 10 queues, the server started with ``--queues q0,...,q9``
             (preference order: a claim visits them in turn)
  fast       every job in queue ``fast``, the server started with ``--queues fast``:
             ``backlog`` without its backlog, so the two differ by the backlog alone
  backlog    every job in queue ``fast``, beside ``--backlog`` ready jobs of queue
             ``slow`` that the server (``--queues fast``) does not serve
  limits     10 queues and 3 limited tasks in use: the jobs dealt over four tasks
             (``noop`` and its aliases ``noop_a``, ``noop_b``, ``noop_c``, each of the
             aliases with a task limit of ``--limit-concurrency``) and, within each
             task, over the 10 queues, so every claim merges the 10 queues' indexes
             with 30 lanes (one per limited task and queue) and three of every four
             claims and outcomes take and give back a slot
  unlimited  ``limits`` without its limits: the same four tasks over the same 10
             queues, no limit stored (the issue's "unlimited run" of the same work;
             ``limits`` is compared with it as well as with ``default``)

Why the ``limits`` kind's default concurrency is 200: a limit counts the jobs its
servers hold, including the ones a child has prefetched behind the one it runs (up to
``prefetch_max`` + 1 = 65 per child, so 130 for two workers). Below that a limit also
shortens what the server may prefetch, which is the limit doing its job, not its cost;
at 200 no limit is ever reached, so the kind measures what keeping limits costs every
claim and outcome (the lanes, the running counts). ``--limit-concurrency 2`` measures
the other case: two workers never lack a job to run (three tasks at 2 each), but the
limited jobs come at most 6 at a time.

Each kind's median drain time is compared with the baseline's: the issue asks that
queues and limits in use keep >= 90% of the throughput (a ratio of time <= 1/0.9).
``backlog`` is also compared with ``fast``, its control without the backlog, and
``limits`` with ``unlimited``. Beside the wall time, each round records the CPU seconds
the server (coordinator and children) used in it (``server_cpu_s``): on a shared
machine the wall time also counts the other users' load, the CPU time much less so,
and its ratios are the steadier evidence.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import psutil

from bench.common import md_table, save_json, verdict
from bench.serve_bench import DRAIN_POLL_S, Server, wait_until
from bench.store_bench import code_fingerprint, machine
from bench.workflow_bench import Stores, alternate, log, pg_url_for, store_options
from mpqueue import Queue

NOOP = "bench.jobs.noop"
LIMITED = ("bench.jobs.noop_a", "bench.jobs.noop_b", "bench.jobs.noop_c")
KINDS = ("default", "ten", "selected", "fast", "backlog", "unlimited", "limits")
TEN = tuple(f"q{i}" for i in range(10))
CHUNK = 10_000
LIMIT_CONCURRENCY = 200  # above what 2 workers hold (2 x 65): never reached, see above
TIME_RATIO_LIMIT = 1 / 0.9  # >= 90% of the baseline's throughput


def fill(
    queue: Queue, queues: Sequence[str], count: int, tasks: Sequence[str] = (NOOP,)
) -> list[str]:
    """``count`` no-op jobs dealt as ``deal`` says; the jobs' ids."""
    return enqueue(queue, deal(queues, count, tasks))


Deal = list[list[tuple[str, str, list[tuple[int]]]]]  # per commit: (task, queue, args)


def deal(queues: Sequence[str], count: int, tasks: Sequence[str] = (NOOP,)) -> Deal:
    """``count`` no-op jobs' arguments, job ``n`` of task ``n % len(tasks)``, and within
    each task dealt round-robin over ``queues``: one ``map`` per task and queue, in
    commits of ``CHUNK`` jobs. Worked out before a round is timed: the dealing is the
    benchmark's bookkeeping, which a user with 40 lists of arguments would not do."""
    commits: Deal = []
    for start in range(0, count, CHUNK):
        numbers = range(start, min(count, start + CHUNK))
        maps = []
        for t, task in enumerate(tasks):
            for i, name in enumerate(queues):
                mine = [(n,) for n in numbers if _deal(n, len(tasks), len(queues)) == (t, i)]
                if mine:
                    maps.append((task, name, mine))
        commits.append(maps)
    return commits


def enqueue(queue: Queue, commits: Deal) -> list[str]:
    """Enqueue what ``deal`` worked out: one ``map`` per task and queue, and one commit
    (``Queue.batch``) per ``CHUNK`` jobs, so every kind pays the same enqueue commits
    however many queues and tasks it deals over. The jobs' ids."""
    handles = {name: queue.task_by_name(name) for maps in commits for name, _, _ in maps}
    ids: list[str] = []
    for maps in commits:
        with queue.batch():
            for name, queue_name, args in maps:
                task = handles[name]
                target = task.options(queue=queue_name) if queue_name != "default" else task
                ids += [job.id for job in target.map(args)]
    return ids


def _deal(n: int, tasks: int, queues: int) -> tuple[int, int]:
    """Job ``n``'s (task, queue) index: every pair of a task and a queue gets jobs."""
    return n % tasks, (n // tasks) % queues


def _serve_args(kind: str) -> tuple[str, ...]:
    if kind == "selected":
        return ("--queues", ",".join(TEN))
    if kind in ("fast", "backlog"):
        return ("--queues", "fast")
    return ()


def _queues_of(kind: str) -> tuple[str, ...]:
    return {"default": ("default",), "fast": ("fast",), "backlog": ("fast",)}.get(kind, TEN)


def _prepare(queue: Queue, kind: str, backlog: int, concurrency: int) -> None:
    """What a kind has in the store before its server starts (not timed)."""
    if kind == "backlog":
        fill(queue, ("slow",), backlog)
    if kind == "limits":
        for name in LIMITED:
            queue.limit_task(name, concurrency=concurrency)


def server_cpu_s(server: Server) -> float:
    """CPU seconds (user and system) the server's processes have used so far: the
    coordinator and its live children (the same children for a whole round, as no
    benchmark here sets ``--max-tasks-per-child``)."""
    proc = psutil.Process(server.proc.pid)
    total = 0.0
    for each in [proc, *proc.children(recursive=True)]:
        try:
            times = each.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def bench_round(
    stores: Stores, kind: str, jobs: int, backlog: int, concurrency: int = LIMIT_CONCURRENCY
) -> tuple[float, float]:
    """(wall seconds, server CPU seconds) of one round."""
    tasks = (NOOP, *LIMITED) if kind in ("limits", "unlimited") else (NOOP,)
    with stores.fresh() as where:
        with Queue(where) as queue:
            _prepare(queue, kind, backlog, concurrency)
        with Server(where, 2, *_serve_args(kind)) as server, Queue(where) as queue:
            dealt = deal(_queues_of(kind), jobs, tasks)
            cpu = server_cpu_s(server)
            started = time.perf_counter()
            enqueue(queue, dealt)
            wait_until(
                lambda: queue.stats()["done"] >= jobs, 300, "the jobs to be done", DRAIN_POLL_S
            )
            took = time.perf_counter() - started
            cpu = server_cpu_s(server) - cpu
            if kind == "backlog":
                assert queue.gauges().queues["slow"]["ready"] == backlog  # none of them ran
            if kind == "limits":  # in use to the end, and every slot given back
                assert [(lim.name, lim.running) for lim in queue.limits()] == [
                    (name, 0) for name in LIMITED
                ]
    return took, cpu


def run(
    stores: Stores,
    jobs: int,
    backlog: int,
    rounds: int,
    kinds: Sequence[str] = KINDS,
    concurrency: int = LIMIT_CONCURRENCY,
) -> dict[str, Any]:
    kinds = ("default", *(k for k in KINDS if k in kinds and k != "default"))
    drains: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpus: dict[str, list[float]] = {kind: [] for kind in kinds}
    for r, kind in alternate(kinds, rounds):
        took, cpu = bench_round(stores, kind, jobs, backlog, concurrency)
        drains[kind].append(took)
        cpus[kind].append(cpu)
        log(f"  round {r} {kind}: {took:.2f} s, server CPU {cpu:.2f} s")
    return {
        "jobs": jobs,
        "backlog": backlog,
        "limit_concurrency": concurrency,
        "drain_s": drains,
        "cpu_s": cpus,
        "ratio": ratios(drains, kinds),
        "cpu_ratio": ratios(cpus, kinds),
    }


def ratios(samples: dict[str, list[float]], kinds: Sequence[str]) -> dict[str, float]:
    """Each kind's median over the baseline's (and backlog's over fast's, limits' over
    unlimited's); NaN over a
    zero (CPU times come in clock ticks: a tiny test round may see none)."""
    median = {kind: statistics.median(samples[kind]) for kind in kinds}
    ratio = {kind: over(median[kind], median["default"]) for kind in kinds if kind != "default"}
    if "backlog" in kinds and "fast" in kinds:
        ratio["backlog/fast"] = over(median["backlog"], median["fast"])
    if "limits" in kinds and "unlimited" in kinds:
        ratio["limits/unlimited"] = over(median["limits"], median["unlimited"])
    return ratio


def over(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def report(result: dict[str, Any]) -> str:
    jobs, drains = result["jobs"], result["drain_s"]
    names = {
        "default": "default queue only, serving all",
        "ten": "10 named queues, serving all",
        "selected": "10 named queues, --queues q0,...,q9",
        "fast": "queue fast alone (--queues fast)",
        "backlog": f"queue fast, beside {result['backlog']:,} ready in slow (--queues fast)",
        "unlimited": "10 queues, 4 tasks, no limit, serving all",
        "limits": "10 queues, 3 of 4 tasks limited "
        f"(concurrency={result['limit_concurrency']}), serving all",
    }
    cpus = result.get("cpu_s", {})
    rows = []
    for kind, times in drains.items():
        cpu = (
            f", server CPU {statistics.median(cpus[kind]) / jobs * 1e6:,.0f} us/job"
            if kind in cpus
            else ""
        )
        rows.append(
            [
                f"drain {jobs:,} no-op jobs: {names[kind]} (median)",
                f"{jobs / statistics.median(times):,.0f} jobs/s{cpu}",
                "",
                "",
            ]
        )
    cpu_ratio = result.get("cpu_ratio", {})
    for kind, ratio in result["ratio"].items():
        over = kind.split("/")[1] if "/" in kind else "default"
        also = f" (CPU: {cpu_ratio[kind]:.2f})" if kind in cpu_ratio else ""
        rows.append(
            [
                f"{kind.split('/')[0]} time / {over}'s{also}",
                f"{ratio:.2f}",
                f"<= {TIME_RATIO_LIMIT:.2f}",
                verdict(ratio <= TIME_RATIO_LIMIT),
            ]
        )
    head = f"{result['store']}, {result['machine']}, {result['date']}"
    return head + "\n\n" + md_table(["row", "measured", "target", ""], rows)


def parse_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise SystemExit(f"--kinds: unknown kind {unknown[0]!r} (kinds: {', '.join(KINDS)})")
    return kinds


def measured(
    opts: argparse.Namespace, run_on: Callable[[Stores], dict[str, Any]]
) -> dict[str, Any]:
    """``run_on`` the store the options name, with the store, the date and the machine:
    its load at the start, and the sources once the run has loaded the store's modules."""
    with pg_url_for(opts) as pg_url:
        stores = Stores(opts.store, opts.path, pg_url)
        started = machine()
        result = {
            "store": opts.store,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
            **run_on(stores),
        }
        result["machine"] = {**started, "mpqueue_source": code_fingerprint()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="jobs drained per round [5000]")
    parser.add_argument("--backlog", type=int, default=100_000, help="unserved ready jobs [100000]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind [3]")
    parser.add_argument("--kinds", default=",".join(KINDS), help="kinds to run [all]")
    parser.add_argument(
        "--limit-concurrency",
        type=int,
        default=LIMIT_CONCURRENCY,
        help=f"each limited task's concurrency in the limits kind [{LIMIT_CONCURRENCY}]",
    )
    store_options(parser)
    opts = parser.parse_args()
    kinds = parse_kinds(opts.kinds)
    result = measured(
        opts,
        lambda stores: run(
            stores, opts.jobs, opts.backlog, opts.rounds, kinds, opts.limit_concurrency
        ),
    )
    print(report(result))
    save_json(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
