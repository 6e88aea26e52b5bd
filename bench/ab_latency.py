"""A/B the idle latency of two source trees, alternating rounds on one machine.

    python -m bench.ab_latency TREE_A TREE_B [--rounds N] [--samples N]

Each round runs ``bench.serve_bench.bench_latency`` in a fresh interpreter with one
tree's ``mpqueue`` and ``bench`` on the path (e.g. a ``git worktree`` of the commit
before a change, and the working tree). The order alternates every round, so drift in
the machine's fsync speed hits both trees alike; compare the medians of the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys


def one_round(tree: str, samples: int) -> dict[str, dict[str, float]]:
    code = ("import json, bench.serve_bench as b; "
            f"print(json.dumps(b.bench_latency({samples})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tree, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=tree), timeout=600,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--samples", type=int, default=150)
    args = parser.parse_args()
    p50s: dict[str, list[float]] = {tree: [] for tree in args.trees}
    for r in range(args.rounds):
        for tree in (args.trees if r % 2 == 0 else args.trees[::-1]):
            res = one_round(tree, args.samples)
            call, ret = res["from_call_ms"], res["from_commit_ms"]
            p50s[tree].append(call["p50"])
            print(f"{tree}: p50 {call['p50']:.3f} p99 {call['p99']:.3f} ms "
                  f"(from the enqueue's return p50 {ret['p50']:.3f})", flush=True)
    for tree, values in p50s.items():
        print(f"{tree}: median of the p50s {statistics.median(values):.3f} ms "
              f"({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
