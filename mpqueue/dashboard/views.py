"""What each dashboard page shows, read from the store: plain values for the templates.

Every read is bounded whatever the store holds: counts come from ``stats``/``gauges``
(index sizes), lists from ``browse`` pages, the chart from the depth history.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from ..history import HISTORY_EVERY_S, Point
from ..identity import server_dead
from ..previews import shown
from ..records import FINISHED_STATES, JobRecord, JobState, now_ms
from ..store.base import Page, Store

PAGE_SIZE = 50
CHART_SPAN_MS = 3_600_000  # the overview's chart: the last hour
CHART_W, CHART_H = 600, 140
STATES = [state.value for state in JobState]


def when(ms: int | None) -> str:
    """A time as the dashboard prints it (UTC, to the second)."""
    if not ms:
        return "-"
    stamp = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def age(ms: int | None, now: int) -> str:
    """How long ago (or, negative, how far ahead) ``ms`` is: 4s, 3m, 2h, 5d."""
    if ms is None:
        return "-"
    seconds = (now - ms) / 1000
    sign, seconds = ("in ", -seconds) if seconds < 0 else ("", seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{sign}{int(seconds // size)}{unit}"
    return f"{sign}{int(seconds)}s"


def run_time(rec: JobRecord, claimed_ms: int | None, now: int) -> str:
    if rec.state is JobState.PROCESSING and claimed_ms:
        return f"{(now - claimed_ms) / 1000:.1f}s"
    return "-"


@dataclass
class Row:
    """One job in a list."""

    id: str
    name: str
    state: str
    queue: str
    attempts: int
    age: str
    run_time: str
    progress: str
    preview: str
    error: str


def rows(store: Store, jobs: list[JobRecord]) -> list[Row]:
    now = now_ms()
    running = [r.id for r in jobs if r.state is JobState.PROCESSING]
    # the claims (one entry per running job in the store) only for a page showing some
    claimed = {c.job_id: c.claimed_at_ms for c in store.claims()} if running else {}
    reports = dict(zip(running, store.progress(running))) if running else {}
    out = []
    for rec in jobs:
        report = reports.get(rec.id)
        progress = "-"
        if report is not None:
            progress = f"{report.done:g}" + (f"/{report.total:g}" if report.total else "")
        out.append(
            Row(
                id=rec.id,
                name=rec.name,
                state=rec.state.value,
                queue=rec.queue,
                attempts=rec.attempts,
                age=age(rec.created_at_ms, now),
                run_time=run_time(rec, claimed.get(rec.id), now),
                progress=progress,
                preview=shown(rec.preview),
                error=str(rec.errors[-1]) if rec.errors else "",
            )
        )
    return out


# ---- overview -----------------------------------------------------------------------
def overview(store: Store) -> dict[str, Any]:
    now = now_ms()
    gauges = store.gauges()
    history = store.history(now - CHART_SPAN_MS, now)
    servers = store.servers()
    alive = sum(not server_dead(sid, info, now) for sid, info in servers.items())
    oldest = gauges.oldest_ready_age_s(now)
    return {
        "counts": gauges.counts,
        "states": STATES,
        "queues": sorted(gauges.queues.items()),
        "oldest_ready": "-" if oldest is None else f"{oldest:.1f}s",
        "servers_alive": alive,
        "servers_total": len(servers),
        "chart": chart(history, now),
        "rates": per_minute(history),
        "paused": gauges.paused,
    }


def per_minute(history: list[Point]) -> dict[str, str]:
    """Finished and failed jobs per minute over the last minute the history covers: the
    growth of the done and dead counts between its samples (a retention sweep in between
    reads as none)."""
    if len(history) < 2:
        return {"done": "-", "dead": "-"}
    last_at, last = history[-1]
    start = next((p for p in history if p[0] >= last_at - 60_000), history[0])
    minutes = max((last_at - start[0]) / 60_000, HISTORY_EVERY_S / 60)
    return {
        key: f"{max(0, last.get(key, 0) - start[1].get(key, 0)) / minutes:.1f}"
        for key in ("done", "dead")
    }


@dataclass
class Chart:
    """The depth chart as SVG polylines (drawn by the template, no script)."""

    lines: dict[str, str] = field(default_factory=dict)  # state -> "x,y x,y ..."
    peak: int = 0
    since: str = ""
    until: str = ""


CHART_STATES = ("ready", "scheduled", "processing", "dead")


def chart(history: list[Point], now: int) -> Chart:
    drawn = Chart(since=when(now - CHART_SPAN_MS), until=when(now))
    if not history:
        return drawn
    drawn.peak = max(1, *(max(c.get(s, 0) for s in CHART_STATES) for _, c in history))
    for state in CHART_STATES:
        points = []
        for at, counts in history:
            x = (at - (now - CHART_SPAN_MS)) / CHART_SPAN_MS * CHART_W
            y = CHART_H - counts.get(state, 0) / drawn.peak * CHART_H
            points.append(f"{max(0.0, x):.1f},{y:.1f}")
        drawn.lines[state] = " ".join(points)
    return drawn


# ---- jobs ---------------------------------------------------------------------------
def jobs_page(
    store: Store, state: str | None, name: str | None, queue: str | None, before: str | None
) -> tuple[list[Row], Page]:
    page = store.browse(
        state=None if state is None else JobState(state),
        name=name,
        queue=queue,
        before=before,
        limit=PAGE_SIZE,
    )
    return rows(store, page.jobs), page


@dataclass
class Event:
    at: str
    what: str


def job(store: Store, job_id: str) -> dict[str, Any] | None:
    rec = store.get(job_id)
    if rec is None:
        return None
    now = now_ms()
    claim = next((c for c in store.claims() if c.job_id == job_id), None)
    (report,) = store.progress([job_id])
    return {
        "rec": rec,
        "state": rec.state.value,
        "preview": shown(rec.preview),
        "result_preview": shown(rec.result_preview) if rec.state is JobState.DONE else None,
        "errors": list(rec.errors),
        "timeline": timeline(rec, claim.claimed_at_ms if claim else None),
        "depends_on": list(rec.depends_on),
        "dependents": store.dependents(job_id),
        "claim": claim,
        "progress": report,
        "run_time": run_time(rec, claim.claimed_at_ms if claim else None, now),
        "finished": rec.state in FINISHED_STATES,
        "when": when,
    }


def timeline(rec: JobRecord, claimed_ms: int | None) -> list[Event]:
    """Its states as far as the record tells: created, each failed attempt, claimed (if
    running), due (if waiting for a time), finished."""
    events = [Event(when(rec.created_at_ms), "created")]
    for error in rec.errors:
        label = f"attempt {error.attempt}: {error.kind}" if error.attempt else error.kind
        events.append(Event(when(error.at_ms), f"{label} ({error.type})"))
    if rec.state is JobState.SCHEDULED:
        events.append(Event(when(rec.run_at_ms), "due"))
    if claimed_ms:
        events.append(Event(when(claimed_ms), "claimed (running)"))
    if rec.finished_at_ms:
        events.append(Event(when(rec.finished_at_ms), rec.state.value))
    return events


# ---- servers and periodic -----------------------------------------------------------
@dataclass
class Server:
    id: str
    host: str
    pid: Any
    heartbeat: str
    alive: bool
    children: list[tuple[int, str]]
    jobs: list[tuple[str, str, str]]  # (job id, child or "", running for)
    queues: str = "all"  # the queues it serves (serve --queues), in its order


def servers(store: Store) -> list[Server]:
    now = now_ms()
    claims = store.claims()
    out = []
    for server_id, info in sorted(store.servers().items()):
        beat = info.get("heartbeat_ms")
        held = [
            (c.job_id, str(c.child_pid or ""), age(c.claimed_at_ms, now))
            for c in claims
            if c.server_id == server_id
        ]
        children = [
            (pid, age(int(started * 1000), now)) for pid, started in info.get("children", ())
        ]
        out.append(
            Server(
                id=server_id,
                host=str(info.get("host", "?")),
                pid=info.get("pid", "?"),
                heartbeat=age(beat, now) if isinstance(beat, int) and beat else "never",
                alive=not server_dead(server_id, info, now),
                children=children,
                jobs=held,
                queues=", ".join(map(str, info.get("queues") or ())) or "all",
            )
        )
    return out


def periodic(store: Store) -> list[dict[str, Any]]:
    now = now_ms()
    return [
        {
            "name": row.name,
            "spec": row.cron or f"every {row.every_ms / 1000:g}s" if row.every_ms else row.cron,
            "tz": row.tz,
            "status": "retired" if row.retired else "paused" if row.paused else "active",
            "next": f"{when(row.next_due_ms)} ({age(row.next_due_ms, now)})",
            "last": when(row.last_fired_ms),
            "last_job": row.last_job_id,
        }
        for row in store.schedules()
    ]
