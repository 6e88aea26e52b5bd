"""The state changes a dashboard page can ask for, each checked before it writes.

Each returns a one-line message for the page to show. Bad input raises ConfigError
(one line, naming the problem) before the store is touched.
"""

from __future__ import annotations

import datetime as dt
import math

from ..errors import ConfigError, JobNotFound
from ..records import JobState, is_job_id, now_ms
from ..store.base import Store

REDRIVE_BATCH = 500  # dead jobs requeued per transaction by "requeue all of a task"
REDRIVE_MAX_DAYS = 366  # a re-drive further ahead than this is a typo


def job_ids(values: list[str]) -> list[str]:
    if not values:
        raise ConfigError("no job selected")
    bad = [v for v in values if not is_job_id(v)]
    if bad:
        raise ConfigError(f"not a job id: {bad[0][:80]!r}")
    return list(dict.fromkeys(values))


def run_at(when: str, at: str, minutes: str, now: int, tz: dt.tzinfo | None = None) -> int | None:
    """When a re-drive runs: ``when`` is "now", "in" (``minutes`` from now) or "at"
    (``at``: "HH:MM", the next such time of day, or "YYYY-MM-DDTHH:MM"; in ``tz``,
    default UTC). None: now."""
    zone = tz or dt.timezone.utc
    if when in ("", "now"):
        return None
    if when == "in":
        try:
            value = float(minutes)
        except ValueError:
            raise ConfigError(f"minutes must be a number; got {minutes[:40]!r}") from None
        if not math.isfinite(value) or not 0 < value <= REDRIVE_MAX_DAYS * 1440:
            raise ConfigError(f"minutes must be above 0 and at most {REDRIVE_MAX_DAYS} days")
        return now + int(value * 60_000)
    if when == "at":
        return _at(at.strip(), now, zone)
    raise ConfigError(f"when must be 'now', 'in' or 'at'; got {when[:40]!r}")


def _at(text: str, now: int, zone: dt.tzinfo) -> int:
    current = dt.datetime.fromtimestamp(now / 1000, zone)
    try:
        if "T" in text or "-" in text:
            moment = dt.datetime.fromisoformat(text)
            moment = moment if moment.tzinfo else moment.replace(tzinfo=zone)
        else:
            clock = dt.time.fromisoformat(text)
            moment = current.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
            if moment <= current:
                moment += dt.timedelta(days=1)  # "at 02:00": the next 02:00
    except ValueError:
        raise ConfigError(f"a time is HH:MM or YYYY-MM-DDTHH:MM; got {text[:40]!r}") from None
    at_ms = int(moment.timestamp() * 1000)
    if at_ms - now > REDRIVE_MAX_DAYS * 86_400_000:
        raise ConfigError(f"a re-drive is at most {REDRIVE_MAX_DAYS} days ahead")
    return at_ms


def _said(count: int, at_ms: int | None) -> str:
    jobs = f"{count} job{'s' if count != 1 else ''}"
    if at_ms is None:
        return f"requeued {jobs} now"
    stamp = dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    return f"requeued {jobs} to run at {stamp} UTC"


def requeue(store: Store, ids: list[str], at_ms: int | None) -> str:
    report = store.requeue_dead_many(job_ids(ids), now_ms(), at_ms)
    message = _said(len(report.requeued), at_ms)
    if report.refused:
        first = next(iter(report.refused.values()))
        message += f"; {len(report.refused)} left as they were ({first})"
    return message


def requeue_task(store: Store, name: str, at_ms: int | None) -> str:
    """Every dead job of task ``name``, page by page (one transaction a page)."""
    if not name:
        raise ConfigError("no task named")
    done = 0
    before = None
    while True:
        page = store.browse(state=JobState.DEAD, name=name, before=before, limit=REDRIVE_BATCH)
        if page.jobs:
            done += len(
                store.requeue_dead_many([r.id for r in page.jobs], now_ms(), at_ms).requeued
            )
        if page.next is None:
            return _said(done, at_ms) + f" of task {name}"
        before = page.next


def delete(store: Store, ids: list[str]) -> str:
    gone = sum(store.delete(job_id) for job_id in job_ids(ids))
    return f"deleted {gone} job{'s' if gone != 1 else ''}"


def cancel(store: Store, job_id: str) -> str:
    report = store.cancel(job_ids([job_id]), "cancelled from the dashboard", now_ms())
    if report.cancelled:
        return "cancelled"
    if report.requested:
        return "cancel requested: its server stops it"
    return "nothing to cancel: the job has ended"


def purge(store: Store) -> str:
    gone = store.purge_dead()
    return f"purged {gone} dead job{'s' if gone != 1 else ''}"


def requeue_one(store: Store, job_id: str, at_ms: int | None) -> str:
    try:
        store.requeue_dead(job_ids([job_id])[0], now_ms(), at_ms)
    except JobNotFound:
        raise ConfigError(f"no job with id {job_id!r}") from None
    return _said(1, at_ms)
