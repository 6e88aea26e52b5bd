"""Scenario ``recovery``: time from a SIGKILL until the killed job runs again, per mode.

- child: SIGKILL of the worker process running a job; the same server retries it.
- coordinator: SIGKILL of a server whose child runs a job (the child exits when its
  coordinator's pipe closes); a second server on the store puts the job back and runs it.
The gap is the second start's wall time minus the time just before the kill. The
measurements are ``bench.serve_bench``'s, run in each mode.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import MODES, Progress, md_table
from bench.serve_bench import bench_recovery_child, bench_recovery_coordinator

FULL = dict(child_reps=10, coordinator_reps=5)
QUICK = dict(child_reps=3, coordinator_reps=1)


def steps(cfg: dict[str, Any]) -> int:
    return 2 * len(MODES)


def run(cfg: dict[str, Any], progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {"config": cfg, "child": {}, "coordinator": {}}
    for mode in MODES:
        progress.step(f"recovery: child SIGKILL, {mode} ({cfg['child_reps']} reps)")
        out["child"][mode] = bench_recovery_child(cfg["child_reps"], mode)
        progress.step(f"recovery: coordinator SIGKILL, {mode} ({cfg['coordinator_reps']} reps)")
        out["coordinator"][mode] = bench_recovery_coordinator(cfg["coordinator_reps"], mode)
    return out


def report(res: dict[str, Any]) -> str:
    rows = []
    for what, label in (
        ("child", "child SIGKILL -> job runs again (same server)"),
        ("coordinator", "coordinator SIGKILL -> job runs on another server"),
    ):
        for mode in MODES:
            gaps = res[what][mode]["ms"]
            rows.append(
                [
                    label,
                    mode,
                    len(gaps),
                    f"{statistics.median(gaps):,.1f}",
                    f"{min(gaps):,.1f}",
                    f"{max(gaps):,.1f}",
                ]
            )
    return md_table(["event", "mode", "reps", "median ms", "min ms", "max ms"], rows) + (
        "\n\n- Legacy mode finds the put-back job only at its next 0.5 s poll; optimized "
        "mode claims it in the same cycle that records the crash. A coordinator's death "
        "is noticed by the other server's dead-coordinator check (every 0.5 s, by pid and "
        "process start time)."
    )
