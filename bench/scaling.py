"""Scenario ``scaling``: the cost of one poll and of one listing as the queue grows,
legacy against optimized, in counted store operations and wall time.

- Poll: 10 ready jobs plus N scheduled an hour ahead (N = 1k ... 1M), one server
  cycle (``finish_and_claim``: promote due + claim up to 32, one transaction).
- List: ``store.list()`` of N jobs (N = 100 ... 100k).
The optimized poll must cost the same at every N; the legacy poll grows linearly.
"""

from __future__ import annotations

import math
from typing import Any

from bench.common import MODES, Progress, md_table, spread, verdict
from bench.seed import list_row, poll_row

FULL = dict(
    poll_sizes=(1_000, 10_000, 100_000, 1_000_000),
    ready=10,
    claim_limit=32,
    poll_reps={"optimized": 5, "legacy": 3},
    list_sizes=(100, 1_000, 10_000, 100_000),
    list_reps=5,
)
QUICK = dict(
    FULL,
    poll_sizes=(1_000, 10_000, 100_000),
    poll_reps={"optimized": 3, "legacy": 2},
    list_sizes=(100, 1_000, 10_000, 100_000),
    list_reps=2,
)


def steps(cfg: dict[str, Any]) -> int:
    return len(MODES) * (len(cfg["poll_sizes"]) + len(cfg["list_sizes"]))


def run(cfg: dict[str, Any], progress: Progress) -> dict[str, Any]:
    poll: dict[str, dict[str, Any]] = {m: {} for m in MODES}
    lists: dict[str, dict[str, Any]] = {m: {} for m in MODES}
    for size in cfg["poll_sizes"]:
        for mode in MODES:
            progress.step(f"scaling: poll, {size:,} scheduled, {mode}")
            poll[mode][str(size)] = poll_row(
                mode, cfg["ready"], size, cfg["claim_limit"], cfg["poll_reps"][mode]
            )
    for size in cfg["list_sizes"]:
        for mode in MODES:
            progress.step(f"scaling: list {size:,} jobs, {mode}")
            lists[mode][str(size)] = list_row(mode, size, cfg["list_reps"])
    return {"config": cfg, "poll": poll, "list": lists}


def slope(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) against log(size): 0 is flat, 1 is linear."""
    xs = [math.log(s) for s in sizes]
    ys = [math.log(max(v, 1e-12)) for v in values]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    den = sum((x - mx) ** 2 for x in xs)
    return num / den if den else 0.0


def verdicts(res: dict[str, Any]) -> dict[str, Any]:
    sizes = list(res["config"]["poll_sizes"])
    poll = res["poll"]
    opt_ops = [poll["optimized"][str(s)]["ops"] for s in sizes]
    leg_reads = [poll["legacy"][str(s)]["ops"]["reads"] for s in sizes]
    opt_t = [poll["optimized"][str(s)]["seconds"]["median"] for s in sizes]
    opt_cpu = [poll["optimized"][str(s)]["cpu_seconds"]["median"] for s in sizes]
    leg_t = [poll["legacy"][str(s)]["seconds"]["median"] for s in sizes]
    return {
        "optimized_ops_flat": all(o == opt_ops[0] for o in opt_ops),
        "optimized_time_slope": slope(sizes, opt_t),
        "optimized_cpu_slope": slope(sizes, opt_cpu),
        "legacy_reads_slope": slope(sizes, leg_reads),
        "legacy_time_slope": slope(sizes, leg_t),
        "legacy_linear": abs(slope(sizes, leg_reads) - 1) < 0.1,
    }


def report(res: dict[str, Any]) -> str:
    cfg, poll, lists = res["config"], res["poll"], res["list"]
    rows = []
    for size in cfg["poll_sizes"]:
        cells = [f"{cfg['ready']} ready + {size:,} scheduled"]
        for mode in MODES:
            r = poll[mode][str(size)]
            cells += [
                f"{r['ops']['reads']:,}",
                f"{r['ops']['puts'] + r['ops']['deletes']:,}",
                f"{spread(r['seconds'], 1000, 3)}",
                f"{r['cpu_seconds']['median'] * 1000:.3f}",
                str(r["claimed"]),
            ]
        rows.append(cells)
    head = ["poll cycle (claim limit 32)"]
    for mode in MODES:
        head += [
            f"{mode} reads",
            f"{mode} writes",
            f"{mode} wall ms",
            f"{mode} CPU ms",
            f"{mode} claims",
        ]
    poll_table = md_table(head, rows)
    rows = []
    for size in cfg["list_sizes"]:
        cells = [f"list {size:,} jobs"]
        for mode in MODES:
            r = lists[mode][str(size)]
            cells += [
                f"1 + {r['ops']['gets']:,}",
                f"{r['ops']['reads']:,}",
                f"{spread(r['seconds'], 1000, 2)}",
            ]
        rows.append(cells)
    head = ["listing"]
    for mode in MODES:
        head += [f"{mode} queries", f"{mode} reads", f"{mode} ms"]
    list_table = md_table(head, rows)
    v = verdicts(res)
    checks = md_table(
        ["check", "measured", "result"],
        [
            [
                "optimized poll: same operations at every size",
                "identical" if v["optimized_ops_flat"] else "differ",
                verdict(v["optimized_ops_flat"]),
            ],
            [
                "optimized poll time vs size (log-log slope; 0 = flat)",
                f"{v['optimized_time_slope']:.3f}",
                verdict(v["optimized_time_slope"] < 0.1),
            ],
            [
                "optimized poll CPU time vs size (log-log slope; 0 = flat)",
                f"{v['optimized_cpu_slope']:.3f}",
                verdict(v["optimized_cpu_slope"] < 0.1),
            ],
            [
                "legacy poll reads vs size (log-log slope; 1 = linear)",
                f"{v['legacy_reads_slope']:.3f}",
                verdict(v["legacy_linear"]),
            ],
            ["legacy poll time vs size (log-log slope)", f"{v['legacy_time_slope']:.3f}", "(info)"],
        ],
    )
    return "\n\n".join(
        [
            "### Poll cost",
            poll_table,
            "### List cost",
            list_table,
            "### Checks",
            checks,
            "Times: median (min-max) over "
            f"{cfg['poll_reps']['optimized']} (optimized) / {cfg['poll_reps']['legacy']} "
            f"(legacy) polls and {cfg['list_reps']} listings, each size on a fresh store. "
            "Wall time includes the poll's fsynced commit, so it also measures the shared "
            "disk; CPU time is this process's and does not. "
            "Reads = index entries visited + record reads, from the store's operation "
            "counter. Plot: `scaling.png`.",
        ]
    )
