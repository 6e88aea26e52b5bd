"""What ``mpqueue top`` shows, as a plain snapshot (no terminal library here).

Every figure comes from reads the store already offers, each capped, so a frame costs
the same on a store of a hundred jobs or of millions:

- depth by state, what is paused and the oldest ready job's age: ``gauges()`` (one
  read of a bounded size);
- the running jobs: ``claims()``, the oldest ``RUNNING_MAX`` of them read by
  ``get_many`` (task name, times) and ``progress``;
- the last failures: the ``DEAD_READ_MAX`` newest dead jobs (``newest_dead``: by id,
  which begins with the creation time; no store keeps dead jobs by time of death),
  of which the ``FAILURES_SHOWN`` that died last are shown. A job created long before
  those and dead only now is missed;
- jobs/s done and failed over the last minute: the change of the done and dead counts
  between the frames of that minute (no store keeps jobs by finish time behind its
  interface, and a scan of the done jobs would grow with the store). One frame has no
  rate: None ("n/a");
- start latency (enqueue, or the scheduled time, to claim): of the claims made in the
  last minute that a frame saw; run time (claim to finish): of the claims seen that
  ended since, their records read (at most ``ENDED_READ_MAX`` a frame). Jobs that start
  and end between two frames are not seen; one frame has no run time.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from .records import Claim, JobRecord, JobState, now_ms
from .store import Store

WINDOW_MS = 60_000  # the rates and percentiles cover the last minute
RUNNING_MAX = 50  # running jobs read and shown per frame (the oldest claims)
DEAD_READ_MAX = 100  # newest dead jobs read per frame to find the last failures
FAILURES_SHOWN = 5
ENDED_READ_MAX = 200  # records of claims gone since the last frame read per frame


@dataclass
class Running:
    job_id: str
    task: str
    server: str
    child_pid: int | None  # known only for a job handed straight to a child
    claimed_at_ms: int
    elapsed_s: float
    progress: dict[str, Any] | None


@dataclass
class Failure:
    job_id: str
    task: str
    finished_at_ms: int | None
    error: str


@dataclass
class Spread:
    """p50 and p95 (nearest rank) of ``count`` observations, in seconds."""

    count: int
    p50_s: float
    p95_s: float


@dataclass
class Snapshot:
    at_ms: int
    depth: dict[str, int]
    paused: dict[str, Any]
    oldest_ready_age_s: float | None  # None: no job ready
    done_per_s: float | None  # None: one frame, no rate yet
    failed_per_s: float | None
    run_time: Spread | None
    start_latency: Spread | None
    running_total: int
    running: list[Running] = field(default_factory=list)
    # {queue: {"ready": n, "processing": m}} (``Gauges.queues``)
    queues: dict[str, dict[str, int]] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def spread(values: list[float]) -> Spread | None:
    if not values:
        return None
    ordered = sorted(values)

    def rank(p: float) -> float:
        return ordered[max(0, math.ceil(p * len(ordered)) - 1)]

    return Spread(len(ordered), rank(0.50), rank(0.95))


def _ready_at_ms(rec: JobRecord) -> int:
    """When a job could first have started: enqueued, or due if scheduled later."""
    return max(rec.created_at_ms, rec.run_at_ms)


class Watcher:
    """Frames of one store over time: keeps the last minute of counts and of the claims
    it saw, for the rates and percentiles (one frame alone has start latencies only)."""

    def __init__(self, store: Store):
        self.store = store
        self.counts: deque[tuple[int, int, int]] = deque()  # (at, done, dead)
        self.latencies: dict[str, tuple[int, float]] = {}  # job -> (claimed at, latency s)
        self.run_times: deque[tuple[int, float]] = deque()  # (finished at, run time s)
        self.seen: dict[str, int] = {}  # claims of the last frame: job -> claimed at

    def frame(self, at_ms: int | None = None) -> Snapshot:
        now = now_ms() if at_ms is None else at_ms
        gauges = self.store.gauges()
        depth = gauges.counts
        claims = sorted(self.store.claims(), key=lambda c: (c.claimed_at_ms, c.job_id))
        running = self._running(claims, now)
        self._note_ended({c.job_id for c in claims}, now)
        self.seen = {c.job_id: c.claimed_at_ms for c in claims}
        done_rate, failed_rate = self._rates(now, depth)
        return Snapshot(
            at_ms=now,
            depth=depth,
            paused=gauges.paused.as_dict(),
            oldest_ready_age_s=gauges.oldest_ready_age_s(now),
            queues=gauges.queues,
            done_per_s=done_rate,
            failed_per_s=failed_rate,
            run_time=spread([s for _, s in self.run_times]),
            start_latency=spread([s for _, s in self.latencies.values()]),
            running_total=len(claims),
            running=running,
            failures=self._failures(),
        )

    def _running(self, claims: list[Claim], now: int) -> list[Running]:
        shown = claims[:RUNNING_MAX]
        ids = [c.job_id for c in shown]
        records = self.store.get_many(ids)
        reports = self.store.progress(ids)
        out = []
        for claim, rec, report in zip(shown, records, reports):
            if rec is not None and claim.job_id not in self.latencies:
                latency = (claim.claimed_at_ms - _ready_at_ms(rec)) / 1000
                self.latencies[claim.job_id] = (claim.claimed_at_ms, max(0.0, latency))
            out.append(
                Running(
                    job_id=claim.job_id,
                    task=rec.name if rec is not None else "?",
                    server=claim.server_id,
                    child_pid=claim.child_pid or None,
                    claimed_at_ms=claim.claimed_at_ms,
                    elapsed_s=max(0, now - claim.claimed_at_ms) / 1000,
                    progress=None if report is None else report.as_dict(),
                )
            )
        self._forget_before(now - WINDOW_MS)
        return out

    def _note_ended(self, current: set[str], now: int) -> None:
        """Run times of the claims of the last frame that are gone and whose job ended."""
        gone = [job_id for job_id in self.seen if job_id not in current][:ENDED_READ_MAX]
        for rec in self.store.get_many(gone) if gone else []:
            if rec is None or rec.finished_at_ms is None:
                continue  # deleted, or put back / retried: no run to time
            if rec.state in (JobState.DONE, JobState.DEAD):
                run_s = max(0, rec.finished_at_ms - self.seen[rec.id]) / 1000
                self.run_times.append((rec.finished_at_ms, run_s))
        while self.run_times and self.run_times[0][0] < now - WINDOW_MS:
            self.run_times.popleft()

    def _forget_before(self, cutoff_ms: int) -> None:
        for job_id in [j for j, (at, _) in self.latencies.items() if at < cutoff_ms]:
            del self.latencies[job_id]

    def _rates(self, now: int, depth: dict[str, int]) -> tuple[float | None, float | None]:
        self.counts.append((now, depth.get("done", 0), depth.get("dead", 0)))
        while len(self.counts) > 2 and self.counts[0][0] < now - WINDOW_MS:
            self.counts.popleft()
        first, last = self.counts[0], self.counts[-1]
        span_s = (last[0] - first[0]) / 1000
        if span_s <= 0:
            return None, None
        # Expiry, purges and requeues lower the counts: never a negative rate.
        return (
            max(0, last[1] - first[1]) / span_s,
            max(0, last[2] - first[2]) / span_s,
        )

    def _failures(self) -> list[Failure]:
        dead = self.store.newest_dead(DEAD_READ_MAX)
        dead.sort(key=lambda r: (r.finished_at_ms or 0, r.id), reverse=True)
        return [
            Failure(
                job_id=rec.id,
                task=rec.name,
                finished_at_ms=rec.finished_at_ms,
                error=str(rec.errors[-1]) if rec.errors else "",
            )
            for rec in dead[:FAILURES_SHOWN]
        ]


def snapshot(store: Store, at_ms: int | None = None) -> Snapshot:
    """One frame: what ``mpqueue top --once`` prints."""
    return Watcher(store).frame(at_ms)
