"""Metrics benchmark (issue 14): what a server's Prometheus endpoint costs.

    python -m bench.metrics_bench [--jobs N] [--rounds N] [--queued N] [--out FILE.json]

Rows, measured in this one run on fresh durable LMDB stores:

  drain    ``serve --workers 2`` drains ``--jobs`` no-op jobs (``map``, timed from the
           enqueue to the last one done), once with ``--metrics-port`` and a scraper
           reading the endpoint every second, once without metrics; the two kinds
           alternate, ``--rounds`` times each. The ratio is the median of the rounds'
           own ratios (each round's two runs ran minutes apart at most, so a machine
           whose speed drifts between rounds moves both).
  scrape   a server with ``--metrics-port`` over a store holding ``--queued`` jobs,
           the time of one HTTP GET of the endpoint, 30 times, p50 and max: once with
           them scheduled (due in an hour: queued, never run), once ready over four
           priorities with the whole queue paused (so nothing runs them and the scrape
           looks for the oldest ready job among them). ``--scrape-only`` skips the
           drain rounds.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from typing import Any

from bench.common import md_table, save_json, verdict
from bench.serve_bench import (
    DRAIN_POLL_S,
    Server,
    _add_scheduled,
    percentiles,
    temp_store,
    wait_until,
)
from bench.store_bench import machine
from bench.workflow_bench import alternate, log
from mpqueue import Queue
from mpqueue.task import TaskOptions

NOOP = "bench.jobs.noop"
KINDS = ("off", "scraped")
DRAIN_TARGET = 0.97  # with metrics and a scraper, at least this share of the throughput
SCRAPE_TARGET_MS = 50.0
SCRAPES = 30


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return bytes(reply.read())


class Scraper:
    """Reads ``url`` every ``every_s`` seconds in a thread until stopped."""

    def __init__(self, url: str, every_s: float = 1.0):
        self.url, self.every_s = url, every_s
        self.stop = threading.Event()
        self.scrapes = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            _get(self.url)
            self.scrapes += 1
            self.stop.wait(self.every_s)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)


def drain_round(kind: str, jobs: int) -> float:
    port = _free_port()
    extra = ("--metrics-port", str(port)) if kind == "scraped" else ()
    with temp_store() as path, Server(path, 2, *extra), Queue(path) as queue:
        scraper = Scraper(f"http://127.0.0.1:{port}/metrics") if kind == "scraped" else None
        try:
            task = queue.task_by_name(NOOP)
            started = time.perf_counter()
            for start in range(0, jobs, 10_000):
                task.map([(i,) for i in range(start, min(jobs, start + 10_000))])
            wait_until(
                lambda: queue.stats()["done"] >= jobs, 300, "the jobs to be done", DRAIN_POLL_S
            )
            return time.perf_counter() - started
        finally:
            if scraper is not None:
                scraper.close()


def bench_scrape(queued: int, state: str) -> dict[str, Any]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with temp_store() as path:
        if state == "scheduled":
            _add_scheduled(path, queued)
        else:
            _add_ready_paused(path, queued)
        with Server(path, 2, "--metrics-port", str(port)):
            wait_until(lambda: b"mpqueue_jobs" in _get(url), 30, "the endpoint")
            times = []
            for _ in range(SCRAPES):
                began = time.perf_counter()
                body = _get(url)
                times.append((time.perf_counter() - began) * 1000)
            assert _sample(body, "mpqueue_jobs", state=state) == queued, body[:2000]
            if state == "ready":
                assert _sample(body, "mpqueue_oldest_ready_age_seconds") > 0, body[:2000]
    return {"queued": queued, "state": state, "ms": percentiles(times)}


def _add_ready_paused(path: str, count: int) -> None:
    with Queue(path) as queue:
        queue.pause(None)
        for i in range(0, count, 10_000):
            recs = [
                queue._record(NOOP, b"\x01", TaskOptions(priority=(i + j) % 4))
                for j in range(min(10_000, count - i))
            ]
            queue.store.add(recs)


def _sample(body: bytes, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return -1.0


def run(jobs: int, rounds: int, queued: int) -> dict[str, Any]:
    scrapes = [bench_scrape(queued, state) for state in ("scheduled", "ready")]
    if rounds == 0:
        return {"jobs": jobs, "jobs_s": None, "round_ratios": [], "scrape": scrapes}
    found: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for r, kind in alternate(KINDS, rounds):
        found[kind].append(jobs / drain_round(kind, jobs))
        log(f"  round {r} {kind}: {found[kind][-1]:,.0f} jobs/s")
    pairs = [scraped / off for off, scraped in zip(found["off"], found["scraped"])]
    return {
        "jobs": jobs,
        "jobs_s": found,
        "round_ratios": pairs,
        "ratio": statistics.median(pairs),
        "scrape": scrapes,
    }


def report(result: dict[str, Any]) -> str:
    rows = [] if result["jobs_s"] is None else _drain_rows(result)
    for scrape in result["scrape"]:
        p50 = scrape["ms"]["p50"]
        rows.append([
            f"one scrape, {scrape['queued']:,} {scrape['state']} jobs (p50 / max of {SCRAPES})",
            f"{p50:.1f} / {scrape['ms']['max']:.1f} ms", f"<= {SCRAPE_TARGET_MS:.0f} ms",
            verdict(p50 <= SCRAPE_TARGET_MS),
        ])  # fmt: skip
    head = f"lmdb, {result['machine']}, {result['date']}"
    return head + "\n\n" + md_table(["row", "measured", "target", ""], rows)


def _drain_rows(result: dict[str, Any]) -> list[list[str]]:
    jobs_s = result["jobs_s"]
    return [
        [f"drain {result['jobs']:,} no-op jobs, metrics off (median)",
         f"{statistics.median(jobs_s['off']):,.0f} jobs/s", "", ""],
        ["the same, --metrics-port and a scrape a second (median)",
         f"{statistics.median(jobs_s['scraped']):,.0f} jobs/s", "", ""],
        ["scraped / off, each round (median)",
         " / ".join(f"{r:.2f}" for r in result["round_ratios"]) + f" ({result['ratio']:.3f})",
         f">= {DRAIN_TARGET}",
         verdict(result["ratio"] >= DRAIN_TARGET)],
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs drained per round [20000]")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each kind [3]")
    parser.add_argument("--scrape-only", action="store_true", help="only the scrape rows")
    parser.add_argument("--queued", type=int, default=1_000_000, help="jobs queued [1000000]")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    opts = parser.parse_args()
    result = {
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        **run(opts.jobs, 0 if opts.scrape_only else opts.rounds, opts.queued),
    }
    print(report(result))
    save_json(result, opts.out)


if __name__ == "__main__":
    sys.exit(main())
