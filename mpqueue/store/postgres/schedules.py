"""Periodic schedules on PostgreSQL: ``mpqueue_schedules``, one row per schedule
(``mpqueue.schedules.ScheduleRow`` as columns), with the partial index
``mpqueue_schedules_due`` on ``next_due_ms`` over the active rows, so a fire reads the
due rows and nothing else.

A fire is one transaction (READ COMMITTED): the due rows are taken ``FOR UPDATE SKIP
LOCKED`` (a row another server is firing is skipped, not waited for), and each fired
row is advanced by a conditional update, ``WHERE last_slot_ms = <the slot read>``,
before its jobs are inserted in the same transaction: a second writer's update finds
the slot taken, changes no row, and writes no job.

Declaring is rare (a server's start) and serialized by a transaction-scoped advisory
lock, so two servers declaring one new schedule at once both end up among its
declarers (neither insert overwrites the other's).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ...records import JobRecord
from ...schedules import Live, ScheduleRow, ScheduleSpec, declared, paused, resumed
from ..base import Fired, FirePlan, no_schedule
from .schema import LOCK_CLASS
from .session import Query

_COLUMNS = (
    "name, cron, every_ms, tz, catch_up, last_slot_ms, next_due_ms, paused, retired, "
    "last_fired_ms, last_job_id, declared_at_ms, declarers"
)
_ACTIVE = "NOT paused AND NOT retired"

SQL = {
    "schedules_lock": (
        "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || '.schedules'))"
    ),
    "schedules_of": f"SELECT {_COLUMNS} FROM {{schedules}} WHERE name = ANY(%s) FOR UPDATE",
    "schedule_put": f"""INSERT INTO {{schedules}} ({_COLUMNS})
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (name) DO UPDATE SET cron = excluded.cron, every_ms = excluded.every_ms,
            tz = excluded.tz, catch_up = excluded.catch_up,
            last_slot_ms = excluded.last_slot_ms, next_due_ms = excluded.next_due_ms,
            paused = excluded.paused, retired = excluded.retired,
            last_fired_ms = excluded.last_fired_ms, last_job_id = excluded.last_job_id,
            declared_at_ms = excluded.declared_at_ms, declarers = excluded.declarers""",
    "schedules_due": f"""SELECT {_COLUMNS} FROM {{schedules}}
        WHERE next_due_ms <= %s AND {_ACTIVE}
        ORDER BY next_due_ms LIMIT %s FOR UPDATE SKIP LOCKED""",
    # The compare-and-set of a fire: only over the slot the fire read.
    "schedule_advance": f"""UPDATE {{schedules}} SET last_slot_ms = %s, next_due_ms = %s,
            last_fired_ms = %s, last_job_id = %s, cron = %s, every_ms = %s, tz = %s,
            catch_up = %s
        WHERE name = %s AND last_slot_ms = %s AND {_ACTIVE}""",
    "schedules_next_after": f"""SELECT min(next_due_ms) FROM {{schedules}}
        WHERE next_due_ms > %s AND {_ACTIVE}""",
    "schedules_next": f"SELECT min(next_due_ms) FROM {{schedules}} WHERE {_ACTIVE}",
    "schedule_retire": f"""UPDATE {{schedules}} SET retired = true, declarers = '{{{{}}}}'
        WHERE name = %s AND declarers = %s::text[] AND {_ACTIVE}""",
    "schedules_all": f"SELECT {_COLUMNS} FROM {{schedules}} ORDER BY name",
    "schedule_locked": f"SELECT {_COLUMNS} FROM {{schedules}} WHERE name = %s FOR UPDATE",
    "schedule_paused": """UPDATE {schedules} SET paused = %s, last_slot_ms = %s,
        next_due_ms = %s WHERE name = %s""",
}

WriteJobs = Callable[[Query, Sequence[JobRecord]], None]


def _row(values: tuple[Any, ...]) -> ScheduleRow:
    (name, cron, every_ms, tz, catch_up, last, due, is_paused, is_retired) = values[:9]
    fired_ms, job_id, declared_at, declarers = values[9:]
    return ScheduleRow(
        name=name,
        cron=cron,
        every_ms=None if every_ms is None else int(every_ms),
        tz=tz,
        catch_up=catch_up,
        last_slot_ms=int(last),
        next_due_ms=int(due),
        paused=bool(is_paused),
        retired=bool(is_retired),
        last_fired_ms=None if fired_ms is None else int(fired_ms),
        last_job_id=job_id,
        declared_at_ms=int(declared_at),
        declarers=tuple(declarers or ()),
    )


def _values(row: ScheduleRow) -> tuple[Any, ...]:
    return (
        row.name,
        row.cron,
        row.every_ms,
        row.tz,
        row.catch_up,
        row.last_slot_ms,
        row.next_due_ms,
        row.paused,
        row.retired,
        row.last_fired_ms,
        row.last_job_id,
        row.declared_at_ms,
        list(row.declarers),
    )


def declare(
    q: Query,
    sql: dict[str, str],
    specs: Sequence[ScheduleSpec],
    server_id: str,
    now_ms: int,
    live: Live,
) -> list[ScheduleRow]:
    q.rows(sql["schedules_lock"], (LOCK_CLASS,))
    found = {r.name: r for r in map(_row, q.rows(sql["schedules_of"], ([s.name for s in specs],)))}
    rows = [declared(found.get(s.name), s, server_id, now_ms, live) for s in specs]
    for row in rows:
        q.write(sql["schedule_put"], _values(row))
    return rows


def fire(
    q: Query, sql: dict[str, str], now_ms: int, plan: FirePlan, limit: int, write_jobs: WriteJobs
) -> Fired:
    due = [_row(values) for values in q.rows(sql["schedules_due"], (now_ms, limit))]
    fired = Fired(rows=len(due))
    for row in due:
        firing = plan(row)
        if firing is None:
            fired.skipped.append(row)
            continue
        new = firing.row
        advanced = q.write(
            sql["schedule_advance"],
            (
                new.last_slot_ms,
                new.next_due_ms,
                new.last_fired_ms,
                new.last_job_id,
                new.cron,
                new.every_ms,
                new.tz,
                new.catch_up,
                row.name,
                row.last_slot_ms,
            ),
        )
        if advanced != 1:
            continue  # the slot is taken: nothing of it is written
        if firing.jobs:
            write_jobs(q, firing.jobs)
        fired.wrote(firing)
    (after,) = q.one(sql["schedules_next_after"], (now_ms,)) or (None,)
    fired.earliest(None if after is None else int(after))
    return fired


def retire(q: Query, sql: dict[str, str], expected: Mapping[str, tuple[str, ...]]) -> list[str]:
    return [
        name
        for name, declarers in expected.items()
        if q.write(sql["schedule_retire"], (name, list(declarers))) == 1
    ]


def rows(q: Query, sql: dict[str, str]) -> list[ScheduleRow]:
    return [_row(values) for values in q.rows(sql["schedules_all"])]


def set_paused(q: Query, sql: dict[str, str], name: str, pause: bool, now_ms: int) -> bool:
    found = q.one(sql["schedule_locked"], (name,))
    if found is None:
        raise no_schedule(name)
    row = _row(found)
    if row.paused == pause:
        return False
    new = paused(row) if pause else resumed(row, now_ms)
    q.write(sql["schedule_paused"], (new.paused, new.last_slot_ms, new.next_due_ms, name))
    return True


def next_due(q: Query, sql: dict[str, str]) -> int | None:
    found = q.one(sql["schedules_next"])
    return None if found is None or found[0] is None else int(found[0])
