"""Store benchmark (issue 2): throughput and op counts of the LMDB store.

    python -m bench.store_bench [--quick] [--out FILE.json] [--reps N]

Every measurement runs on a fresh store in a temporary directory with ``sync=True``
(the durable default) and is repeated; the table reports the median and min/max of
the repetitions, with the target and PASS/FAIL beside each row. ``--out`` writes every
raw sample as JSON. ``--quick`` uses smaller sizes and finishes in well under 60 s.

Rows:
 1. bare LMDB baseline: 1 put + commit per txn, same env settings as mpqueue
 1b. the same three puts an enqueue makes, keys and record bytes prebuilt (the layout's floor)
 2. one-by-one durable enqueue through the API (``task.delay``), and its ratio to (1)
 3. batched enqueue through the API (``task.map``) and ``store.add`` (pre-built records)
 4. batched claim (``store.claim(w, 32|256, now)``) until every ready job is taken
 5. list 10,000 jobs, optimized vs legacy: time and op counts
 6. one poll (``promote_due`` + ``claim(w, 32)``) with 10 ready and many scheduled jobs
 7. ``list --limit 10`` on 10,000 and 1,000,000 jobs (issue 10): the call's wall time and
    the peak RSS of a fresh process that opens the store and lists, against the same
    process opening the store without listing

``--only list_limit,poll`` runs just those rows (keys: single, map, claim, list, poll,
list_limit).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lmdb

from mpqueue import Queue
from mpqueue.location import DEFAULT_MAP_SIZE
from mpqueue.records import JobRecord, JobState, new_job_ids, now_ms
from mpqueue.serializer import dump_payload
from mpqueue.serve.settings import DEFAULT_BATCH
from mpqueue.store.codec import encode_record
from mpqueue.store.lmdb import keys
from mpqueue.store.lmdb.env import MAX_READERS
from mpqueue.task import TaskOptions

HOUR_MS = 3_600_000
TASK_NAME = "bench.store_bench.noop"


def noop(x: Any) -> Any:
    """The benchmark task. Defined at module level so it is stored by name (importable),
    as a real task module's functions would be, not pickled by value."""
    return x


# ---- configuration ----------------------------------------------------------------------

FULL = dict(
    reps=5,
    single_n=3000,
    map_total=100_000,
    map_batches=(1_000, 10_000),
    claim_total=100_000,
    claim_limits=(32, 256),
    list_n=10_000,
    poll_sizes=(1_000, 10_000, 100_000, 1_000_000),
    legacy_poll_max=100_000,
    poll_reps=5,
    legacy_poll_reps=3,
    limit_sizes=(10_000, 1_000_000),
)
QUICK = dict(
    reps=3,
    single_n=2000,
    map_total=20_000,
    map_batches=(1_000, 10_000),
    claim_total=20_000,
    claim_limits=(32, 256),
    list_n=10_000,
    poll_sizes=(1_000, 10_000, 100_000),
    legacy_poll_max=10_000,
    poll_reps=3,
    legacy_poll_reps=2,
    limit_sizes=(10_000, 100_000),
)

TARGET_SINGLE_RATIO = 0.80
TARGET_MAP_RATE = 100_000
TARGET_CLAIM_RATE = 50_000
TARGET_LIMITED_LIST_S = 0.050
LIST_LIMIT = 10
RSS_SLACK_KB = 8 * 1024  # "independent of the store's size": within 8 MB at any size


# ---- helpers ------------------------------------------------------------------------------


@contextmanager
def tempdir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="mpq-bench-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def fresh_queue(mode: str = "optimized", sync: bool = True) -> Iterator[tuple[Queue, Any]]:
    """A Queue on a new directory, store already open (opening is not timed), and the
    benchmark task registered on it."""
    task_fn = importlib.import_module("bench.store_bench").noop  # not __main__.noop
    with tempdir() as path:
        q = Queue(os.path.join(path, "store"), mode=mode, sync=sync)
        task = q.task(task_fn, name=TASK_NAME)
        assert not task.by_value
        _ = q.store  # open + migrate now, outside any timing
        try:
            yield q, task
        finally:
            q.close()


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": samples,
    }


def build_records(
    q: Queue, n: int, *, run_at_ms: int | None = None, created_ms: int | None = None
) -> list[JobRecord]:
    """Ready (or scheduled, with ``run_at_ms`` in the future) records, as Queue builds."""
    now = now_ms() if created_ms is None else created_ms
    opts = TaskOptions()
    payloads = [dump_payload((i,), {}) for i in range(min(n, 1000))]
    return [
        q._record(TASK_NAME, payloads[i % len(payloads)], opts, run_at_ms=run_at_ms, created_ms=now)
        for i in range(n)
    ]


def add_in_batches(q: Queue, records: list[JobRecord], batch: int = 50_000) -> None:
    for start in range(0, len(records), batch):
        q.store.add(records[start : start + batch])


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- 1 + 2: one commit per job ------------------------------------------------------------


@contextmanager
def raw_env(path: str, sync: bool = True) -> Iterator[lmdb.Environment]:
    """A raw LMDB environment opened with the settings mpqueue's ``_open`` uses (durable
    commits unless ``sync`` is False): the baseline the benchmarks compare against."""
    env = lmdb.open(
        path,
        map_size=DEFAULT_MAP_SIZE,
        max_dbs=len(keys.ALL_DBS) + 2,
        max_readers=MAX_READERS,
        sync=sync,
        metasync=sync,
        writemap=False,
        map_async=False,
        max_spare_txns=0,
        subdir=True,
        lock=True,
    )
    try:
        yield env
    finally:
        env.close()


def bare_lmdb_rate(n: int) -> float:
    """1 put + commit per txn on a raw env opened as mpqueue's ``_open`` does."""
    with tempdir() as path, raw_env(path) as env:
        db = env.open_db(keys.DB_JOBS, create=True)
        value = os.urandom(200)
        keys_ = [os.urandom(16).hex().encode() for _ in range(n)]
        t0 = time.perf_counter()
        for k in keys_:
            with env.begin(write=True) as txn:
                txn.put(k, value, db=db)
        return n / (time.perf_counter() - t0)


def layout_floor_rate(n: int, sync: bool = True) -> float:
    """The enqueue's three puts (jobs, by_name, ready) + commit per txn, keys and record
    bytes built before the clock starts: what the index layout alone costs, with no
    mpqueue code in the loop. The gap between this and ``task.delay`` is Python."""
    with tempdir() as path, raw_env(path, sync) as env:
        dbs = {name: env.open_db(name, create=True) for name in keys.ALL_DBS}
        now = now_ms()
        writes = []
        for seq, job_id in enumerate(new_job_ids(n)):
            rec = JobRecord(
                id=job_id,
                name=TASK_NAME,
                state=JobState.READY,
                payload=dump_payload((seq,), {}),
                seq=seq,
                run_at_ms=now,
                created_at_ms=now,
            )
            raw = encode_record(rec)
            job_key, name_key, queue_db, queue_key = keys.enqueue_keys(
                TASK_NAME, job_id, 0, seq, None
            )
            writes.append(
                (
                    (job_key, raw, dbs[keys.DB_JOBS]),
                    (name_key, raw, dbs[keys.DB_BY_NAME]),
                    (queue_key, b"", dbs[queue_db]),
                )
            )
        t0 = time.perf_counter()
        for puts in writes:
            with env.begin(write=True) as txn:
                for key, value, db in puts:
                    txn.put(key, value, db=db)
        return n / (time.perf_counter() - t0)


def delay_rate(queue: Queue, task: Any, n: int) -> float:
    """Jobs/s of ``n`` one-by-one ``task.delay`` calls (one durable commit each)."""
    t0 = time.perf_counter()
    for i in range(n):
        task.delay(i)
    elapsed = time.perf_counter() - t0
    assert queue.stats()["ready"] == n
    return n / elapsed


def api_single_rate(n: int, sync: bool = True) -> float:
    with fresh_queue(sync=sync) as (q, task):
        return delay_rate(q, task, n)


def bench_single(cfg: dict[str, Any]) -> dict[str, Any]:
    n = cfg["single_n"]
    bare, floor, api, ratio, floor_ratio = [], [], [], [], []
    for rep in range(cfg["reps"]):  # interleaved, so drift in disk speed hits all alike
        b = bare_lmdb_rate(n)
        f = layout_floor_rate(n)
        a = api_single_rate(n)
        bare.append(b)
        floor.append(f)
        api.append(a)
        ratio.append(a / b)
        floor_ratio.append(f / b)
        log(
            f"  single rep {rep}: bare {b:,.0f}/s  three puts {f:,.0f}/s  api {a:,.0f}/s  "
            f"ratio {a / b:.2f} (three puts {f / b:.2f})"
        )
    return {
        "n": n,
        "bare": summary(bare),
        "floor": summary(floor),
        "api": summary(api),
        "ratio": summary(ratio),
        "floor_ratio": summary(floor_ratio),
    }


# ---- 3: batched enqueue ---------------------------------------------------------------------


def bench_map(cfg: dict[str, Any]) -> dict[str, Any]:
    total = cfg["map_total"]
    out: dict[str, Any] = {"total": total}
    for batch in cfg["map_batches"]:
        api, store = [], []
        args = [(i,) for i in range(batch)]
        for rep in range(cfg["reps"]):
            with fresh_queue() as (q, task):
                t0 = time.perf_counter()
                for _ in range(total // batch):
                    task.map(args)
                api.append(total / (time.perf_counter() - t0))
                assert q.stats()["ready"] == total
            with fresh_queue() as (q, task):
                batches = [build_records(q, batch) for _ in range(total // batch)]
                t0 = time.perf_counter()
                for recs in batches:
                    q.store.add(recs)
                store.append(total / (time.perf_counter() - t0))
            log(
                f"  map batch {batch} rep {rep}: api {api[-1]:,.0f}/s  store.add {store[-1]:,.0f}/s"
            )
        out[str(batch)] = {"api": summary(api), "store_add": summary(store)}
    return out


# ---- 4: batched claim -------------------------------------------------------------------------


def bench_claim(cfg: dict[str, Any]) -> dict[str, Any]:
    total = cfg["claim_total"]
    out: dict[str, Any] = {"total": total}
    for limit in cfg["claim_limits"]:
        rates, txns = [], []
        for rep in range(cfg["reps"]):
            with fresh_queue() as (q, _):
                add_in_batches(q, build_records(q, total), 10_000)
                store, now = q.store, now_ms()
                claimed = polls = 0
                t0 = time.perf_counter()
                while True:
                    got = store.claim("bench-worker", limit, now)
                    if not got:
                        break
                    claimed += len(got)
                    polls += 1
                elapsed = time.perf_counter() - t0
                assert claimed == total, (claimed, total)
                rates.append(total / elapsed)
                txns.append(polls)
            log(f"  claim limit {limit} rep {rep}: {rates[-1]:,.0f} jobs/s")
        out[str(limit)] = {"rate": summary(rates), "claim_txns": txns[0]}
    return out


# ---- 5: list ------------------------------------------------------------------------------------


def bench_list(cfg: dict[str, Any]) -> dict[str, Any]:
    n = cfg["list_n"]
    out: dict[str, Any] = {"n": n}
    for mode in ("optimized", "legacy"):
        times = []
        ops: dict[str, int] = {}
        with fresh_queue(mode) as (q, _):
            add_in_batches(q, build_records(q, n), 10_000)
            for _rep in range(cfg["reps"]):
                before = q.store.counter.snapshot()
                elapsed, jobs = timed(q.list)
                ops = (q.store.counter - before).as_dict()
                assert len(jobs) == n
                times.append(elapsed)
        log(f"  list {mode}: {statistics.median(times) * 1000:.1f} ms  ops {ops}")
        out[mode] = {"seconds": summary(times), "ops": ops}
    return out


# ---- 6: poll with many scheduled jobs --------------------------------------------------------


def poll_once(q: Queue, add: int) -> tuple[float, dict[str, int], int]:
    """Add ``add`` ready jobs (not timed), then time one poll: promote + claim(32)."""
    store = q.store
    store.add(build_records(q, add))
    now = now_ms()
    before = store.counter.snapshot()
    t0 = time.perf_counter()
    store.promote_due(now)
    got = store.claim("bench-worker", 32, now)
    elapsed = time.perf_counter() - t0
    return elapsed, (store.counter - before).as_dict(), len(got)


def bench_poll(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in cfg["poll_sizes"]:
        row: dict[str, Any] = {}
        for mode in ("optimized", "legacy"):
            if mode == "legacy" and size > cfg["legacy_poll_max"]:
                continue
            reps = cfg["poll_reps"] if mode == "optimized" else cfg["legacy_poll_reps"]
            with fresh_queue(mode) as (q, _):
                now = now_ms()
                build_t0 = time.perf_counter()
                for start in range(0, size, 100_000):
                    recs = build_records(
                        q, min(100_000, size - start), run_at_ms=now + HOUR_MS, created_ms=now
                    )
                    add_in_batches(q, recs, 50_000)
                    del recs
                build_s = time.perf_counter() - build_t0
                gc.collect()
                times, ops_list, claimed = [], [], []
                waiting = 0  # ready jobs left by the previous poll (legacy claims 1)
                for _ in range(reps):
                    # every poll starts from exactly 10 ready + `size` scheduled
                    elapsed, ops, got = poll_once(q, 10 - waiting)
                    waiting = 10 - got
                    times.append(elapsed)
                    ops_list.append(ops)
                    claimed.append(got)
                assert q.stats()["scheduled" if mode == "optimized" else "total"] >= size
            row[mode] = {
                "seconds": summary(times),
                "ops": ops_list[-1],
                "ops_all_equal": all(o == ops_list[0] for o in ops_list),
                "claimed_per_poll": claimed[-1],
                "build_seconds": build_s,
            }
            log(
                f"  poll {mode} scheduled={size:,}: {statistics.median(times) * 1000:.2f} ms"
                f"  ops {ops_list[-1]}  claimed {claimed[-1]}  (build {build_s:.1f} s)"
            )
        out[str(size)] = row
    return out


# ---- 7: a limited list on a big store, in its own process ----------------------------------

# Run in a fresh interpreter, so its peak RSS is this listing's and nothing else's. It
# prints the wall time of each ``list(limit=...)`` call (the first is on a cold cache)
# and its peak RSS. That is VmHWM, the high-water mark of this process image: ru_maxrss
# would also count the benchmark's own pages, which the child shares between fork and
# exec.
_LIST_CHILD = """
import json, resource, sys, time
from mpqueue import Queue
path, limit, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Queue(path) as q:
    q.store
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jobs = q.list(limit=limit) if limit >= 0 else []
        times.append(time.perf_counter() - t0)
with open("/proc/self/status") as fh:
    hwm = [int(line.split()[1]) for line in fh if line.startswith("VmHWM:")]
print(json.dumps({"times": times, "listed": len(jobs),
                  "maxrss_kb": hwm[0] if hwm else resource.getrusage(0).ru_maxrss}))
"""


def list_child(path: str, limit: int, reps: int) -> dict[str, Any]:
    """Run ``_LIST_CHILD`` (limit -1: open the store only); its times and peak RSS (KiB)."""
    done = subprocess.run(
        [sys.executable, "-c", _LIST_CHILD, path, str(limit), str(reps)],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout))


def seed_jobs(q: Queue, n: int, chunk: int = 100_000) -> None:
    """``n`` ready jobs, built and added a chunk at a time (seeding is not timed)."""
    for start in range(0, n, chunk):
        q.store.add(build_records(q, min(chunk, n - start)))


def bench_list_limit(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"limit": LIST_LIMIT}
    for n in cfg["limit_sizes"]:
        with fresh_queue("optimized", sync=False) as (q, _):
            built, _ = timed(lambda: seed_jobs(q, n))
            path = q.path
            q.close()  # the child opens it alone
            listed = list_child(path, LIST_LIMIT, cfg["reps"])
            opened = list_child(path, -1, 1)
        assert listed["listed"] == LIST_LIMIT
        row = {
            "seconds": summary(listed["times"][1:] or listed["times"]),
            "first_s": listed["times"][0],
            "maxrss_kb": listed["maxrss_kb"],
            "open_only_maxrss_kb": opened["maxrss_kb"],
            "seed_s": built,
        }
        log(
            f"  list --limit {LIST_LIMIT} of {n:,}: first {row['first_s'] * 1000:.2f} ms, "
            f"median {row['seconds']['median'] * 1000:.2f} ms, peak RSS "
            f"{row['maxrss_kb'] / 1024:.1f} MiB (open only {opened['maxrss_kb'] / 1024:.1f})"
            f" (seeded in {built:.1f} s)"
        )
        out[str(n)] = row
    return out


# ---- report ---------------------------------------------------------------------------------


def fmt_rate(s: dict[str, float]) -> str:
    return f"{s['median']:,.0f} ({s['min']:,.0f}-{s['max']:,.0f})"


def fmt_ms(s: dict[str, float]) -> str:
    return f"{s['median'] * 1000:,.2f} ({s['min'] * 1000:,.2f}-{s['max'] * 1000:,.2f})"


def ops_text(ops: dict[str, int]) -> str:
    return (
        f"reads {ops['reads']:,} (gets {ops['gets']:,} + steps {ops['cursor_steps']:,}), "
        f"puts {ops['puts']:,}, dels {ops['deletes']:,}"
    )


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "**FAIL**")


Row = tuple[str, str, str, str, "bool | None"]


def single_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    s = res["single"]
    rows.append(
        (
            "1",
            f"bare LMDB, 1 put + commit per txn (n={s['n']:,})",
            fmt_rate(s["bare"]) + " txn/s",
            "baseline",
            None,
        )
    )
    if "floor" in s:
        fr = s["floor_ratio"]
        rows.append(
            (
                "1b",
                "raw LMDB, the enqueue's 3 puts + commit per txn, keys prebuilt",
                fmt_rate(s["floor"]) + f" txn/s = {fr['median']:.0%} "
                f"({fr['min']:.0%}-{fr['max']:.0%}) of (1)",
                "(layout floor)",
                None,
            )
        )
    rows.append(
        ("2", f"`task.delay` one by one (n={s['n']:,})", fmt_rate(s["api"]) + " jobs/s", "-", None)
    )
    ratio = s["ratio"]
    rows.append(
        (
            "2",
            "ratio (2)/(1), per interleaved rep",
            f"{ratio['median']:.0%} ({ratio['min']:.0%}-{ratio['max']:.0%})",
            f">= {TARGET_SINGLE_RATIO:.0%}",
            ratio["median"] >= TARGET_SINGLE_RATIO,
        )
    )
    return rows


def map_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    m = res["map"]
    for batch in res["config"]["map_batches"]:
        r = m[str(batch)]
        rows.append(
            (
                "3",
                f"`task.map`, batches of {batch:,} ({m['total']:,} jobs)",
                fmt_rate(r["api"]) + " jobs/s",
                f">= {TARGET_MAP_RATE:,}/s",
                r["api"]["median"] >= TARGET_MAP_RATE,
            )
        )
        rows.append(
            (
                "3",
                f"`store.add`, pre-built records, batches of {batch:,}",
                fmt_rate(r["store_add"]) + " jobs/s",
                "(info)",
                None,
            )
        )
    return rows


def claim_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    c = res["claim"]
    for limit in res["config"]["claim_limits"]:
        r = c[str(limit)]
        # The target is judged at the batch the server claims with (--batch default);
        # smaller batches are shown for how the fsync per commit weighs on them.
        judged = limit == DEFAULT_BATCH
        rows.append(
            (
                "4",
                f"`store.claim(w, {limit}, now)` until {c['total']:,} claimed",
                fmt_rate(r["rate"]) + " jobs/s",
                f">= {TARGET_CLAIM_RATE:,}/s" if judged else "(info)",
                r["rate"]["median"] >= TARGET_CLAIM_RATE if judged else None,
            )
        )
    return rows


def list_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    lst = res["list"]
    for mode in ("optimized", "legacy"):
        r = lst[mode]
        ok = None
        if mode == "optimized":
            ok = r["ops"]["gets"] == 0 and r["ops"]["reads"] < lst["legacy"]["ops"]["reads"]
        rows.append(
            (
                "5",
                f"`Queue.list()` of {lst['n']:,} jobs, {mode}",
                fmt_ms(r["seconds"]) + " ms; " + ops_text(r["ops"]),
                "no per-job gets" if mode == "optimized" else "(before)",
                ok,
            )
        )
    return rows


def poll_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    poll = res["poll"]
    opt_ops = [poll[str(sz)]["optimized"]["ops"] for sz in res["config"]["poll_sizes"]]
    same = all(o == opt_ops[0] for o in opt_ops) and all(
        poll[str(sz)]["optimized"]["ops_all_equal"] for sz in res["config"]["poll_sizes"]
    )
    for sz in res["config"]["poll_sizes"]:
        for mode in ("optimized", "legacy"):
            if mode not in poll[str(sz)]:
                continue
            r = poll[str(sz)][mode]
            target = "same ops at every size" if mode == "optimized" else "(before)"
            rows.append(
                (
                    "6",
                    f"poll, 10 ready + {sz:,} scheduled, {mode} (claims {r['claimed_per_poll']})",
                    fmt_ms(r["seconds"]) + " ms; " + ops_text(r["ops"]),
                    target,
                    same if mode == "optimized" else None,
                )
            )
    return rows


def list_limit_rows(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    r = res["list_limit"]
    sizes = res["config"]["limit_sizes"]
    smallest = r[str(sizes[0])]
    for n in sizes:
        row = r[str(n)]
        grew_kb = row["maxrss_kb"] - smallest["maxrss_kb"]
        rows.append(
            (
                "7",
                f"`list(limit={r['limit']})` of {n:,} jobs, own process "
                f"(first call {row['first_s'] * 1000:.2f} ms)",
                fmt_ms(row["seconds"]) + " ms",
                f"<= {TARGET_LIMITED_LIST_S * 1000:.0f} ms",
                row["seconds"]["median"] <= TARGET_LIMITED_LIST_S,
            )
        )
        rows.append(
            (
                "7",
                f"peak RSS of that process, {n:,} jobs (opening the store alone: "
                f"{row['open_only_maxrss_kb'] / 1024:.1f} MiB)",
                f"{row['maxrss_kb'] / 1024:.1f} MiB ({grew_kb / 1024:+.1f} MiB vs "
                f"{sizes[0]:,} jobs)",
                f"within {RSS_SLACK_KB // 1024} MiB at every size",
                grew_kb <= RSS_SLACK_KB,
            )
        )
    return rows


SECTIONS = (
    ("single", single_rows),
    ("map", map_rows),
    ("claim", claim_rows),
    ("list", list_rows),
    ("poll", poll_rows),
    ("list_limit", list_limit_rows),
)


def table(res: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    rows = [row for key, make in SECTIONS if key in res for row in make(res)]
    lines = ["| # | Measurement | Median (min-max) | Target | Result |", "|---|---|---|---|---|"]
    lines += [f"| {n} | {what} | {val} | {tgt} | {verdict(ok)} |" for n, what, val, tgt, ok in rows]
    verdicts = [
        {"row": n, "what": what, "value": val, "target": tgt, "pass": ok}
        for n, what, val, tgt, ok in rows
    ]
    return "\n".join(lines), verdicts


def code_fingerprint() -> dict[str, Any]:
    """Which mpqueue sources this run loaded: the package directory and a sha256 over
    every loaded mpqueue module file (so a result can be tied to exact code even when
    the tree is being edited)."""
    import hashlib

    import mpqueue

    digest = hashlib.sha256()
    files = sorted(
        m.__file__
        for name, m in sys.modules.items()
        if (name == "mpqueue" or name.startswith("mpqueue.")) and getattr(m, "__file__", None)
    )
    for path in files:
        with open(path, "rb") as fh:
            digest.update(os.path.basename(path).encode() + b"\0" + fh.read())
    return {
        "package_dir": os.path.dirname(mpqueue.__file__),
        "modules": len(files),
        "sha256": digest.hexdigest()[:16],
    }


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "mpqueue_source": code_fingerprint(),
        "py_lmdb": lmdb.__version__,
        "lmdb": ".".join(map(str, lmdb.version())),
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_start": list(os.getloadavg()),
        "tmpdir": tempfile.gettempdir(),
    }


BENCHES = [
    ("single", bench_single),
    ("map", bench_map),
    ("claim", bench_claim),
    ("list", bench_list),
    ("poll", bench_poll),
    ("list_limit", bench_list_limit),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.store_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, < 60 s")
    parser.add_argument("--out", help="write raw numbers as JSON to this file")
    parser.add_argument("--reps", type=int, help="repetitions (default 5 full, 3 quick)")
    parser.add_argument(
        "--only",
        help="comma-separated rows to run (default: all): " + ", ".join(key for key, _ in BENCHES),
    )
    args = parser.parse_args(argv)
    only = (
        BENCHES
        if args.only is None
        else [(k, fn) for k, fn in BENCHES if k in args.only.split(",")]
    )
    if not only:
        parser.error(f"--only {args.only!r} names no row")
    cfg = dict(QUICK if args.quick else FULL)
    if args.reps:
        cfg["reps"] = args.reps
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "config": cfg,
        "machine": machine(),
        "command": " ".join(["python -m bench.store_bench"] + sys.argv[1:]),
    }
    t_start = time.perf_counter()
    log(f"mpqueue sources: {res['machine']['mpqueue_source']}")
    for key, fn in only:
        log(f"[{key}]")
        res[key] = fn(cfg)
    res["wall_seconds"] = time.perf_counter() - t_start
    res["machine"]["loadavg_end"] = list(os.getloadavg())  # other load skews the numbers
    text, verdicts = table(res)
    res["table"] = verdicts
    m = res["machine"]
    print(
        f"mpqueue store benchmark ({res['mode']}), {m['date']}: {m['nproc']} cpu "
        f"{m['cpu']}, Python {m['python']}, py-lmdb {m['py_lmdb']} (LMDB {m['lmdb']}), "
        f"sync=True, {cfg['reps']} reps, wall {res['wall_seconds']:.0f} s, load avg "
        f"{m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}; mpqueue from "
        f"{m['mpqueue_source']['package_dir']} (sources sha256 "
        f"{m['mpqueue_source']['sha256']})\n"
    )
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
