"""Scenario ``seed``: the published table that mpqueue started from, reproduced with the
legacy mode (before) and the optimized mode (after), measured side by side.

Published scenario: 1,000 jobs, 10 ready and 990 scheduled for later; 500 ms polls;
max concurrency 5.

| optimization | before | after |
| listing 1,000 jobs | 1 + 1,000 queries | 1 query |
| job fetching | 1 job per poll: ~2 jobs/s | up to max concurrency per poll: ~10 jobs/s |
| one poll cycle | ~2,000 operations | ~10-20 operations |

Operation counts come from the store's counter, attributed per call by
``mpqueue.store.counting.CountingStore``; they are deterministic. Times are wall
clock, median and spread over repetitions, each mode on its own fresh store.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from typing import Any

from bench.common import MODES, Progress, md_table, same_order, spread, summary, timed, verdict
from bench.serve_bench import Server, temp_store, wait_until
from bench.store_bench import HOUR_MS, build_records, fresh_queue
from mpqueue import Queue
from mpqueue.records import now_ms
from mpqueue.serve.settings import ServeSettings
from mpqueue.store.counting import CountingStore

WORKER_ID = "bench-worker"
BUILD_CHUNK = 100_000
PUBLISHED = {"list_queries": (1 + 1000, 1), "jobs_per_s": (2.0, 10.0), "poll_ops": (2000, 20)}
AFTER_TOLERANCE = 0.05  # "~10 jobs/s": the poll-only rate may fall 5 % short of 10.0

FULL = dict(
    list_n=1000,
    ready=10,
    scheduled=990,
    reps=5,
    poll_limits=(5, 10),
    poll_s=0.5,
    workers=5,
    spin_ms=5.0,
    tput_jobs=40,
    tput_reps=3,
)
QUICK = dict(FULL, reps=3, tput_jobs=15, tput_reps=1)

# Serve variants of the "job fetching" row: (key, mode, extra serve options).
FETCH_VARIANTS = (
    ("legacy", "legacy", ("--poll-interval", "0.5", "--prefetch", "0")),
    ("optimized", "optimized", ("--poll-only", "--poll-interval", "0.5", "--prefetch", "0")),
    ("default", "optimized", ()),
)


def has_poll_only() -> bool:
    """Whether this mpqueue has ``serve --poll-only`` (claims on poll ticks only)."""
    return "poll_only" in {f.name for f in dataclasses.fields(ServeSettings)}


def steps(cfg: dict[str, Any], throughput: bool = True) -> int:
    """Progress-bar units ``run`` will report."""
    return 2 * (1 + len(cfg["poll_limits"])) + (3 if throughput else 0)


# ---- listing and polling: counted --------------------------------------------------------
def list_row(mode: str, n: int, reps: int, scheduled: int = 0) -> dict[str, Any]:
    """``store.list()`` of ``n`` jobs (``scheduled`` of them for later, the rest ready):
    ops of the call (identical every rep) and time."""
    with fresh_queue(mode) as (q, _):
        now = now_ms()
        q.store.add(
            build_records(q, n - scheduled, created_ms=now)
            + build_records(q, scheduled, run_at_ms=now + HOUR_MS, created_ms=now)
        )
        counting = CountingStore(q.store)
        times, ops = [], []
        for _ in range(reps):
            elapsed, jobs = timed(counting.list)
            assert len(jobs) == n, (len(jobs), n)
            times.append(elapsed)
            ops.append(counting.last("list").as_dict())
    return {
        "n": n,
        "seconds": summary(times),
        "ops": ops[-1],
        "ops_all_equal": all(o == ops[0] for o in ops),
        "queries": 1 + ops[-1]["gets"],
    }  # one index scan plus a read per job


def poll_row(mode: str, ready: int, scheduled: int, limit: int, reps: int) -> dict[str, Any]:
    """One server poll cycle (``finish_and_claim``: promote due + claim up to ``limit``,
    one transaction) with exactly ``ready`` ready and ``scheduled`` later jobs."""
    with fresh_queue(mode) as (q, _):
        now = now_ms()
        for start in range(0, scheduled, BUILD_CHUNK):  # bounded memory up to 1M jobs
            q.store.add(
                build_records(
                    q, min(BUILD_CHUNK, scheduled - start), run_at_ms=now + HOUR_MS, created_ms=now
                )
            )
        gc.collect()
        counting = CountingStore(q.store)
        times, cpu, ops, claimed = [], [], [], []
        waiting = 0  # ready jobs the previous poll left (legacy takes one)
        for _ in range(reps):
            q.store.add(build_records(q, ready - waiting))  # top up, not timed
            cpu_before = time.process_time()
            elapsed, (_, got) = timed(
                lambda: counting.finish_and_claim([], WORKER_ID, limit, now_ms())
            )
            cpu.append(time.process_time() - cpu_before)
            waiting = ready - len(got)
            times.append(elapsed)
            ops.append(counting.last("finish_and_claim").as_dict())
            claimed.append(len(got))
    return {
        "ready": ready,
        "scheduled": scheduled,
        "limit": limit,
        "seconds": summary(times),
        "cpu_seconds": summary(cpu),
        "ops": ops[-1],
        "ops_all_equal": all(o == ops[0] for o in ops),
        "claimed": claimed[-1],
    }


def run_counts(cfg: dict[str, Any], progress: Progress) -> dict[str, Any]:
    """The counted rows (listing, poll cycle) for both modes: no server, a few seconds."""
    out: dict[str, Any] = {"list": {}, "poll": {}}
    for mode in MODES:
        progress.step(f"seed: list {cfg['list_n']:,} jobs, {mode}")
        out["list"][mode] = list_row(mode, cfg["list_n"], cfg["reps"], cfg["scheduled"])
        out["poll"][mode] = {}
        for limit in cfg["poll_limits"]:
            progress.step(f"seed: poll cycle, claim limit {limit}, {mode}")
            out["poll"][mode][str(limit)] = poll_row(
                mode, cfg["ready"], cfg["scheduled"], limit, cfg["reps"]
            )
    return out


# ---- job fetching: served --------------------------------------------------------------------
def fetch_rate(
    mode: str, extra: tuple[str, ...], cfg: dict[str, Any]
) -> tuple[float, float | None]:
    """Jobs/s on a running server with ``workers`` workers (started and ready before the
    clock): from enqueueing ``tput_jobs`` short jobs (one ``map``) to all done, and the
    steady-state start rate (see ``start_rate``)."""
    n = cfg["tput_jobs"]
    with (
        temp_store() as path,
        Server(path, cfg["workers"], *extra, mode=mode),
        Queue(path, mode=mode) as queue,
    ):
        task = queue.task_by_name("bench.jobs.spin_stamp")
        started = time.perf_counter()
        handles = task.map([(cfg["spin_ms"],)] * n)
        wait_until(lambda: queue.stats()["done"] >= n, 10 + n, f"{n} jobs done ({mode})")
        elapsed = time.perf_counter() - started
        starts = [h.result(timeout=10) for h in handles]
    return n / elapsed, start_rate(starts, cfg["poll_s"])


def start_rate(starts: list[float], poll_s: float) -> float | None:
    """Jobs started per second after the first poll: the jobs started after the first
    poll's batch, over the time from the first start to the last. It leaves out the
    wait for the first poll tick and the last job's run time, so it is the rate a
    polling server sustains. None when every job started in the first batch."""
    starts = sorted(starts)
    later = [t for t in starts if t - starts[0] > poll_s / 2]
    if not later:
        return None
    return len(later) / (later[-1] - starts[0])


def run_fetch(cfg: dict[str, Any], progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, mode, extra in FETCH_VARIANTS:
        progress.step(f"seed: job fetching, {key} serve ({cfg['tput_jobs']} jobs)")
        if "--poll-only" in extra and not has_poll_only():
            out[key] = {"missing": "this mpqueue has no serve --poll-only"}
            continue
        pairs = [fetch_rate(mode, extra, cfg) for _ in range(cfg["tput_reps"])]
        steady = [s for _, s in pairs if s is not None]
        out[key] = {
            "mode": mode,
            "serve_options": list(extra),
            "jobs_per_s": summary([r for r, _ in pairs]),
            "steady_jobs_per_s": summary(steady) if steady else None,
        }
    return out


def run(cfg: dict[str, Any], progress: Progress, throughput: bool = True) -> dict[str, Any]:
    res = {"config": cfg, **run_counts(cfg, progress)}
    if throughput:
        res["fetch"] = run_fetch(cfg, progress)
    return res


# ---- report ------------------------------------------------------------------------------
def _ops(o: dict[str, int]) -> str:
    return (
        f"{o['reads']:,} reads ({o['cursor_steps']:,} index entries + {o['gets']:,} "
        f"record reads); writes {o['puts'] + o['deletes']:,}"
    )


def verdicts(res: dict[str, Any]) -> dict[str, bool | None]:
    """Per row: legacy within the published "before"'s order of magnitude, optimized at
    or beyond the published "after"."""
    lst, poll = res["list"], res["poll"]
    limit = str(res["config"]["workers"])
    out: dict[str, bool | None] = {
        "list_legacy": same_order(lst["legacy"]["queries"], PUBLISHED["list_queries"][0]),
        "list_optimized": lst["optimized"]["queries"] <= PUBLISHED["list_queries"][1],
        "poll_legacy": same_order(poll["legacy"][limit]["ops"]["reads"], PUBLISHED["poll_ops"][0]),
        "poll_optimized": poll["optimized"][limit]["ops"]["reads"] <= PUBLISHED["poll_ops"][1],
    }
    fetch = res.get("fetch", {})
    before, after = PUBLISHED["jobs_per_s"]
    leg, poll, default = (fetch.get(k, {}) for k in ("legacy", "optimized", "default"))
    out["fetch_legacy"] = (
        same_order(leg["jobs_per_s"]["median"], before) if "jobs_per_s" in leg else None
    )
    if "jobs_per_s" in poll and "jobs_per_s" in default:
        # The published "~10 jobs/s" is 5 jobs per 0.5 s poll: the poll-only server must
        # sustain it (within 5 %), and mpqueue's default mode must beat it outright.
        steady = poll["steady_jobs_per_s"]
        out["fetch_optimized"] = (
            steady is not None
            and steady["median"] >= after * (1 - AFTER_TOLERANCE)
            and default["jobs_per_s"]["median"] >= after
        )
    else:
        out["fetch_optimized"] = None
    return out


def report(res: dict[str, Any]) -> str:
    cfg, lst, poll = res["config"], res["list"], res["poll"]
    v = verdicts(res)
    rows = []
    lo, lg = lst["optimized"], lst["legacy"]
    rows.append(
        [
            f"listing {cfg['list_n']:,} jobs ({cfg['ready']} ready + {cfg['scheduled']:,} later)",
            "1 + 1,000 queries",
            f"1 + {lg['ops']['gets']:,} queries: {_ops(lg['ops'])}; "
            f"{spread(lg['seconds'], 1000)} ms",
            verdict(v["list_legacy"]),
            "1 query",
            f"1 + {lo['ops']['gets']:,} queries: {_ops(lo['ops'])}; "
            f"{spread(lo['seconds'], 1000)} ms",
            verdict(v["list_optimized"]),
        ]
    )
    fetch = res.get("fetch")
    if fetch is not None:
        rows.append(_fetch_row(cfg, fetch, v))
    for limit in cfg["poll_limits"]:
        pl, po = poll["legacy"][str(limit)], poll["optimized"][str(limit)]
        main = limit == cfg["workers"]
        rows.append(
            [
                f"one poll cycle, {cfg['ready']} ready + {cfg['scheduled']:,} later, "
                f"claim limit {limit}" + (" (= max concurrency)" if main else ""),
                "~2,000 operations" if main else "",
                f"{_ops(pl['ops'])}; claims {pl['claimed']}; {spread(pl['seconds'], 1000)} ms",
                verdict(v["poll_legacy"]) if main else "(info)",
                "~10-20 operations" if main else "",
                f"{_ops(po['ops'])}; claims {po['claimed']}; "
                f"{spread(po['seconds'], 1000)} ms; "
                f"{pl['ops']['reads'] / po['ops']['reads']:.0f}x fewer reads",
                verdict(v["poll_optimized"]) if main else "(info)",
            ]
        )
    table = md_table(
        [
            "optimization",
            "published before",
            "legacy mode, measured",
            "legacy",
            "published after",
            "optimized mode, measured",
            "optimized",
        ],
        rows,
    )
    notes = [
        "Times: median (min-max) over the repetitions; ops are identical in every "
        "repetition" + (" (checked)." if _ops_stable(res) else " (**they were not**)."),
        "Queries of a listing: the one index scan plus one record read per job. "
        "Poll operations: entries read (index entries visited + record reads); writes "
        "are shown apart (claiming a job writes its record, its claim and removes its "
        "ready entry).",
    ]
    if fetch is not None:
        notes.append(
            f"Job fetching: {cfg['tput_jobs']} jobs of {cfg['spin_ms']:g} ms CPU "
            f"(`bench.jobs.spin`), one `map`, timed from the enqueue to the last "
            f"job done on a running `serve --workers {cfg['workers']}`; "
            f"{cfg['tput_reps']} repetition(s), each on a fresh store and server. "
            f"Enqueue-to-done includes the wait for the first poll tick (up to "
            f"0.5 s) and the last job's run. *Sustained* = jobs started after the "
            f"first poll's batch / time from the first start to the last start "
            f"(from the start times the jobs return): the rate a polling server "
            f"keeps up. Verdict for the optimized column: poll-only sustains "
            f">= {10 * (1 - AFTER_TOLERANCE):g} jobs/s (the published ~10 = 5 jobs "
            f"per 0.5 s poll) and the default mode does >= 10 jobs/s."
        )
    return table + "\n\n" + "\n".join(f"- {n}" for n in notes)


def _fetch_row(cfg: dict[str, Any], fetch: dict[str, Any], v: dict[str, bool | None]) -> list[str]:
    def cell(key: str) -> str:
        r = fetch[key]
        if "jobs_per_s" not in r:
            return f"not measured: {r['missing']}"
        opts = " ".join(r["serve_options"]) or "(defaults)"
        text = f"{spread(r['jobs_per_s'], 1, 1)} jobs/s enqueue-to-done"
        if r.get("steady_jobs_per_s") and key != "default":
            text += f", {spread(r['steady_jobs_per_s'], 1, 2)} jobs/s sustained"
        return text + f" (`serve --mode {r['mode']} --workers {cfg['workers']} {opts}`)"

    return [
        f"job fetching, {cfg['workers']} workers, 0.5 s poll",
        "1 job per poll: ~2 jobs/s",
        cell("legacy"),
        verdict(v["fetch_legacy"]),
        "up to max concurrency per poll: ~10 jobs/s (5x)",
        "poll-only: " + cell("optimized") + "; **mpqueue default (wake-ups)**: " + cell("default"),
        verdict(v["fetch_optimized"]),
    ]


def _ops_stable(res: dict[str, Any]) -> bool:
    rows = [res["list"][m] for m in MODES]
    rows += [p for m in MODES for p in res["poll"][m].values()]
    return all(r["ops_all_equal"] for r in rows)
