"""The benchmark harness (issue 4): ``python -m bench [--scenario NAME] [--quick]
[--out DIR]``.

Scenarios (each runs legacy and optimized mode side by side, on fresh stores):
  seed        the published before/after table, reproduced and measured
  scaling     poll and list cost as the queue grows (plot)
  throughput  no-op and 10 ms jobs, 1..cores workers, vs ProcessPoolExecutor and Huey (plot)
  latency     enqueue-to-start on an idle runner, p50/p95/p99
  recovery    SIGKILL of a child or a coordinator until the job runs again
Per scenario: a Markdown table on stdout and in RESULTS.md (its section only is
replaced), the raw numbers in DIR/NAME.json, plots in DIR/NAME.png.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time
from types import ModuleType
from typing import Any

from bench import report
from bench.common import Progress

HERE = os.path.dirname(os.path.abspath(__file__))
# Each scenario's module is imported only when it runs: the peers some of them measure
# against (Huey) come with the bench extra, which seed, scaling and recovery do not need.
SCENARIOS: dict[str, str] = {
    "seed": "the published before/after table, legacy vs optimized",
    "scaling": "poll and list cost as the queue grows",
    "throughput": "jobs/s against ProcessPoolExecutor and Huey",
    "latency": "enqueue-to-start on an idle runner",
    "recovery": "SIGKILL until the job runs again",
}
PLOTS = {"scaling", "throughput"}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="The mpqueue benchmark harness (issue 4).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "all"],
        help="scenario to run (repeatable; default: all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and fewer repetitions (all scenarios < 2 min)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="directory for JSON and PNG files [default: bench/results; "
        "with --quick bench/out/quick, which git ignores]",
    )
    parser.add_argument(
        "--results",
        default=None,
        metavar="FILE",
        help="Markdown file whose scenario sections are rewritten "
        "[default: bench/RESULTS.md; with --quick DIR/RESULTS.md, so a "
        "quick run never replaces a full one]",
    )
    args = parser.parse_args(argv)
    names = args.scenario or ["all"]
    args.names = list(SCENARIOS) if "all" in names else list(dict.fromkeys(names))
    args.out = args.out or os.path.join(HERE, "out/quick" if args.quick else "results")
    if args.results is None:
        args.results = (
            os.path.join(args.out, "RESULTS.md") if args.quick else os.path.join(HERE, "RESULTS.md")
        )
    return args


def run_one(
    name: str, cfg: dict[str, Any], progress: Progress, args: argparse.Namespace, command: str
) -> str:
    """Run one scenario and write its JSON, plot and RESULTS.md section; returns the
    Markdown body."""
    module, title = scenario_module(name), SCENARIOS[name]
    ctx = report.context(command)
    started = time.perf_counter()
    res = module.run(cfg, progress)
    ctx["wall_seconds"] = time.perf_counter() - started
    ctx["loadavg_end"] = list(os.getloadavg())
    ctx["mode"] = "quick" if args.quick else "full"
    body = module.report(res)
    if name in PLOTS:
        from bench import plots  # matplotlib only when a plot is wanted

        png = getattr(plots, name)(res, args.out)
        res["plot"] = png
    report.write_json(os.path.join(args.out, f"{name}.json"), {"context": ctx, **res})
    heading = f"{title} ({'quick' if args.quick else 'full'} mode)"
    report.write_section(args.results, name, report.section(name, heading, ctx, body))
    return body


def scenario_module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.{name}")


def load_scenarios(names: list[str]) -> str | None:
    """Import the scenarios to run; a one-line reason if one cannot be."""
    for name in names:
        try:
            scenario_module(name)
        except ModuleNotFoundError as exc:
            return f"scenario {name!r} needs the bench extra (pip install -e '.[bench]'): {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    missing = load_scenarios(args.names)
    if missing is not None:
        print(f"Error: {missing}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    os.makedirs(args.out, exist_ok=True)
    command = " ".join(["python -m bench", *(sys.argv[1:] if argv is None else argv)])
    modules = {n: scenario_module(n) for n in args.names}
    cfgs = {n: dict(modules[n].QUICK if args.quick else modules[n].FULL) for n in args.names}
    progress = Progress(sum(modules[n].steps(cfgs[n]) for n in args.names))
    bodies = []
    for name in args.names:
        bodies.append((name, run_one(name, cfgs[name], progress, args, command)))
    progress.close()
    for name, body in bodies:
        print(f"\n## {name}\n\n{body}")
    print(f"\nwrote {args.results} and {args.out}/*.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
