"""``bench.queues_bench``, ``bench.limits_bench`` and ``bench.cycle_bench``: how they
deal jobs, their tables' verdicts on made-up numbers, and their kinds of round run for
real at a tiny size (real ``serve`` processes on real LMDB stores), so a change that
breaks a kind fails here rather than in the next benchmark run. Nothing is timed
against a target here; the benchmarks themselves are run by hand (bench/RESULTS.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import cycle_bench, limits_bench, queues_bench
from bench.workflow_bench import Stores

pytestmark = pytest.mark.timeout(30)


def test_every_task_and_queue_pair_gets_jobs() -> None:
    pairs = {queues_bench._deal(n, 4, 10) for n in range(40)}
    assert pairs == {(t, q) for t in range(4) for q in range(10)}


def _queues_result(times: dict[str, float]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "store": "lmdb",
        "machine": "test",
        "date": "2026-12-03",
        "jobs": 1000,
        "backlog": 100,
        "limit_concurrency": 200,
        "drain_s": {kind: [s, s] for kind, s in times.items()},
        "cpu_s": {kind: [s / 2, s / 2] for kind, s in times.items()},
    }
    result["ratio"] = queues_bench.ratios(result["drain_s"], tuple(times))
    result["cpu_ratio"] = queues_bench.ratios(result["cpu_s"], tuple(times))
    return result


def test_queues_report_verdicts() -> None:
    table = queues_bench.report(
        _queues_result(
            {"default": 1.0, "fast": 1.05, "backlog": 1.2, "unlimited": 1.05, "limits": 1.1}
        )
    )
    assert "| limits time / default's (CPU: 1.10) | 1.10 | <= 1.11 | PASS |" in table
    assert "| backlog time / default's (CPU: 1.20) | 1.20 | <= 1.11 | **FAIL** |" in table
    assert "| backlog time / fast's (CPU: 1.14) | 1.14 | <= 1.11 | **FAIL** |" in table
    assert "| limits time / unlimited's (CPU: 1.05) | 1.05 | <= 1.11 | PASS |" in table
    assert "3 of 4 tasks limited (concurrency=200)" in table
    assert "1,000 jobs/s, server CPU 500 us/job" in table  # 1,000 jobs in 1 s, 0.5 s CPU


def test_limits_report_verdicts() -> None:
    def result(beside: float) -> dict[str, Any]:
        return {
            "store": "lmdb",
            "machine": "test",
            "date": "2026-12-03",
            "jobs": 20_000,
            "limited": 100_000,
            "concurrency": 1,
            "drain_s": {"alone": [2.0, 2.0], "beside": [beside, beside]},
            "cpu_s": {"alone": [1.0, 1.0], "beside": [1.1, 1.1]},
            "limited_ran": [150, 160],
            "ratio": beside / 2.0,
            "cpu_ratio": 1.1,
        }

    assert "| beside time / alone's (CPU: 1.10) | 1.05 |" in limits_bench.report(result(2.1))
    assert "PASS" in limits_bench.report(result(2.1))
    assert "**FAIL**" in limits_bench.report(result(2.4))
    assert "| limited jobs run meanwhile, per round | 150 / 160 |" in limits_bench.report(
        result(2.1)
    )


@pytest.mark.timeout(180)
def test_the_queues_kinds_run(tmp_path: Path) -> None:
    # concurrency=2: the limits bind (3 tasks at 2 each), so the round also shows that
    # every job still gets done and every slot comes back (bench_round asserts both).
    got = queues_bench.run(
        Stores("lmdb", str(tmp_path), None),
        jobs=60,
        backlog=30,
        rounds=1,
        kinds=("fast", "backlog", "unlimited", "limits"),
        concurrency=2,
    )
    assert set(got["drain_s"]) == {"default", "fast", "backlog", "unlimited", "limits"}
    assert set(got["ratio"]) == set(got["cpu_ratio"])
    assert set(got["ratio"]) == {
        "fast",
        "backlog",
        "unlimited",
        "limits",
        "backlog/fast",
        "limits/unlimited",
    }
    assert all(cpu >= 0 for cpus in got["cpu_s"].values() for cpu in cpus)


@pytest.mark.timeout(180)
def test_the_limits_kinds_run(tmp_path: Path) -> None:
    got = limits_bench.run(
        Stores("lmdb", str(tmp_path), None), jobs=60, limited=40, concurrency=1, rounds=1
    )
    assert set(got["drain_s"]) == set(got["cpu_s"]) == {"alone", "beside"}
    assert len(got["limited_ran"]) == 1 and 0 <= got["limited_ran"][0] <= 40


@pytest.mark.timeout(120)
def test_the_cycle_bench_runs_and_the_backlog_costs_a_cycle_no_operation() -> None:
    got = cycle_bench.run(cycle_bench.SETUPS, jobs=300, backlog=2_000, batch=65, sync=False)
    setups = got["setups"]
    assert set(setups) == set(cycle_bench.SETUPS) and setups["default"]["ratio"] == 1.0
    # a claim of queue fast reads and writes the same beside 2,000 unserved jobs as
    # without them (what bench/RESULTS.md's backlog row rests on)
    assert setups["backlog"]["ops"] == setups["fast"]["ops"]
    assert (
        setups["backlog"]["lmdb"]["queued"]["leaf_pages"]
        > setups["fast"]["lmdb"]["queued"]["leaf_pages"]
    )
    assert "| limits |" in cycle_bench.report(
        {"machine": {"nproc": 2, "loadavg_start": [0.5]}, **got}
    )
