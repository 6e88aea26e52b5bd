"""A/B the idle latency of two source trees, alternating rounds on one machine.

    python -m bench.ab_latency TREE_A TREE_B [--rounds N] [--samples N] [--noop JOBS]

Each round runs ``bench.serve_bench.bench_latency`` in a fresh interpreter with one
tree's ``mpqueue`` and ``bench`` on the path (e.g. a ``git worktree`` of the commit
before a change, and the working tree). The order alternates every round, so drift in
the machine's fsync speed hits both trees alike; compare the medians of the rounds.
With ``--noop JOBS`` a round is instead ``serve --until-empty --workers 2`` on JOBS
queued no-op jobs (jobs/s), to check that a latency change costs no throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any


def one_round(tree: str, samples: int) -> dict[str, dict[str, float]]:
    return _run_in(
        tree, f"import json, bench.serve_bench as b; print(json.dumps(b.bench_latency({samples})))"
    )


def noop_round(tree: str, jobs: int) -> float:
    rate: float = _run_in(
        tree,
        "import json, bench.serve_bench as b, bench.jobs as j; "
        f"r = b.bench_throughput('noop', j.noop, "
        f"[(i,) for i in range({jobs})], 1, run_executor=False); "
        "print(json.dumps(r['mpqueue_jobs_s'][0]))",
    )
    return rate


def _run_in(tree: str, code: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=tree),
        timeout=600,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument(
        "--noop",
        type=int,
        default=0,
        metavar="JOBS",
        help="compare no-op throughput on JOBS queued jobs instead",
    )
    args = parser.parse_args()
    if args.noop:
        compare_noop(args.trees, args.rounds, args.noop)
        return
    p50s: dict[str, list[float]] = {tree: [] for tree in args.trees}
    for r in range(args.rounds):
        for tree in args.trees if r % 2 == 0 else args.trees[::-1]:
            res = one_round(tree, args.samples)
            call, ret = res["from_call_ms"], res["from_commit_ms"]
            p50s[tree].append(call["p50"])
            print(
                f"{tree}: p50 {call['p50']:.3f} p99 {call['p99']:.3f} ms "
                f"(from the enqueue's return p50 {ret['p50']:.3f})",
                flush=True,
            )
    for tree, values in p50s.items():
        print(
            f"{tree}: median of the p50s {statistics.median(values):.3f} ms "
            f"({', '.join(f'{v:.3f}' for v in values)})"
        )


def compare_noop(trees: list[str], rounds: int, jobs: int) -> None:
    rates: dict[str, list[float]] = {tree: [] for tree in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            rates[tree].append(noop_round(tree, jobs))
            print(f"{tree}: {rates[tree][-1]:,.0f} no-op jobs/s", flush=True)
    for tree, values in rates.items():
        print(
            f"{tree}: median {statistics.median(values):,.0f} jobs/s "
            f"({', '.join(f'{v:,.0f}' for v in values)})"
        )


if __name__ == "__main__":
    main()
