"""Sample CPU-bound work for ``mpqueue demo``: count primes in a range by trial
division (pure Python, so each job keeps one core busy for tens of milliseconds)."""

from __future__ import annotations

DEMO_RANGE = 10_000  # numbers per job: tens of milliseconds of pure-Python work


def count_primes(start: int, stop: int) -> int:
    """How many primes lie in [start, stop)."""
    found = 0
    for n in range(max(start, 2), stop):
        if n % 2 == 0:
            found += n == 2
            continue
        divisor = 3
        while divisor * divisor <= n:
            if n % divisor == 0:
                break
            divisor += 2
        else:
            found += 1
    return found


def job_ranges(jobs: int, width: int = DEMO_RANGE) -> list[tuple[int, int]]:
    return [(i * width, (i + 1) * width) for i in range(jobs)]
