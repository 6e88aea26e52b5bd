"""PNG plots for the ``scaling`` and ``throughput`` scenarios (matplotlib, from the
``bench`` extra). Each function takes the scenario's results and returns the file it
wrote."""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

STYLE = {
    "legacy": dict(color="tab:red", marker="o"),
    "optimized": dict(color="tab:blue", marker="s"),
}


def scaling(res: dict[str, Any], out_dir: str) -> str:
    """Poll and list cost against queue size, log-log: reads (top) and time (bottom)."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for col, (kind, sizes_key, xlabel) in enumerate(
        (
            ("poll", "poll_sizes", "scheduled jobs (plus 10 ready)"),
            ("list", "list_sizes", "jobs listed"),
        )
    ):
        sizes = list(res["config"][sizes_key])
        for mode in ("legacy", "optimized"):
            rows = [res[kind][mode][str(s)] for s in sizes]
            # poll: entries read; list: queries (1 index scan + one read per job)
            counts = (
                [r["ops"]["reads"] for r in rows]
                if kind == "poll"
                else [1 + r["ops"]["gets"] for r in rows]
            )
            axes[0][col].plot(sizes, counts, label=mode, **STYLE[mode])
            med = [r["seconds"]["median"] * 1000 for r in rows]
            lo = [m - r["seconds"]["min"] * 1000 for m, r in zip(med, rows)]
            hi = [r["seconds"]["max"] * 1000 - m for m, r in zip(med, rows)]
            axes[1][col].errorbar(sizes, med, yerr=[lo, hi], label=mode, capsize=3, **STYLE[mode])
        axes[0][col].set_title(
            "one poll: entries read"
            if kind == "poll"
            else "one list: queries (1 scan + per-job reads)"
        )
        axes[1][col].set_title(f"one {kind}: wall time (median, min-max)")
        axes[1][col].set_ylabel("ms")
        axes[0][col].set_ylabel("reads" if kind == "poll" else "queries")
        for row in (0, 1):
            axes[row][col].set_xscale("log")
            axes[row][col].set_yscale("log")
            axes[row][col].set_xlabel(xlabel)
            axes[row][col].grid(True, which="both", alpha=0.3)
            axes[row][col].legend()
    fig.suptitle("mpqueue: poll and list cost as the queue grows, legacy vs optimized")
    fig.tight_layout()
    path = os.path.join(out_dir, "scaling.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(res: dict[str, Any], out_dir: str) -> str:
    """Jobs/s against worker count, one panel per job kind, one line per runner."""
    kinds = list(res["kinds"])
    fig, axes = plt.subplots(1, len(kinds), figsize=(6 * len(kinds), 4.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        data = res["kinds"][kind]
        workers = sorted(int(w) for w in data["by_workers"])
        for runner in data["runners"]:
            pts = [
                (w, data["by_workers"][str(w)][runner]["jobs_per_s"])
                for w in workers
                if runner in data["by_workers"][str(w)]
            ]
            if not pts:
                continue
            xs = [w for w, _ in pts]
            med = [s["median"] for _, s in pts]
            err = [
                [m - s["min"] for m, (_, s) in zip(med, pts)],
                [s["max"] - m for m, (_, s) in zip(med, pts)],
            ]
            ax.errorbar(xs, med, yerr=err, marker="o", capsize=3, label=runner)
        leg = data.get("legacy")
        if leg:
            ax.errorbar(
                [leg["workers"]],
                [leg["jobs_per_s"]["median"]],
                marker="x",
                linestyle="none",
                color="tab:red",
                label=f"mpqueue legacy ({leg['jobs']} jobs)",
            )
        ax.set_title(f"{data['label']} ({data['jobs']:,} jobs)")
        ax.set_xlabel("worker processes")
        ax.set_ylabel("jobs/s (median, min-max)")
        ax.set_xticks(workers)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("mpqueue vs ProcessPoolExecutor vs Huey (SQLite, process workers)")
    fig.tight_layout()
    path = os.path.join(out_dir, "throughput.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
