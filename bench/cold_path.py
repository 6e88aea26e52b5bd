"""What the Python of a one-by-one enqueue costs between two fsyncs, against warm.

    python -m bench.cold_path [--reps N] [-n N]

Per job: ``task.delay`` minus the raw LMDB floor of the same three puts (store_bench
row 1b: keys and record bytes built before the clock starts), once with durable
commits (``sync=True``: the process waits on an fsync between two enqueues) and once
without (``sync=False``: the same code runs back to back, warm). The two differences
are the same Python; their ratio is how much slower it runs when every enqueue starts
after an fsync wait. Repetitions alternate, and the medians are reported.
"""

from __future__ import annotations

import argparse
import statistics

from bench.store_bench import api_single_rate, layout_floor_rate


def python_us(n: int, sync: bool) -> float:
    """Microseconds per job that task.delay spends beyond the raw three-put floor."""
    return 1e6 / api_single_rate(n, sync) - 1e6 / layout_floor_rate(n, sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("-n", type=int, default=3000, help="jobs per measurement")
    args = parser.parse_args()
    cold, warm = [], []
    for rep in range(args.reps):
        for sync in (True, False) if rep % 2 == 0 else (False, True):
            (cold if sync else warm).append(python_us(args.n, sync))
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"task.delay beyond the raw three puts, per job (median of {args.reps}):")
    print(f"  warm (sync=False): {w:.1f} us   ({', '.join(f'{v:.1f}' for v in warm)})")
    print(
        f"  after an fsync wait (sync=True): {c:.1f} us   ({', '.join(f'{v:.1f}' for v in cold)})"
    )
    print(f"  ratio: {c / w:.1f}x")


if __name__ == "__main__":
    main()
