"""Workflow benchmark (issue 12): a 10,000-member chord, enqueued and served, and the
hand-on from one step of a chain to the next on an idle server.

    python -m bench.workflow_bench [--quick] [--rounds N] [--path DIR]
                                   [--store lmdb|postgres] [--pg-url URL] [--out FILE.json]

Rows, each measured in this one run on fresh durable stores (LMDB: a new directory under
``--path``, default the system's temporary directory; PostgreSQL: a new schema of
``--pg-url``, or of a throwaway server this run starts and stops when no URL is given):

  enqueue  ``chord(group(noop.s(i) for i in range(N)), total.s()).delay()``, one
           transaction, timed from building the signatures to the return (N + 1 jobs);
           beside it ``group(...).delay()`` and a plain ``noop.map(...)`` of the same N.
  serve    ``serve --workers 2 --until-empty`` (in this process, as ``serve_bench``
           runs it: real worker processes) over (a) N plain no-op jobs and (b) the chord
           of N members and its callback; the time per member, (b) / (a).
  chain    10-step chains (``bench.jobs.chain_step``) on a ``serve --workers 2``
           subprocess that is idle when each chain is enqueued; every step stamps its
           start and end (``time.time_ns()``) into its result, which the next step
           receives, so a gap is one step's end to the next step's start.

The kinds of a row alternate in every round (a, b, then b, a, ...), so drift in the
machine's speed hits them alike; the table gives medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from typing import Any

from bench.common import md_table, save_json, verdict
from bench.serve_bench import Server, percentiles, serve_until_empty
from bench.store_bench import machine
from mpqueue import Queue, chain, chord, group

NOOP, TOTAL, STEP = "bench.jobs.noop", "bench.jobs.total", "bench.jobs.chain_step"
ENQUEUE_TARGET_JOBS_S = 50_000
SERVE_TARGET_RATIO = 1.10  # the chord may cost at most 10% more per member
CHAIN_TARGET_P50_MS = 2.0
CHAIN_STEPS = 10
IDLE_S = 0.02  # the server idles this long (plus jitter) before each chain
IDLE_JITTER_S = 0.01
WORKERS = 2


# ---- fresh stores ----------------------------------------------------------------------------
class Stores:
    """Fresh stores of one backend: an LMDB directory under ``parent``, or a new schema
    of the PostgreSQL server at ``pg_url``."""

    def __init__(self, backend: str, parent: str | None, pg_url: str | None):
        self.backend, self.parent, self.pg_url = backend, parent, pg_url

    @contextmanager
    def fresh(self) -> Iterator[str]:
        if self.backend == "postgres":
            from bench.pg_bench import Stores as PgStores

            assert self.pg_url is not None
            with PgStores(self.pg_url).location("postgres") as where:
                with Queue(where) as queue:
                    queue.stats()  # create (migrate) the schema before anything is timed
                yield where
            return
        path = tempfile.mkdtemp(prefix="mpq-wf-bench-", dir=self.parent)
        try:
            with Queue(os.path.join(path, "store")) as queue:
                queue.stats()
            yield os.path.join(path, "store")
        finally:
            shutil.rmtree(path, ignore_errors=True)


def store_options(parser: argparse.ArgumentParser) -> None:
    """The options of a benchmark that runs on either store (``Stores``, ``pg_url_for``)
    and saves its result: --path, --store, --pg-url, --out."""
    parser.add_argument("--path", default=None, help="parent directory of the LMDB stores")
    parser.add_argument("--store", choices=("lmdb", "postgres"), default="lmdb")
    parser.add_argument("--pg-url", default=None, help="PostgreSQL server [a throwaway one]")
    parser.add_argument("--out", default=None, help="write the result as JSON here")


@contextmanager
def pg_url_for(opts: argparse.Namespace) -> Iterator[str | None]:
    """The PostgreSQL server's URL: ``--pg-url``, or a throwaway server for this run."""
    if opts.store != "postgres" or opts.pg_url:
        yield opts.pg_url
        return
    from bench.pg_bench import pg_server

    with pg_server() as url:
        yield url


def alternate(kinds: tuple[str, ...], rounds: int) -> Iterator[tuple[int, str]]:
    """(round, kind) in the order the rounds run them: reversed every other round."""
    for r in range(rounds):
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            yield r, kind


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---- 1: enqueue ------------------------------------------------------------------------------
def enqueue_once(queue: Queue, kind: str, members: int) -> int:
    """Enqueue one workflow of ``kind`` on ``queue``; the number of jobs written."""
    noop = queue.task_by_name(NOOP)
    if kind == "map":
        noop.map([(i,) for i in range(members)])
        return members
    if kind == "group":
        group(noop.s(i) for i in range(members)).delay()
        return members
    chord(group(noop.s(i) for i in range(members)), queue.task_by_name(TOTAL).s()).delay()
    return members + 1


def bench_enqueue(stores: Stores, members: int, rounds: int) -> dict[str, Any]:
    kinds = ("map", "group", "chord")
    rates: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _, kind in alternate(kinds, rounds):
        with stores.fresh() as where, Queue(where) as queue:
            queue.task_by_name(NOOP)  # imported before the clock starts
            started = time.perf_counter()
            written = enqueue_once(queue, kind, members)
            elapsed = time.perf_counter() - started
            assert queue.stats()["total"] == written
        rates[kind].append(written / elapsed)
    return {"members": members, "jobs_s": rates}


# ---- 2: serving cost -------------------------------------------------------------------------
def serve_once(where: str, kind: str, members: int) -> float:
    """Enqueue (not timed) ``members`` plain jobs or a chord of them, serve them until
    empty, check the outcome; the seconds per member."""
    with Queue(where) as queue:
        if kind == "plain":
            enqueue_once(queue, "map", members)
            callback = None
        else:
            noop = queue.task_by_name(NOOP)
            sigs = group(noop.s(i) for i in range(members))
            callback = chord(sigs, queue.task_by_name(TOTAL).s()).delay()
    elapsed = serve_until_empty(where, WORKERS)
    with Queue(where) as queue:
        stats = queue.stats()
        assert stats["done"] == stats["total"] and not stats["dead"], stats
        if callback is not None:
            got = queue.get(callback.id)
            assert got is not None and got.result() == sum(range(members))
    return elapsed / members


def bench_serve(stores: Stores, members: int, rounds: int) -> dict[str, Any]:
    kinds = ("plain", "chord")
    per_member: dict[str, list[float]] = {kind: [] for kind in kinds}
    empty_s = []  # start and stop on an empty store: the part of (a) and (b) not per member
    for r, kind in alternate(kinds, rounds):
        with stores.fresh() as where:
            per_member[kind].append(serve_once(where, kind, members))
        log(f"  serve round {r + 1} {kind}: {per_member[kind][-1] * 1e6:.1f} us/member")
        if kind == "chord":
            with stores.fresh() as where:
                empty_s.append(serve_until_empty(where, WORKERS))
    paired = [c / p for p, c in zip(per_member["plain"], per_member["chord"])]
    return {
        "members": members,
        "workers": WORKERS,
        "s_per_member": per_member,
        "ratio": paired,
        "empty_serve_s": empty_s,
    }


# ---- 3: chain hand-on latency ------------------------------------------------------------------
def gaps_ms(stamps: list[int]) -> list[float]:
    """From each step's end to the next step's start, in ms (stamps: start, end, ...)."""
    return [(stamps[i + 1] - stamps[i]) / 1e6 for i in range(1, len(stamps) - 1, 2)]


def bench_chain(stores: Stores, chains: int) -> dict[str, Any]:
    gaps, first = [], []
    with stores.fresh() as where, Server(where, WORKERS), Queue(where) as queue:
        step = queue.task_by_name(STEP)
        for _ in range(chains):
            time.sleep(IDLE_S + random.uniform(0.0, IDLE_JITTER_S))  # the server goes idle
            called_ns = time.time_ns()
            last = chain(step.s([]), *(step.s() for _ in range(CHAIN_STEPS - 1))).delay()
            stamps = last.result(timeout=60)
            assert len(stamps) == 2 * CHAIN_STEPS, stamps
            gaps += gaps_ms(stamps)
            first.append((stamps[0] - called_ns) / 1e6)
    return {
        "chains": chains,
        "steps": CHAIN_STEPS,
        "gap_ms": percentiles(gaps),
        "first_start_ms": percentiles(first),
        "gaps": gaps,
    }


# ---- report ----------------------------------------------------------------------------------
def _spread(values: list[float], scale: float = 1.0, digits: int = 0) -> str:
    med, lo, hi = (v * scale for v in (statistics.median(values), min(values), max(values)))
    return f"{med:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f})"


def report(results: dict[str, Any]) -> str:
    header = ["row", "measured: median (min-max)", "target", "result"]
    rows: list[list[Any]] = []
    if "enqueue" in results:
        r = results["enqueue"]
        n, rates = r["members"], r["jobs_s"]
        chord_rate = statistics.median(rates["chord"])
        rows.append(
            [
                f"enqueue chord of {n:,} + callback, one transaction ({len(rates['chord'])} reps)",
                f"{_spread(rates['chord'])} jobs/s",
                f">= {ENQUEUE_TARGET_JOBS_S:,} jobs/s",
                verdict(chord_rate >= ENQUEUE_TARGET_JOBS_S),
            ]
        )
        for kind, label in (("group", "group(...).delay()"), ("map", "noop.map(...)")):
            ratio = chord_rate / statistics.median(rates[kind])
            rows.append(
                [
                    f"enqueue {label} of {n:,}",
                    f"{_spread(rates[kind])} jobs/s (chord: x{ratio:.2f})",
                    "(comparison)",
                    "-",
                ]
            )
    if "serve" in results:
        r = results["serve"]
        n, per = r["members"], r["s_per_member"]
        ratio_of_medians = statistics.median(per["chord"]) / statistics.median(per["plain"])
        for kind, label in (("plain", f"(a) {n:,} no-op jobs"), ("chord", f"(b) chord of {n:,}")):
            rows.append(
                [
                    f"serve --workers {r['workers']} --until-empty, {label}",
                    f"{_spread(per[kind], 1e6, 1)} us/member, "
                    f"{_spread([1 / s for s in per[kind]])} members/s",
                    "",
                    "-",
                ]
            )
        rows.append(
            [
                f"serving cost per member, (b)/(a) ({len(r['ratio'])} alternating rounds)",
                f"x{ratio_of_medians:.3f} of the medians; paired per round "
                f"{_spread(r['ratio'], digits=3)}",
                f"<= x{SERVE_TARGET_RATIO:.2f}",
                verdict(ratio_of_medians <= SERVE_TARGET_RATIO),
            ]
        )
        empty = statistics.median(r["empty_serve_s"])
        net = (statistics.median(per["chord"]) * n - empty) / (
            statistics.median(per["plain"]) * n - empty
        )
        rows.append(
            [
                "the same, net of serve's start and stop on an empty store",
                f"x{net:.3f} (empty store: {_spread(r['empty_serve_s'], 1e3)} ms)",
                "(info)",
                "-",
            ]
        )
    if "chain" in results:
        r = results["chain"]
        g, f = r["gap_ms"], r["first_start_ms"]
        rows.append(
            [
                f"{r['steps']}-step chain on an idle server, step end -> next start "
                f"({r['chains']} chains, {len(r['gaps'])} gaps)",
                f"p50 {g['p50']:.2f} / p95 {g['p95']:.2f} / p99 {g['p99']:.2f} / "
                f"max {g['max']:.2f} ms",
                f"p50 <= {CHAIN_TARGET_P50_MS:g} ms",
                verdict(g["p50"] <= CHAIN_TARGET_P50_MS),
            ]
        )
        rows.append(
            [
                "chain.delay() call -> first step's start",
                f"p50 {f['p50']:.2f} / p95 {f['p95']:.2f} ms",
                "(info)",
                "-",
            ]
        )
    return md_table(header, rows)


SCENARIOS = ("enqueue", "serve", "chain")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and chains")
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 5, quick 2)")
    parser.add_argument("--members", type=int, default=10_000, help="jobs per group/map")
    parser.add_argument("--chains", type=int, help="chains to time (default 20, quick 5)")
    parser.add_argument("--path", help="directory for the LMDB stores (default: temp)")
    parser.add_argument("--store", choices=("lmdb", "postgres"), default="lmdb")
    parser.add_argument("--pg-url", help="PostgreSQL server (default: start a throwaway one)")
    parser.add_argument("--only", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--out", help="write raw numbers as JSON to this file")
    opts = parser.parse_args(argv)
    rounds = opts.rounds or (2 if opts.quick else 5)
    chains = opts.chains or (5 if opts.quick else 20)
    results: dict[str, Any] = {
        "machine": machine(),
        "command": " ".join(sys.argv),
        "config": {"store": opts.store, "rounds": rounds, "chains": chains},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    with ExitStack() as stack:
        stores = Stores(opts.store, opts.path, stack.enter_context(pg_url_for(opts)))
        plan: dict[str, Callable[[], dict[str, Any]]] = {
            "enqueue": lambda: bench_enqueue(stores, opts.members, rounds),
            "serve": lambda: bench_serve(stores, opts.members, rounds),
            "chain": lambda: bench_chain(stores, chains),
        }
        for name in opts.only:
            log(f"running {name} ...")
            results[name] = plan[name]()
    print(f"store: {opts.store}; {results['date']}; load {os.getloadavg()[0]:.2f}")
    print(report(results))
    save_json(results, opts.out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
