"""Periodic schedules on LMDB: ``schedules`` holds each schedule's row (JSON,
``mpqueue.schedules``), ``schedule_due`` the active ones by next due time, so a fire
reads the due entries and nothing else.

Every function runs inside the caller's transaction. A fire is one write transaction:
LMDB has one writer at a time, so the row read there is the row written over, and the
slot's jobs commit with it (``write_jobs``, the store's own batch insert); a second
server's fire, after this commit, reads the advanced row and finds nothing due.

A row that cannot be decoded reads as missing: a fire drops its due entry (it would be
read on every fire otherwise) and the next server that declares that name writes it
anew. A due entry whose row disagrees (missing, inactive, another due time) is dropped
the same way: the index heals itself instead of stopping a server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ...errors import CorruptRecord
from ...records import JobRecord
from ...schedules import (
    Live,
    ScheduleRow,
    ScheduleSpec,
    declared,
    decode_row,
    encode_row,
    paused,
    resumed,
    retired,
)
from ..base import CheckReport, Fired, FirePlan, no_schedule
from . import keys
from .env import Tx

WriteJobs = Callable[[Tx, Sequence[JobRecord]], None]


def load(tx: Tx, name: str) -> ScheduleRow | None:
    raw = tx.get(keys.DB_SCHEDULES, keys.schedule_key(name))
    if raw is None:
        return None
    try:
        return decode_row(raw)
    except CorruptRecord:
        return None


def put(tx: Tx, row: ScheduleRow, old: ScheduleRow | None) -> None:
    """Write ``row`` over ``old`` (as read in this transaction), moving its due entry."""
    if old is not None and old.active:
        tx.delete(keys.DB_SCHEDULE_DUE, keys.schedule_due_key(old.next_due_ms, old.name))
    if row.active:
        tx.put(keys.DB_SCHEDULE_DUE, keys.schedule_due_key(row.next_due_ms, row.name), b"")
    tx.put(keys.DB_SCHEDULES, keys.schedule_key(row.name), encode_row(row))


def declare(
    tx: Tx, specs: Sequence[ScheduleSpec], server_id: str, now_ms: int, live: Live
) -> list[ScheduleRow]:
    rows = []
    for spec in specs:
        old = load(tx, spec.name)
        row = declared(old, spec, server_id, now_ms, live)
        put(tx, row, old)
        rows.append(row)
    return rows


def fire(tx: Tx, now_ms: int, plan: FirePlan, limit: int, write_jobs: WriteJobs) -> Fired:
    due = []
    for key, _ in tx.scan(keys.DB_SCHEDULE_DUE, stop=keys.schedule_due_bound(now_ms), values=False):
        due.append(key)
        if len(due) >= limit:
            break
    fired = Fired(rows=len(due))
    for key in due:  # read first, written after: the scan's cursor stays valid
        due_ms, name = keys.decode_schedule_due_key(key)
        row = load(tx, name)
        if row is None or not row.active or row.next_due_ms != due_ms:
            tx.delete(keys.DB_SCHEDULE_DUE, key)  # stale (see the module docstring)
            continue
        firing = plan(row)
        if firing is None:
            fired.skipped.append(row)
            continue
        if firing.jobs:
            write_jobs(tx, firing.jobs)
        put(tx, firing.row, row)
        fired.wrote(firing)
    first = tx.scan(keys.DB_SCHEDULE_DUE, keys.schedule_due_bound(now_ms), values=False)
    fired.earliest(next((keys.decode_schedule_due_key(k)[0] for k, _ in first), None))
    return fired


def retire(tx: Tx, expected: Mapping[str, tuple[str, ...]]) -> list[str]:
    done = []
    for name, declarers in expected.items():
        row = load(tx, name)
        if row is not None and row.active and row.declarers == declarers:
            put(tx, retired(row), row)
            done.append(name)
    return done


def rows(tx: Tx) -> list[ScheduleRow]:
    found = []
    for _, raw in tx.scan(keys.DB_SCHEDULES):
        try:
            found.append(decode_row(raw))
        except CorruptRecord:
            continue  # reads as missing (see the module docstring)
    return found


def set_paused(tx: Tx, name: str, pause: bool, now_ms: int) -> bool:
    row = load(tx, name)
    if row is None:
        raise no_schedule(name)
    if row.paused == pause:
        return False
    new = paused(row) if pause else resumed(row, now_ms)
    put(tx, new, row)
    return True


def next_due(tx: Tx) -> int | None:
    first = tx.first_key(keys.DB_SCHEDULE_DUE)
    return None if first is None else keys.decode_schedule_due_key(first)[0]


def check(tx: Tx, report: CheckReport) -> None:
    """``mpqueue check``'s rules for schedules: every row decodes, and the due index
    holds exactly the active rows, each under its own next due time."""
    expected = set()
    for key, raw in tx.scan(keys.DB_SCHEDULES):
        name = key.decode("utf-8", "replace")
        try:
            row = decode_row(raw)
        except CorruptRecord as exc:
            report.corrupt.append(f"schedule {name}: the entry cannot be decoded ({exc})")
            continue
        if row.active:
            expected.add(keys.schedule_due_key(row.next_due_ms, row.name))
    found = {key for key, _ in tx.scan(keys.DB_SCHEDULE_DUE, values=False)}
    report.inconsistent += [
        f"schedule {keys.decode_schedule_due_key(k)[1]} is active but not in schedule_due"
        for k in sorted(expected - found)
    ]
    report.inconsistent += [
        f"schedule_due names {keys.decode_schedule_due_key(k)[1]}, which is not active at that time"
        for k in sorted(found - expected)
    ]
