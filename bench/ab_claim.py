"""A/B the store's claim path (CPU only, no fsync) of two source trees, alternating.

    python -m bench.ab_claim TREE_A TREE_B [--rounds N] [--jobs N]

Each round, in a fresh interpreter with one tree's ``mpqueue`` and ``bench`` on the
path, enqueues ``--jobs`` jobs into a fresh LMDB store (sync off, so the disk does not
decide) and claims them all in batches of 32 and of 256 (``store.claim``), timing the
claims only. The decode and checks of every claimed record are what this measures.
Order alternates every round; compare the medians.
"""

from __future__ import annotations

import argparse
import statistics

from .ab_latency import _run_in

_ROUND = """
import json, time
import bench.store_bench as b
out = {{}}
for limit in (32, 256):
    with b.fresh_queue(sync=False) as (q, _t):
        b.add_in_batches(q, b.build_records(q, {jobs}), 10000)
        store, now, claimed = q.store, b.now_ms(), 0
        start = time.perf_counter()
        while (got := store.claim("w", limit, now)):
            claimed += len(got)
        out[limit] = claimed / (time.perf_counter() - start)
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=20000)
    args = parser.parse_args()
    rates: dict[str, dict[str, list[float]]] = {args.tree_a: {}, args.tree_b: {}}
    for i in range(args.rounds):
        order = (args.tree_a, args.tree_b) if i % 2 == 0 else (args.tree_b, args.tree_a)
        for tree in order:
            for limit, rate in _run_in(tree, _ROUND.format(jobs=args.jobs)).items():
                rates[tree].setdefault(limit, []).append(rate)
    for limit in ("32", "256"):
        a = statistics.median(rates[args.tree_a][limit])
        b = statistics.median(rates[args.tree_b][limit])
        print(
            f"claim batch {limit:>3}: {a:9.0f} vs {b:9.0f} jobs/s "
            f"(B/A {b / a:.2f}, median of {args.rounds} rounds)"
        )


if __name__ == "__main__":
    main()
