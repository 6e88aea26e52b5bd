"""``bench.workflow_bench``'s own arithmetic and its table, on made-up numbers: the
order of alternating rounds, the gaps between a chain's steps, and that the report
gives each target its verdict. The benchmark itself is run by hand (see
docs/benchmarks.md), never timed in a test."""

from __future__ import annotations

from typing import Any

import pytest

from bench import jobs
from bench.workflow_bench import alternate, gaps_ms, report

pytestmark = pytest.mark.timeout(30)


def test_rounds_alternate_their_order() -> None:
    assert list(alternate(("a", "b"), 3)) == [
        (0, "a"),
        (0, "b"),
        (1, "b"),
        (1, "a"),
        (2, "a"),
        (2, "b"),
    ]


def test_a_gap_is_one_steps_end_to_the_next_ones_start() -> None:
    stamps = jobs.chain_step(jobs.chain_step([]))
    assert len(stamps) == 4 and stamps == sorted(stamps)
    # start, end, start, end in ns: gaps are end -> next start, in ms
    assert gaps_ms([0, 1_000_000, 3_000_000, 4_000_000, 4_500_000, 5_000_000]) == [2.0, 0.5]


def _results(chord_jobs_s: float, chord_us: float, gap_p50_ms: float) -> dict[str, Any]:
    pct = {"p50": gap_p50_ms, "p95": 2.5, "p99": 3.0, "max": 4.0}
    return {
        "enqueue": {
            "members": 10_000,
            "jobs_s": {"map": [60_000.0], "group": [55_000.0], "chord": [chord_jobs_s]},
        },
        "serve": {
            "members": 10_000,
            "workers": 2,
            "s_per_member": {"plain": [100e-6, 110e-6], "chord": [chord_us * 1e-6] * 2},
            "ratio": [chord_us / 100, chord_us / 110],
            "empty_serve_s": [0.1, 0.1],
        },
        "chain": {
            "chains": 2,
            "steps": 10,
            "gap_ms": pct,
            "first_start_ms": pct,
            "gaps": [gap_p50_ms] * 18,
        },
    }


def test_the_report_passes_targets_met() -> None:
    table = report(_results(chord_jobs_s=51_000, chord_us=108, gap_p50_ms=1.5))
    assert table.count("PASS") == 3 and "FAIL" not in table
    assert "x1.029 of the medians" in table  # 108 us against the median 105 us


def test_the_report_fails_targets_missed() -> None:
    table = report(_results(chord_jobs_s=49_000, chord_us=120, gap_p50_ms=2.5))
    assert table.count("**FAIL**") == 3 and "PASS" not in table
