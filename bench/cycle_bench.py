"""A serve cycle's store cost, in one process (issue 15): what a server's commit of
outcomes and its next claim (``finish_and_claim``) costs beside an unserved backlog, or
with queues and limits in use, without the rest of ``serve`` around it.

    python -m bench.cycle_bench [--jobs N] [--backlog N] [--batch N] [--setups A,B,...]
                                [--no-sync] [--out FILE.json]

Every setup is a fresh durable LMDB store, all of them open at once. Each gets ``--jobs``
no-op jobs (``bench.queues_bench.fill``, not timed), is claimed ``--batch`` (65: what two
children's prefetch asks of a cycle of no-op jobs) at a time, and each batch is finished
with the next claim in one ``finish_and_claim``, as a server's cycle does. The setups
take turns call by call (in reversed order every other turn), so a drift of the
machine's speed hits them alike: on a shared machine this is the steadiest comparison
there is. Setups:

  default     the jobs in the default queue, claims of every queue (the baseline)
  fast        the jobs in queue ``fast``, claims of ``fast`` only (``serve --queues fast``)
  backlog     the same, beside ``--backlog`` ready jobs of queue ``slow``, never claimed
  ten4        the jobs over 10 queues and 4 tasks (``noop``, ``noop_a``, ``noop_b``,
              ``noop_c``), claims of every queue, no limit
  limits      the same, with a limit of 200 (never reached) on the three aliases
  lane        the jobs in the default queue, beside ``--backlog`` ready jobs of
              ``noop_a`` limited to concurrency=1 (enqueued first, so older than
              all of them): each claim takes the one free slot's job and passes over
              the rest, as a server beside a limited task's backlog does

Every setup makes as many calls as the jobs need (``--jobs`` / ``--batch``, rounded up),
so ``lane``, whose limited jobs could go on one a claim, is compared over the same calls.

Reported per setup: the median time of a call, its ratio to the first setup's, the
operations of a call in the middle of the drain (the counting layer), and each main
database's depth and leaf pages once filled (``lmdb`` stat), with the file's pages in use.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from bench.common import md_table, save_json
from bench.queues_bench import LIMIT_CONCURRENCY, LIMITED, NOOP, TEN, fill
from bench.store_bench import code_fingerprint, machine
from bench.workflow_bench import log
from mpqueue import Queue
from mpqueue.queues import Selection
from mpqueue.records import Outcome, now_ms
from mpqueue.store.counting import CountingStore
from mpqueue.store.lmdb import keys

SETUPS = ("default", "fast", "backlog", "ten4", "limits", "lane")
STAT_DBS = (keys.DB_JOBS, keys.DB_READY, keys.DB_QUEUED, keys.DB_LANED, keys.DB_DONE)
SERVER = "cycle-bench"
FAST = Selection(("fast",))


def _setup(queue: Queue, name: str, jobs: int, backlog: int) -> Selection | None:
    """Fill ``queue`` for setup ``name``; the selection its claims use."""
    if name == "backlog":
        fill(queue, ("slow",), backlog)
    if name == "limits":
        for task in LIMITED:
            queue.limit_task(task, concurrency=LIMIT_CONCURRENCY)
    if name == "lane":
        queue.limit_task(LIMITED[0], concurrency=1)
        fill(queue, ("default",), backlog, LIMITED[:1])
    if name in ("fast", "backlog"):
        fill(queue, ("fast",), jobs)
        return FAST
    if name in ("ten4", "limits"):
        fill(queue, TEN, jobs, (NOOP, *LIMITED))
        return None
    fill(queue, ("default",), jobs)
    return None


def _stats(queue: Queue) -> dict[str, Any]:
    shared = queue.store.env.shared  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    with shared.env.begin() as txn:
        for db in STAT_DBS:
            if shared.dbs.get(db) is not None:
                stat = txn.stat(shared.dbs[db])
                out[db.decode()] = {"depth": stat["depth"], "leaf_pages": stat["leaf_pages"]}
    out["last_pgno"] = shared.env.info()["last_pgno"]
    return out


def run(setups: tuple[str, ...], jobs: int, backlog: int, batch: int, sync: bool) -> dict[str, Any]:
    parent = tempfile.mkdtemp(prefix="mpq-cycle-bench-")
    queues: dict[str, Queue] = {}
    try:
        counting, selection, claimed, filled = {}, {}, {}, {}
        for name in setups:
            queue = queues[name] = Queue(os.path.join(parent, name), sync=sync)
            selection[name] = _setup(queue, name, jobs, backlog)
            filled[name] = _stats(queue)
            counting[name] = CountingStore(queue.store)
            claimed[name] = counting[name].claim(SERVER, batch, now_ms(), selection[name])
        log(f"  {len(setups)} stores filled; draining them call by call")
        result = pickle.dumps(None)
        times: dict[str, list[float]] = {name: [] for name in setups}
        calls = -(-jobs // batch)
        turn = 0
        while turn < calls and any(claimed.values()):
            for name in setups if turn % 2 == 0 else setups[::-1]:
                if not claimed[name]:
                    continue
                outcomes = [Outcome.done(rec.id, SERVER, result) for rec in claimed[name]]
                started = time.perf_counter()
                _, claimed[name] = counting[name].finish_and_claim(
                    outcomes, SERVER, batch, now_ms(), queues=selection[name]
                )
                times[name].append(time.perf_counter() - started)
            turn += 1
        base = statistics.median(times[setups[0]])
        out: dict[str, Any] = {}
        for name in setups:
            made = [c for c in counting[name].calls if c.method == "finish_and_claim"]
            done = queues[name].stats()["done"]
            assert done == jobs or (name == "lane" and done >= jobs - batch), (name, done)
            out[name] = {
                "calls": len(times[name]),
                "median_ms": statistics.median(times[name]) * 1000,
                "ratio": statistics.median(times[name]) / base,
                "ops": made[len(made) // 2].ops.as_dict(),
                "lmdb": filled[name],
            }
        return {"jobs": jobs, "backlog": backlog, "batch": batch, "sync": sync, "setups": out}
    finally:
        for queue in queues.values():
            queue.close()
        shutil.rmtree(parent, ignore_errors=True)


def report(result: dict[str, Any]) -> str:
    rows = []
    for name, got in result["setups"].items():
        ops = got["ops"]
        stat = got["lmdb"]
        depths = ", ".join(
            f"{db} {s['depth']}/{s['leaf_pages']:,}"
            for db, s in stat.items()
            if db != "last_pgno" and s["depth"]
        )
        rows.append(
            [
                name,
                f"{got['median_ms']:.3f} ms (n={got['calls']})",
                f"{got['ratio']:.3f}",
                f"{ops['gets']} / {ops['puts']} / {ops['deletes']} / {ops['cursor_steps']}",
                f"{depths}; {stat['last_pgno']:,} pages",
            ]
        )
    head = (
        f"{result['jobs']:,} jobs a store, finish_and_claim({result['batch']}), "
        f"sync={result['sync']}, backlog {result['backlog']:,}; {result['machine']['nproc']} "
        f"cores, load average {result['machine']['loadavg_start'][0]:.2f} at the start"
    )
    header = [
        "setup",
        "median call",
        "ratio",
        "ops of a call: gets / puts / deletes / cursor steps",
        "db depth/leaf pages",
    ]
    return head + "\n\n" + md_table(header, rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs a store [10000]")
    parser.add_argument("--backlog", type=int, default=100_000, help="unserved ready jobs [100000]")
    parser.add_argument("--batch", type=int, default=65, help="jobs a claim [65]")
    parser.add_argument("--setups", default=",".join(SETUPS), help="setups, first the baseline")
    parser.add_argument("--no-sync", action="store_true", help="stores without fsync")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    opts = parser.parse_args()
    setups = tuple(s.strip() for s in opts.setups.split(",") if s.strip())
    unknown = [s for s in setups if s not in SETUPS]
    if unknown:
        parser.error(f"unknown setup {unknown[0]!r} (setups: {', '.join(SETUPS)})")
    started = machine()  # the load at the start
    result = {**run(setups, opts.jobs, opts.backlog, opts.batch, not opts.no_sync)}
    # the sources once the run has loaded the store's modules too
    result["machine"] = {**started, "mpqueue_source": code_fingerprint()}
    print(report(result))
    save_json(result, opts.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
