"""Executor benchmark (issue 12): ``mpqueue.Executor.map`` against
``concurrent.futures.ProcessPoolExecutor.map``, in one run.

    python -m bench.executor_bench [--rounds N] [--workers W] [--noop-items N]
                                   [--cpu-items N] [--cpu-ms MS]

Two workloads, each mapped by both executors with the same ``max_workers`` and the
default ``chunksize``, alternating which goes first from round to round:
  noop   10,000 items of a function that returns its argument
  cpu    400 items of a pure-Python loop calibrated here to about 10 ms

Each measurement runs in a fresh (spawned) interpreter and opens a fresh executor
(mpqueue on a fresh LMDB store in a temporary directory, durable commits), maps a few
items to warm it up, then times the real map (``map``) and the whole ``with`` block,
start and shutdown included (``total``). Printed per round and as medians, with the
ratios mpqueue / ProcessPoolExecutor (targets, on ``map``: >= 1.5x on no-op items,
>= 97% on CPU items): the ratio of the two medians, and the median of each round's
ratio. A round's two measurements run back to back, so its ratio is not moved by how
busy a shared host was in other rounds (its speed drifts by 20% and more within
minutes); that is the headline on a noisy machine.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor as StdExecutor
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from bench import jobs
from mpqueue import Executor

WARM_UP_ITEMS = 8
CALIBRATION_ROUNDS = 5


@dataclass
class Timing:
    map_s: float
    total_s: float


def calibrate_loops(target_ms: float) -> int:
    """How many iterations of ``jobs.loop`` take ``target_ms`` here (best of a few)."""
    probe = 200_000
    best = min(_time(lambda: jobs.loop(probe)) for _ in range(CALIBRATION_ROUNDS))
    return max(1, int(probe * target_ms / 1000 / best))


def _time(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def measure(
    open_executor: Callable[[], StdExecutor], fn: Callable[[Any], Any], items: list[Any]
) -> Timing:
    started = time.perf_counter()
    with open_executor() as ex:
        list(ex.map(fn, items[:WARM_UP_ITEMS]))
        mapped = time.perf_counter()
        results = list(ex.map(fn, items))
        map_s = time.perf_counter() - mapped
    total_s = time.perf_counter() - started
    if len(results) != len(items):
        raise RuntimeError(f"{len(results)} results for {len(items)} items")
    return Timing(map_s, total_s)


def measure_one(who: str, fn: Callable[[Any], Any], items: list[Any], workers: int) -> Timing:
    """One measurement of ``who`` ("mpqueue" or "pool") on a fresh executor."""
    with tempfile.TemporaryDirectory(prefix="mpqueue-exbench-") as tmp:
        opener: Callable[[], StdExecutor] = (
            (lambda: Executor(f"{tmp}/store", max_workers=workers))
            if who == "mpqueue"
            else (lambda: ProcessPoolExecutor(max_workers=workers))
        )
        return measure(opener, fn, items)


def run_workload(
    name: str, fn: Callable[[Any], Any], items: list[Any], workers: int, rounds: int
) -> dict[str, list[Timing]]:
    """Each measurement runs in a fresh interpreter (spawned), so neither executor is
    timed in a process the other one's rounds have used: its heap, its imports and
    its garbage collector's state start alike for both."""
    found: dict[str, list[Timing]] = {"mpqueue": [], "pool": []}
    spawn = multiprocessing.get_context("spawn")
    for round_no in range(rounds):
        order = ["mpqueue", "pool"] if round_no % 2 == 0 else ["pool", "mpqueue"]
        for who in order:
            with ProcessPoolExecutor(1, mp_context=spawn) as fresh:
                timing = fresh.submit(measure_one, who, fn, items, workers).result()
            found[who].append(timing)
            print(
                f"{name} round {round_no + 1} {who:8s} map {timing.map_s:7.3f} s  "
                f"total {timing.total_s:7.3f} s",
                flush=True,
            )
    return found


def summarize(name: str, found: dict[str, list[Timing]], items: int) -> None:
    for field in ("map_s", "total_s"):
        ours_s = [getattr(t, field) for t in found["mpqueue"]]
        pool_s = [getattr(t, field) for t in found["pool"]]
        ours, pool = statistics.median(ours_s), statistics.median(pool_s)
        paired = sorted(p / o for p, o in zip(pool_s, ours_s))
        label = field[:-2]
        print(
            f"{name} {label:5s} median: mpqueue {ours:.3f} s ({items / ours:,.0f} items/s), "
            f"ProcessPoolExecutor {pool:.3f} s ({items / pool:,.0f} items/s); "
            f"speed ratio mpqueue/pool {pool / ours:.2f}x ({pool / ours:.1%}); "
            f"per round {statistics.median(paired):.1%} "
            f"(range {paired[0]:.1%}-{paired[-1]:.1%})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--noop-items", type=int, default=10_000)
    parser.add_argument("--cpu-items", type=int, default=400)
    parser.add_argument("--cpu-ms", type=float, default=10.0)
    args = parser.parse_args()
    loops = calibrate_loops(args.cpu_ms)
    per_item_ms = _time(lambda: jobs.loop(loops)) * 1000
    print(
        f"workers {args.workers}, rounds {args.rounds}; cpu item: jobs.loop({loops}), "
        f"{per_item_ms:.1f} ms here"
    )
    noop = run_workload("noop", jobs.noop, list(range(args.noop_items)), args.workers, args.rounds)
    cpu = run_workload("cpu", jobs.loop, [loops] * args.cpu_items, args.workers, args.rounds)
    summarize("noop", noop, args.noop_items)
    summarize("cpu", cpu, args.cpu_items)


if __name__ == "__main__":
    main()
