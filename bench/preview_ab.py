"""A/B of the enqueue path (issue 16, previews).

    python -m bench.preview_ab TREE KIND REPS

TREE: a source tree of mpqueue to import (the checkout, or an older commit unpacked with
``git archive beed2c1 | tar -x -C /tmp/base``); KIND: memory, lmdb or postgres (the URL
in $MPQUEUE_TEST_PG_URL, a fresh schema per repetition). Prints the median us per job of
``task.delay`` one by one and of ``task.map`` of 20,000 calls.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time


def one(location: str, n: int, m: int) -> tuple[float, float]:
    from mpqueue import Queue

    with Queue(location) as q:
        task = q.task(name="bench.add")(lambda a, b: a + b)
        t0 = time.perf_counter()
        for i in range(n):
            task.delay(i, "some text")
        single = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        task.map([(i, "x") for i in range(m)])
        batch = (time.perf_counter() - t0) / m * 1e6
    return single, batch


def postgres(rep: int) -> tuple[float, float]:
    import psycopg

    base = os.environ["MPQUEUE_TEST_PG_URL"]
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS ab{rep} CASCADE")
        conn.execute(f"CREATE SCHEMA ab{rep}")
        try:
            return one(f"{base}?options=-csearch_path%3Dab{rep}", 1000, 20000)
        finally:
            conn.execute(f"DROP SCHEMA ab{rep} CASCADE")


def main() -> None:
    tree, kind, reps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.path.insert(0, tree)
    out = []
    for rep in range(reps):
        if kind == "memory":
            out.append(one(f"memory://b{rep}", 20000, 20000))
        elif kind == "lmdb":
            where = tempfile.mkdtemp()
            out.append(one(where + "/s", 1000, 20000))
            shutil.rmtree(where)
        else:
            out.append(postgres(rep))
    single = statistics.median(s for s, _ in out)
    batch = statistics.median(b for _, b in out)
    print(f"{kind} delay us/job {single:.1f} map us/job {batch:.1f}")


if __name__ == "__main__":
    main()
