"""Dashboard benchmark (issue 16): each page's server time with many jobs in the store.

    python -m bench.dashboard_bench [--jobs N] [--url postgresql://...] [--reps N]

Seeds a fresh store (LMDB in a temporary directory, or the PostgreSQL URL given) with
``--jobs`` jobs (default 1,000,000): 1,000 dead ones of one task (the oldest), 100 in
a named queue, the rest ready, half each of two tasks. Then times each page through
the app in this process (Starlette's TestClient: the server's time, no network) and
prints the median and max of ``--reps`` requests against the 200 ms target, and the
time to page through every job by cursor (``--walk``, LMDB only: it reads them all).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from mpqueue import Queue
from mpqueue.dashboard.app import create_app
from mpqueue.records import ErrorInfo, JobRecord, JobState, Outcome, new_job_ids, now_ms
from mpqueue.serializer import dump_payload

TARGET_MS = 200.0
TASKS = ("bench.alpha", "bench.beta")
DEAD_TASK = "bench.dead"
BATCH = 50_000


def records(n: int, name: str, queue: str = "default") -> list[JobRecord]:
    now = now_ms()
    payload = dump_payload((1, "x"), {})
    return [
        JobRecord(
            id=job_id,
            name=name,
            state=JobState.READY,
            payload=payload,
            run_at_ms=now,
            created_at_ms=now,
            queue=queue,
            preview="1, 'x'",
        )
        for job_id in new_job_ids(n)
    ]


def seed(q: Queue, jobs: int) -> str:
    """Fill the store; returns a dead job's id."""
    store = q.store
    store.add(records(1000, DEAD_TASK))
    claimed = store.claim("bench-server", 1000, now_ms())
    error = ErrorInfo("RuntimeError", "boom", "Traceback ...", attempt=1)
    store.finish(
        [Outcome.failed(r.id, "bench-server", error, retryable=False) for r in claimed], now_ms()
    )
    store.add(records(100, TASKS[0], queue="rare"))
    left = jobs - 1100
    done = 0
    while done < left:
        size = min(BATCH, left - done)
        store.add(records(size, TASKS[(done // BATCH) % 2]))
        done += size
        print(f"  seeded {done + 1100:,} jobs", file=sys.stderr, end="\r", flush=True)
    print(file=sys.stderr)
    return claimed[0].id


def timed_get(client: Any, path: str, reps: int) -> tuple[float, float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        reply = client.get(path)
        samples.append((time.perf_counter() - t0) * 1000)
        assert reply.status_code == 200, (path, reply.status_code, reply.text[:200])
    return statistics.median(samples), max(samples)


def walk(store: Any) -> tuple[int, float]:
    """Every job, page after page (50 a page, as the jobs page shows them)."""
    t0 = time.perf_counter()
    seen, before = 0, None
    while True:
        page = store.browse(before=before, limit=50)
        seen += len(page.jobs)
        if page.next is None:
            return seen, time.perf_counter() - t0
        before = page.next


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--url", default=None, help="a PostgreSQL URL (default: LMDB)")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--walk", action="store_true", help="also page through every job")
    args = parser.parse_args()
    from starlette.testclient import TestClient

    tmp = None if args.url else tempfile.mkdtemp(prefix="mpq-dash-bench-")
    location = args.url or f"{tmp}/store"
    try:
        with Queue(location) as q:
            t0 = time.perf_counter()
            dead = seed(q, args.jobs)
            print(f"seeded {args.jobs:,} jobs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
            # a cursor halfway through the store: the page after it costs what the first does
            middle = q.store.browse(state=JobState.READY, name=TASKS[0], limit=1).jobs[0].id
            client = TestClient(create_app(q.store), base_url="http://127.0.0.1:8080")
            pages = [
                "/",
                "/?fragment=1",
                "/jobs",
                "/jobs?state=ready",
                "/jobs?state=dead",
                f"/jobs?task={TASKS[0]}",
                "/jobs?queue=rare",
                f"/jobs?before={middle}",
                f"/jobs/{dead}",
                "/dead",
                f"/dead?task={DEAD_TASK}",
                "/servers",
                "/periodic",
            ]
            backend = "PostgreSQL" if args.url else "LMDB"
            print(f"| page ({backend}, {args.jobs:,} jobs) | median ms | max ms | target | ok |")
            print("|---|---|---|---|---|")
            for path in pages:
                median, worst = timed_get(client, path, args.reps)
                verdict = "PASS" if median <= TARGET_MS else "FAIL"
                cells = [f"`{path[:60]}`", f"{median:.1f}", f"{worst:.1f}", "<= 200", verdict]
                print("| " + " | ".join(cells) + " |")
            if args.walk:
                seen, seconds = walk(q.store)
                print(f"walked {seen:,} jobs by cursor in {seconds:.1f} s ({seen / 50:,.0f} pages)")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
