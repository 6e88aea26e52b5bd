"""The benchmark harness's ``seed`` scenario, quick mode, counted rows only: the
published before/after operation counts, which are deterministic. Times are measured
but not asserted (the machine is shared)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench import report, seed
from bench.common import NullProgress

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def counts() -> dict[str, Any]:
    cfg = dict(seed.QUICK, reps=2)
    return {"config": cfg, **seed.run_counts(cfg, NullProgress())}


def test_optimized_list_has_no_per_job_reads(counts: dict[str, Any]) -> None:
    ops = counts["list"]["optimized"]["ops"]
    assert ops["gets"] == 0
    # one step per listed job, plus two seeks for the one task name (its first and last id)
    assert ops["cursor_steps"] == 1003
    assert counts["list"]["optimized"]["queries"] == 1


def test_legacy_list_is_one_plus_n(counts: dict[str, Any]) -> None:
    ops = counts["list"]["legacy"]["ops"]
    assert ops["gets"] == 1000
    assert counts["list"]["legacy"]["queries"] == 1001


@pytest.mark.parametrize("limit", seed.QUICK["poll_limits"])
def test_optimized_poll_touches_only_the_ready_jobs(counts: dict[str, Any], limit: int) -> None:
    row = counts["poll"]["optimized"][str(limit)]
    assert row["claimed"] == min(limit, 10)
    assert 10 <= row["ops"]["reads"] <= 25
    assert row["ops_all_equal"]


def test_legacy_poll_scans_and_reads_every_job(counts: dict[str, Any]) -> None:
    for row in counts["poll"]["legacy"].values():
        assert row["claimed"] == 1  # one job per poll, whatever the limit
        assert row["ops"]["cursor_steps"] >= 1000 and row["ops"]["gets"] >= 1000
        assert 1900 <= row["ops"]["reads"] <= 2100
        assert row["ops_all_equal"]


def test_counted_verdicts_pass_and_report_renders(counts: dict[str, Any]) -> None:
    v = seed.verdicts(counts)
    assert v["list_legacy"] and v["list_optimized"]
    assert v["poll_legacy"] and v["poll_optimized"]
    assert v["fetch_legacy"] is None  # not measured here
    assert "listing 1,000 jobs" in seed.report(counts)


def test_results_section_is_replaced_and_others_kept(tmp_path: Path) -> None:
    path = str(tmp_path / "RESULTS.md")
    ctx = report.context("python -m bench --scenario seed --quick")
    report.write_section(path, "seed", report.section("seed", "t", ctx, "first"))
    report.write_section(path, "scaling", report.section("scaling", "t", ctx, "other"))
    report.write_section(path, "seed", report.section("seed", "t", ctx, "second"))
    text = Path(path).read_text()
    assert "second" in text and "first" not in text and "other" in text
    assert text.count("<!-- bench:seed:start -->") == 1


def test_a_scenario_needing_the_bench_extra_says_so_in_one_line(tmp_path) -> None:
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("huey") is not None:
        pytest.skip("the bench extra is installed here: the scenario would just run")
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--scenario", "latency", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: scenario 'latency' needs the bench extra")
    assert result.stderr.count("\n") == 1
