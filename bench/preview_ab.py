"""A/B of the enqueue path (issue 16, previews): ``python -m bench.preview_ab TREE KIND REPS``.

TREE: a source tree of mpqueue to import (e.g. ``git archive beed2c1 | tar -x -C /tmp/base``);
KIND: memory, lmdb or postgres (the URL in /tmp/pgurl-dash, a schema per rep). Prints the
median us per job of ``task.delay`` one by one and of ``task.map`` of 20,000 calls.
"""

import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, sys.argv[1])
from mpqueue import Queue


def one(location, n, m):
    with Queue(location) as q:
        t = q.task(name="bench.add")(lambda a, b: a + b)
        t0 = time.perf_counter()
        for i in range(n):
            t.delay(i, "some text")
        single = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        t.map([(i, "x") for i in range(m)])
        batch = (time.perf_counter() - t0) / m * 1e6
    return single, batch


kind = sys.argv[2]
out = []
for rep in range(int(sys.argv[3])):
    if kind == "memory":
        out.append(one(f"memory://b{rep}", 20000, 20000))
    elif kind == "lmdb":
        d = tempfile.mkdtemp()
        out.append(one(d + "/s", 1000, 20000))
        shutil.rmtree(d)
    else:
        import psycopg

        base = open("/tmp/pgurl-dash").read().strip()
        c = psycopg.connect(base, autocommit=True)
        c.execute(f"DROP SCHEMA IF EXISTS ab{rep} CASCADE")
        c.execute(f"CREATE SCHEMA ab{rep}")
        out.append(one(f"{base}?options=-csearch_path%3Dab{rep}", 1000, 20000))
        c.execute(f"DROP SCHEMA ab{rep} CASCADE")
print(
    kind,
    "delay us/job",
    round(statistics.median(s for s, _ in out), 1),
    "map us/job",
    round(statistics.median(b for _, b in out), 1),
)
