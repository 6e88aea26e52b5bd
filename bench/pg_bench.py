"""LMDB vs PostgreSQL (issue 5): the two stores side by side, measured in one run.

    python -m bench.pg_bench [--quick] [--out FILE.json] [--wait-load 1.5]

Starts its own throwaway PostgreSQL server (``scripts/pg-test-server start`` with its own
``MPQUEUE_PG_STATE`` temp file; fsync and synchronous_commit on) and always stops it at
the end. Every measurement runs on a fresh store: LMDB in a new temp directory
(``sync=True``), PostgreSQL in a new schema of that server. Both are durable: every
commit is on disk before the call returns.

Rows (each repeated; the table shows median (min-max)):
  enqueue single   ``task.delay`` one job per transaction
  enqueue batched  ``task.map``, 1,000 jobs per call (one transaction each)
  claim            ``store.claim(w, 256, now)`` until every ready job is taken
  cycle            ``store.finish_and_claim(done outcomes of the last batch, w, 256, now)``
                   until every job is done (the server's transaction)
  serve            no-op and ~10 ms CPU-bound jobs (``bench/jobs.py``) run by 1, 2 and 3
                   ``mpqueue serve --until-empty --workers 1`` subprocesses started
                   together; timed from the first start until the last one exited
  serve startup    one ``serve --until-empty --workers 1`` on an empty store, start to exit
  poll             ``promote_due`` + ``claim(w, 32)`` (``store_bench.poll_once``) with 10
                   ready and 1,000,000 scheduled jobs: time and ``store.counter`` ops
                   (plus, for PostgreSQL, the pages ``EXPLAIN (ANALYZE, BUFFERS)``
                   counts); and the build of those rows (``store.add`` of pre-built
                   records, 10,000 per call)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import count
from typing import Any

import psycopg
from psycopg import sql

from bench.common import md_table, spread, summary
from bench.serve_bench import ROOT, enqueue
from bench.store_bench import (
    HOUR_MS,
    TASK_NAME,
    add_in_batches,
    build_records,
    delay_rate,
    log,
    machine,
    noop,
    poll_once,
    tempdir,
)
from mpqueue import Queue
from mpqueue.records import Outcome, now_ms

BACKENDS = ("lmdb", "postgres")
PG_SERVER = os.path.join(ROOT, "scripts", "pg-test-server")
WORKER = "bench-worker"

FULL = dict(
    reps=3,
    single_n=2_000,
    map_total=50_000,
    map_batch=1_000,
    claim_total=50_000,
    claim_limit=256,
    servers=(1, 2, 3),
    serve_workers=1,
    serve_reps=3,
    noop_jobs=20_000,
    spin_jobs=600,
    spin_ms=10.0,
    startup_reps=3,
    poll_scheduled=1_000_000,
    poll_ready=10,
    poll_limit=32,
    poll_reps=5,
    build_batch=10_000,
)
QUICK = dict(
    reps=1,
    single_n=300,
    map_total=10_000,
    map_batch=1_000,
    claim_total=10_000,
    claim_limit=256,
    servers=(1, 2, 3),
    serve_workers=1,
    serve_reps=1,
    noop_jobs=2_000,
    spin_jobs=100,
    spin_ms=10.0,
    startup_reps=1,
    poll_scheduled=100_000,
    poll_ready=10,
    poll_limit=32,
    poll_reps=3,
    build_batch=10_000,
)


# ---- the server and fresh stores ---------------------------------------------------------


@contextmanager
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server for this run; its URL. Stopped (and its files
    removed) on the way out, whatever happened."""
    fd, state = tempfile.mkstemp(prefix="mpqueue-pg-bench-state.")
    os.close(fd)
    env = dict(os.environ, MPQUEUE_PG_STATE=state)
    try:
        started = subprocess.run(
            [PG_SERVER, "start"],
            env=env,
            check=True,
            text=True,
            stdout=subprocess.PIPE,
            timeout=120,
        )
        yield started.stdout.strip()
    finally:
        subprocess.run([PG_SERVER, "stop"], env=env, check=False, timeout=120)
        if os.path.exists(state):
            os.unlink(state)


class Stores:
    """Fresh stores of either backend: a temp directory, or a new schema."""

    def __init__(self, server_url: str):
        self.server_url = server_url
        self.names = count()

    @contextmanager
    def location(self, backend: str) -> Iterator[str]:
        if backend == "lmdb":
            with tempdir() as path:
                yield os.path.join(path, "store")
            return
        schema = f"mpq_bench_{os.getpid()}_{next(self.names)}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            sep = "&" if "?" in self.server_url else "?"
            yield f"{self.server_url}{sep}options=-csearch_path%3D{schema}"
        finally:
            with psycopg.connect(self.server_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

    @contextmanager
    def queue(self, backend: str) -> Iterator[tuple[Queue, Any]]:
        """A Queue on a fresh store, opened (schema created) before anything is timed,
        with the benchmark task registered by name."""
        with self.location(backend) as where:
            q = Queue(where, sync=True)
            task = q.task(noop, name=TASK_NAME)
            _ = q.store  # open (and, for PostgreSQL, migrate) outside any timing
            try:
                yield q, task
            finally:
                q.close()

    def server_version(self) -> str:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


def repeat(
    cfg: dict[str, Any], label: str, fn: Callable[[], float], reps: int | None = None
) -> dict[str, Any]:
    samples = []
    for rep in range(reps or cfg["reps"]):
        samples.append(fn())
        log(f"  {label} rep {rep}: {samples[-1]:,.2f}")
    return summary(samples)


# ---- enqueue -----------------------------------------------------------------------------


def enqueue_single(stores: Stores, backend: str, n: int) -> float:
    with stores.queue(backend) as (q, task):
        return delay_rate(q, task, n)


def enqueue_map(stores: Stores, backend: str, total: int, batch: int) -> float:
    args = [(i,) for i in range(batch)]
    with stores.queue(backend) as (q, task):
        t0 = time.perf_counter()
        for _ in range(total // batch):
            task.map(args)
        elapsed = time.perf_counter() - t0
        assert q.stats()["ready"] == total // batch * batch
    return total // batch * batch / elapsed


# ---- claim and the server's cycle ----------------------------------------------------------


def claim_rate(stores: Stores, backend: str, total: int, limit: int) -> float:
    with stores.queue(backend) as (q, _):
        add_in_batches(q, build_records(q, total), 10_000)
        store, now, claimed = q.store, now_ms(), 0
        t0 = time.perf_counter()
        while got := store.claim(WORKER, limit, now):
            claimed += len(got)
        elapsed = time.perf_counter() - t0
        assert claimed == total, (claimed, total)
    return total / elapsed


def cycle_rate(stores: Stores, backend: str, total: int, limit: int) -> float:
    """finish_and_claim with the previous batch's outcomes, as ``serve`` does."""
    with stores.queue(backend) as (q, _):
        add_in_batches(q, build_records(q, total), 10_000)
        store, done = q.store, 0
        t0 = time.perf_counter()
        claimed = store.claim(WORKER, limit, now_ms())
        while claimed:
            outcomes = [Outcome.done(rec.id, WORKER, b"N.") for rec in claimed]
            acks, claimed = store.finish_and_claim(outcomes, WORKER, limit, now_ms())
            done += sum(acks)
        elapsed = time.perf_counter() - t0
        assert done == total and q.stats()["done"] == total, (done, q.stats())
    return total / elapsed


# ---- end to end: serve subprocesses ----------------------------------------------------------


def run_servers(where: str, servers: int, workers: int) -> float:
    """Start ``servers`` ``serve --until-empty`` processes together; seconds until the
    last one exited."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable,
        "-m",
        "mpqueue",
        "--path",
        where,
        "serve",
        "--until-empty",
        "--workers",
        str(workers),
        "--no-progress",
        "--log-level",
        "warning",
    ]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryFile() as output:  # shown only if a server fails
        try:
            t0 = time.perf_counter()
            for _ in range(servers):
                procs.append(
                    subprocess.Popen(
                        cmd, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
                    )
                )
            codes = [p.wait(timeout=600) for p in procs]
            elapsed = time.perf_counter() - t0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if any(codes):
            output.seek(0)
            raise RuntimeError(
                f"serve exited with {codes}:\n{output.read().decode(errors='replace')[-3000:]}"
            )
    return elapsed


def serve_rate(
    stores: Stores, backend: str, name: str, args: list[tuple[Any, ...]], servers: int, workers: int
) -> float:
    with stores.location(backend) as where:
        enqueue(where, f"bench.jobs.{name}", args)  # not timed
        elapsed = run_servers(where, servers, workers)
        with Queue(where) as q:
            stats = q.stats()
        assert stats["done"] == len(args) and stats["dead"] == 0, stats
    return len(args) / elapsed


def serve_startup(stores: Stores, backend: str, workers: int) -> float:
    with stores.location(backend) as where:
        with Queue(where) as q:
            q.stats()  # the store exists (and is migrated) before the server starts
        return run_servers(where, 1, workers)


# ---- poll with many scheduled jobs -------------------------------------------------------------


def bench_poll(stores: Stores, backend: str, cfg: dict[str, Any]) -> dict[str, Any]:
    size, batch = cfg["poll_scheduled"], cfg["build_batch"]
    with stores.queue(backend) as (q, _):
        now = now_ms()
        build_s = 0.0
        for start in range(0, size, 100_000):  # records built 100,000 at a time (memory)
            recs = build_records(
                q, min(100_000, size - start), run_at_ms=now + HOUR_MS, created_ms=now
            )
            t0 = time.perf_counter()
            add_in_batches(q, recs, batch)  # only the adds are timed
            build_s += time.perf_counter() - t0
            del recs
        log(f"  poll {backend}: built {size:,} scheduled in {build_s:.1f} s")
        times, ops, claimed = [], [], []
        for _ in range(cfg["poll_reps"]):
            # bench.store_bench.poll_once: adds `poll_ready` ready jobs (untimed), then
            # times promote_due + claim(w, 32)
            elapsed, op, got = poll_once(q, cfg["poll_ready"])
            times.append(elapsed)
            ops.append(op)
            claimed.append(got)
        stats = q.stats()
        assert stats["scheduled"] == size, stats
        plan = pg_buffers(q, cfg["poll_ready"]) if backend == "postgres" else None
    log(
        f"  poll {backend}: {statistics.median(times) * 1000:.2f} ms, ops {ops[-1]}"
        + (f", buffers {plan}" if plan else "")
    )
    return {
        "scheduled": size,
        "build_seconds": build_s,
        "build_rate": size / build_s,
        "seconds": summary(times),
        "ops": ops[-1],
        "ops_all_equal": all(o == ops[0] for o in ops),
        "ops_samples": ops,
        "claimed": claimed,
        "pg_buffers": plan,
    }


def pg_buffers(q: Queue, ready: int) -> dict[str, Any]:
    """PostgreSQL's own count of the pages one poll touches: ``EXPLAIN (ANALYZE,
    BUFFERS)`` of the store's promote and claim statements, with ``ready`` new ready
    jobs, in a transaction that is rolled back. The op counter sees statements and rows;
    this shows whether the scheduled rows are scanned."""
    store: Any = q.store
    store.add(build_records(q, ready))
    now = now_ms()
    out: dict[str, Any] = {}
    with psycopg.connect(store.url) as conn:  # not autocommit: one transaction
        for key, params in (("promote", (now,)), ("claim", (WORKER, now, now, 32))):
            row = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + store.sql[key], params
            ).fetchone()
            top = row[0][0] if row else {}
            plan = top.get("Plan", {})
            out[key] = {
                "shared_hit": plan.get("Shared Hit Blocks"),
                "shared_read": plan.get("Shared Read Blocks"),
                "rows": plan.get("Actual Rows"),
                "execution_ms": top.get("Execution Time"),
            }
        conn.rollback()
    return out


# ---- the run and the report ----------------------------------------------------------------


def run(cfg: dict[str, Any], stores: Stores) -> dict[str, Any]:
    res: dict[str, Any] = {b: {} for b in BACKENDS}
    for backend in BACKENDS:
        log(f"[{backend}: enqueue, claim, cycle]")
        r = res[backend]
        r["single"] = repeat(
            cfg, f"{backend} single", lambda: enqueue_single(stores, backend, cfg["single_n"])
        )
        r["map"] = repeat(
            cfg,
            f"{backend} map",
            lambda: enqueue_map(stores, backend, cfg["map_total"], cfg["map_batch"]),
        )
        r["claim"] = repeat(
            cfg,
            f"{backend} claim",
            lambda: claim_rate(stores, backend, cfg["claim_total"], cfg["claim_limit"]),
        )
        r["cycle"] = repeat(
            cfg,
            f"{backend} cycle",
            lambda: cycle_rate(stores, backend, cfg["claim_total"], cfg["claim_limit"]),
        )
    for backend in BACKENDS:
        log(f"[{backend}: serve]")
        r = res[backend]
        r["startup"] = repeat(
            cfg,
            f"{backend} startup",
            lambda: serve_startup(stores, backend, cfg["serve_workers"]),
            cfg["startup_reps"],
        )
        jobs = {
            "noop": [(i,) for i in range(cfg["noop_jobs"])],
            "spin": [(cfg["spin_ms"],)] * cfg["spin_jobs"],
        }
        for name, args in jobs.items():
            for servers in cfg["servers"]:
                r[f"serve_{name}_{servers}"] = repeat(
                    cfg,
                    f"{backend} {name} x{servers}",
                    lambda: serve_rate(stores, backend, name, args, servers, cfg["serve_workers"]),
                    cfg["serve_reps"],
                )
    for backend in BACKENDS:
        log(f"[{backend}: poll]")
        res[backend]["poll"] = bench_poll(stores, backend, cfg)
    return res


def ops_text(ops: dict[str, int]) -> str:
    return (
        f"{ops['txns']} stmts/txns, {ops['reads']:,} reads, {ops['puts'] + ops['deletes']:,} writes"
    )


def table(res: dict[str, Any], cfg: dict[str, Any]) -> str:
    lmdb, pg = res["lmdb"], res["postgres"]
    rows: list[list[Any]] = []

    def rate_row(what: str, key: str, unit: str = "jobs/s", digits: int = 0) -> None:
        a, b = lmdb[key], pg[key]
        rows.append(
            [
                what,
                spread(a, digits=digits, unit=f" {unit}"),
                spread(b, digits=digits, unit=f" {unit}"),
                f"{b['median'] / a['median']:.2f}",
            ]
        )

    rate_row(
        f"enqueue single: `task.delay`, one job per transaction ({cfg['single_n']:,} jobs)",
        "single",
    )
    rate_row(
        f"enqueue batched: `task.map`, {cfg['map_batch']:,} per call ({cfg['map_total']:,} jobs)",
        "map",
    )
    rate_row(
        f"claim: `store.claim(w, {cfg['claim_limit']}, now)` until {cfg['claim_total']:,} claimed",
        "claim",
    )
    rate_row(
        f"cycle: `finish_and_claim(outcomes, w, {cfg['claim_limit']}, now)` until "
        f"{cfg['claim_total']:,} done",
        "cycle",
    )
    rate_row(
        f"`serve --until-empty --workers {cfg['serve_workers']}` on an empty store: start to exit",
        "startup",
        "s",
        2,
    )
    for name, what in (
        ("noop", f"{cfg['noop_jobs']:,} no-op jobs"),
        ("spin", f"{cfg['spin_jobs']:,} jobs of {cfg['spin_ms']:g} ms CPU"),
    ):
        for servers in cfg["servers"]:
            rate_row(
                f"serve: {what}, {servers} x `serve --until-empty --workers "
                f"{cfg['serve_workers']}`",
                f"serve_{name}_{servers}",
                digits=0 if name == "noop" else 1,
            )
    a, b = lmdb["poll"], pg["poll"]
    size = f"{cfg['poll_scheduled']:,}"
    rows.append(
        [
            f"build {size} scheduled rows: `store.add`, {cfg['build_batch']:,} "
            f"pre-built records per call",
            f"{a['build_seconds']:.1f} s ({a['build_rate']:,.0f} rows/s)",
            f"{b['build_seconds']:.1f} s ({b['build_rate']:,.0f} rows/s)",
            f"{b['build_seconds'] / a['build_seconds']:.2f}",
        ]
    )
    rows.append(
        [
            f"poll: `promote_due` + `claim(w, {cfg['poll_limit']})`, "
            f"{cfg['poll_ready']} ready + {size} scheduled ({cfg['poll_reps']} polls)",
            spread(a["seconds"], 1000, unit=" ms"),
            spread(b["seconds"], 1000, unit=" ms"),
            f"{b['seconds']['median'] / a['seconds']['median']:.2f}",
        ]
    )
    rows.append(
        [
            "poll: `store.counter` ops (identical in every poll: "
            f"LMDB {'yes' if a['ops_all_equal'] else 'no'}, "
            f"PostgreSQL {'yes' if b['ops_all_equal'] else 'no'})",
            ops_text(a["ops"]),
            ops_text(b["ops"]),
            "-",
        ]
    )
    pb = b.get("pg_buffers")
    if pb:
        pages = ", ".join(f"{k} {v['shared_hit'] + v['shared_read']} pages" for k, v in pb.items())
        rows.append(
            [
                "poll: pages PostgreSQL touched (`EXPLAIN (ANALYZE, BUFFERS)`, shared hit + read)",
                "-",
                pages,
                "-",
            ]
        )
    return md_table(["measurement", "LMDB", "PostgreSQL", "PostgreSQL / LMDB (median)"], rows)


def wait_for_load(limit: float, every_s: float = 30.0, most_s: float = 900.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``limit`` (at most ``most_s``)."""
    t0 = time.monotonic()
    while True:
        load = os.getloadavg()[0]
        if load < limit or time.monotonic() - t0 >= most_s:
            return {
                "limit": limit,
                "load": load,
                "waited_s": time.monotonic() - t0,
                "reached": load < limit,
            }
        log(f"load {load:.2f} >= {limit}; waiting {every_s:.0f} s")
        time.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pg_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--out", help="write raw numbers as JSON to this file")
    parser.add_argument(
        "--wait-load",
        type=float,
        metavar="L",
        default=None,
        help="first wait (polling every 30 s, at most 15 min) until the "
        "1-minute load average is below L",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped
    cfg = dict(QUICK if args.quick else FULL)
    command = " ".join(["python -m bench.pg_bench", *(sys.argv[1:] if argv is None else argv)])
    res: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "config": cfg,
        "command": command,
    }
    if args.wait_load is not None:
        res["load_wait"] = wait_for_load(args.wait_load)
    res["machine"] = machine()
    t0 = time.perf_counter()
    with pg_server() as url:
        stores = Stores(url)
        res["machine"]["postgresql"] = stores.server_version()
        res["machine"]["psycopg"] = psycopg.__version__
        res["machine"]["libpq"] = psycopg.pq.version()
        log(f"PostgreSQL {res['machine']['postgresql']} at {url}")
        res.update(run(cfg, stores))
    res["wall_seconds"] = time.perf_counter() - t0
    res["machine"]["loadavg_end"] = list(os.getloadavg())
    text = table(res, cfg)
    res["table"] = text
    m = res["machine"]
    print(
        f"LMDB vs PostgreSQL ({res['mode']}), {m['date']}: {m['nproc']} cpu {m['cpu']}, "
        f"Python {m['python']}, py-lmdb {m['py_lmdb']} (LMDB {m['lmdb']}), psycopg "
        f"{m['psycopg']} (libpq {m['libpq']}), PostgreSQL {m['postgresql']}; wall "
        f"{res['wall_seconds']:.0f} s; 1-minute load {m['loadavg_start'][0]:.2f} -> "
        f"{m['loadavg_end'][0]:.2f}; mpqueue sources sha256 "
        f"{m['mpqueue_source']['sha256']}\n"
    )
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
