"""Where an idle enqueue's latency goes, and what each LMDB database it touches costs.

    python -m bench.enqueue_split [--samples N]

1. An idle ``serve`` (2 workers) that hands each job to a child; the producer's
   ``task.delay()`` is split by wrapping its LMDB write transaction: Python before the
   transaction, the transaction body, the commit, the rest of the call; plus the call to
   the job's start. Medians of N samples, 5 ms idle between them (as the latency row).
2. Raw LMDB: one put into each of 1..6 named databases (2,000 entries each), one durable
   commit, 5 ms idle before each; the rounds alternate the database counts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import lmdb

from mpqueue import Queue

from .serve_bench import Server, temp_store
from .store_bench import tempdir


class _TimedTxn:
    """Wraps one write transaction and records when its body ends and its commit ends."""

    def __init__(self, txn: Any, marks: dict[str, float]):
        self.txn, self.marks = txn, marks

    def __enter__(self) -> Any:
        self.marks["begin"] = time.perf_counter()
        return self.txn.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        self.marks["body_end"] = time.perf_counter()
        result = self.txn.__exit__(*exc)
        self.marks["commit_end"] = time.perf_counter()
        return result


class _TimedEnv:
    def __init__(self, env: Any, marks: dict[str, float]):
        self.env, self.marks = env, marks

    def __getattr__(self, name: str) -> Any:
        return getattr(self.env, name)

    def begin(self, write: bool = False, **kwargs: Any) -> Any:
        txn = self.env.begin(write=write, **kwargs)
        return _TimedTxn(txn, self.marks) if write else txn


def split_enqueue(samples: int) -> dict[str, float]:
    """Medians (ms) of each part of an idle, handed-off ``task.delay()``."""
    marks: dict[str, float] = {}
    parts: dict[str, list[float]] = {
        k: []
        for k in (
            "before txn",
            "txn body",
            "commit",
            "after commit",
            "whole call",
            "call to job start",
        )
    }
    handed = 0
    with temp_store() as path, Server(path, 2), Queue(path) as queue:
        shared = queue.store.env.shared  # type: ignore[attr-defined]
        shared.env = _TimedEnv(shared.env, marks)
        task = queue.task_by_name("bench.jobs.stamp")
        for i in range(samples):
            marks.clear()
            t0, wall0 = time.perf_counter(), time.time()
            job = task.delay(i)
            t1 = time.perf_counter()
            handed += job.state == "processing"
            started = job.result(timeout=30)
            parts["before txn"].append(marks["begin"] - t0)
            parts["txn body"].append(marks["body_end"] - marks["begin"])
            parts["commit"].append(marks["commit_end"] - marks["body_end"])
            parts["after commit"].append(t1 - marks["commit_end"])
            parts["whole call"].append(t1 - t0)
            parts["call to job start"].append(started - wall0)
            time.sleep(0.005)
    out = {k: statistics.median(v) * 1000 for k, v in parts.items()}
    out["handed off"] = handed
    return out


def commit_per_database(samples: int) -> dict[int, float]:
    """Median ms of one durable commit that puts one entry into each of n databases."""
    counts = (1, 2, 3, 4, 5, 6)
    times: dict[int, list[float]] = {n: [] for n in counts}
    with tempdir() as path:
        env = lmdb.open(path, max_dbs=8, map_size=1 << 30)
        try:
            dbs = [env.open_db(f"db{i}".encode()) for i in range(len(counts))]
            with env.begin(write=True) as txn:
                for db in dbs:
                    for _ in range(2000):
                        txn.put(os.urandom(16), os.urandom(200), db=db)
            value = os.urandom(200)
            for r in range(samples):
                for n in counts if r % 2 == 0 else counts[::-1]:
                    time.sleep(0.005)
                    t0 = time.perf_counter()
                    with env.begin(write=True) as txn:
                        for db in dbs[:n]:
                            txn.put(os.urandom(16), value, db=db)
                    times[n].append((time.perf_counter() - t0) * 1000)
        finally:
            env.close()
    return {n: statistics.median(v) for n, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()
    split = split_enqueue(args.samples)
    print(f"idle task.delay(), handed off {split.pop('handed off'):.0f} of {args.samples}:")
    for part, ms in split.items():
        print(f"  {part:18} p50 {ms:.3f} ms")
    print("one durable commit after 5 ms idle, one put into each of n databases:")
    for n, ms in commit_per_database(max(50, args.samples // 3)).items():
        print(f"  n={n}: p50 {ms:.3f} ms")


if __name__ == "__main__":
    main()
