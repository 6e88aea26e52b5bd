"""CPU time per job of one ``mpqueue serve --until-empty --workers 2`` run over 20,000
queued no-op jobs (coordinator and children together, from ``getrusage``): a steadier
view of hot-path cost than wall-clock throughput on a shared machine.

    PYTHONPATH=TREE python -m bench.cpu_per_job [--jobs N] [--label TEXT] [-- SERVE_ARGS]

Alternate two trees (``PYTHONPATH`` of each) run after run and compare the figures, or
one tree with and without an option (``-- --metrics-file /tmp/m.prom`` turns a server's
metrics on without an HTTP endpoint).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

from mpqueue import Queue

NOOP = "bench.jobs.noop"
BATCH = 5_000


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(jobs: int, serve_args: tuple[str, ...] = ()) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of serving ``jobs`` queued no-op jobs."""
    path = tempfile.mkdtemp(prefix="mpqueue-cpu-")
    with Queue(path) as queue:
        noop = queue.task_by_name(NOOP)
        for start in range(0, jobs, BATCH):
            noop.map([(i,) for i in range(start, min(jobs, start + BATCH))])
    command = [sys.executable, "-m", "mpqueue", "serve", "--path", path, "--until-empty"]
    cpu, wall = _cpu_s(), time.perf_counter()
    subprocess.run(
        [*command, "--workers", "2", *serve_args], check=True, env=os.environ, capture_output=True
    )
    return time.perf_counter() - wall, _cpu_s() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="no-op jobs [20000]")
    parser.add_argument("--label", default="", help="printed before the figures")
    parser.add_argument("serve_args", nargs="*", help="after --: more `mpqueue serve` options")
    args = parser.parse_args()
    wall, cpu = measure(args.jobs, tuple(args.serve_args))
    print(f"{args.label} wall {wall:.2f} s cpu {cpu:.2f} s {cpu / args.jobs * 1e6:.1f} us/job")


if __name__ == "__main__":
    main()
