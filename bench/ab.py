"""A/B a whole benchmark module on two source trees, alternating rounds on one machine.

    python -m bench.ab TREE_A TREE_B [--rounds N] -- bench.serve_bench --quick

Each round runs ``python -m MODULE ARGS --out FILE`` once per tree, in a fresh
interpreter with that tree's ``mpqueue`` and ``bench`` first on the path (e.g. a
``git worktree`` of the commit before a change, and the working tree); the order
alternates every round, so drift in the machine's speed hits both trees alike. Every
number in the JSON the module writes is a row (a list of repetitions counts as its
median); the table gives each row's median over the rounds per tree and the ratio
B/A. Whether higher or lower is better is the row's business: read the name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Any


def flatten(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number under ``value``, by its path; a list of numbers becomes its median."""
    if isinstance(value, bool):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: float(value)}
    if (
        isinstance(value, list)
        and value
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    ):
        return {prefix: float(statistics.median(value))}
    rows: dict[str, float] = {}
    if isinstance(value, (dict, list)):
        for key, inner in value.items() if isinstance(value, dict) else enumerate(value):
            rows.update(flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
    return rows


def one_round(tree: str, module: str, args: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as scratch:
        out = os.path.join(scratch, "out.json")
        subprocess.run(
            [sys.executable, "-m", module, *args, "--out", out],
            cwd=tree,
            env=dict(os.environ, PYTHONPATH=tree),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=3600,
            check=True,
        )
        with open(out, encoding="utf-8") as fh:
            return flatten(json.load(fh))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree_a")
    parser.add_argument("tree_b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--skip",
        default="machine,config,command,wall_seconds",
        help="comma-separated top-level keys that are not results",
    )
    parser.add_argument("--match", default="", help="show only rows whose name matches REGEX")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    opts = parser.parse_args(argv[:split])
    command = argv[split + 1 :]
    if not command:
        parser.error("name the benchmark module after --, e.g. -- bench.store_bench --quick")
    module, args = command[0], command[1:]
    skip = tuple(opts.skip.split(","))
    trees = [opts.tree_a, opts.tree_b]
    runs: dict[str, list[dict[str, float]]] = {tree: [] for tree in trees}
    for r in range(opts.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            runs[tree].append(one_round(tree, module, args))
            print(f"round {r + 1}: {tree} done", file=sys.stderr, flush=True)
    a_runs, b_runs = runs[opts.tree_a], runs[opts.tree_b]
    rows = sorted(set.intersection(*(set(run) for run in a_runs + b_runs)))
    print(f"| row ({module} {' '.join(args)}) | A median | B median | B/A |")
    print("|---|---|---|---|")
    for row in rows:
        if row.split(".")[0] in skip or not re.search(opts.match, row):
            continue
        a = statistics.median(run[row] for run in a_runs)
        b = statistics.median(run[row] for run in b_runs)
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"| {row} | {a:,.4g} | {b:,.4g} | {ratio} |")


if __name__ == "__main__":
    main()
