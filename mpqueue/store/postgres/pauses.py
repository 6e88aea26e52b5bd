"""Pausing on PostgreSQL: ``mpqueue_pauses`` says what is paused (task names, and
``PAUSE_ALL`` for the whole queue); each job row's ``paused`` flag says whether its
task is paused, and the claim index holds only ready rows whose flag is false, so a
paused backlog is not in what claims read.

The flag's rule: ``pause``/``resume`` set it on the task's unfinished rows, a row
written from nowhere (a new job, a requeued dead one) reads it from ``mpqueue_pauses``
(``task_paused``), and every other change of state carries it along.

Concurrency (many hosts, READ COMMITTED): a row the pause's update cannot see (a job
added, or requeued from dead, by a transaction that began before the pause committed)
may be left unflagged; the claim also reads ``mpqueue_pauses`` (``CLAIMABLE``), so it
is never claimed, only stepped over until the resume. The other way cannot happen: a
writer that sees a pause locks its row (``FOR KEY SHARE``), so a resume's delete waits
for that writer and its update then sees the row it wrote.
"""

from __future__ import annotations

from ...pausing import PauseChange, Paused
from .session import Query

# The whole queue's row: no task is named "" (registry.check_name refuses it).
PAUSE_ALL = ""


def task_paused(name: str, *, lock: bool) -> str:
    """SQL: whether the task in column ``name`` is paused. One read of the empty
    table per statement while nothing is paused (an uncorrelated sublink: an init
    plan), a key lookup per row otherwise. ``lock``: for a row being written, lock the
    pause found (see the module's note)."""
    lookup = f"SELECT 1 FROM {{pauses}} p WHERE p.name = {name}"
    if lock:
        lookup += " FOR KEY SHARE"
    return f"CASE WHEN EXISTS (SELECT 1 FROM {{pauses}}) THEN EXISTS ({lookup}) ELSE false END"


# The claim's conditions besides ``state = 'ready' AND NOT paused`` (on rows ``j``): the
# whole-queue pause is a one-time filter, so a paused queue's claim reads no job.
CLAIMABLE = (
    f"NOT EXISTS (SELECT 1 FROM {{pauses}} WHERE name = '{PAUSE_ALL}') "
    f"AND NOT {task_paused('j.name', lock=False)}"
)

SQL = {
    "pause_add": "INSERT INTO {pauses} (name) VALUES (%s) ON CONFLICT DO NOTHING",
    "pause_remove": "DELETE FROM {pauses} WHERE name = %s",
    # Unfinished rows only: a finished job never becomes ready again but through a
    # requeue, which reads the pause itself.
    "pause_jobs": """UPDATE {jobs} SET paused = true WHERE name = %s AND NOT paused
        AND state IN ('waiting', 'scheduled', 'ready', 'processing')""",
    "resume_jobs": "UPDATE {jobs} SET paused = false WHERE name = %s AND paused",
    "pauses": "SELECT name FROM {pauses}",
    # ``check``: flagged rows of a task that is not paused would never be claimed.
    "check_paused": """SELECT id FROM {jobs} j WHERE paused
        AND state IN ('waiting', 'scheduled', 'ready', 'processing')
        AND NOT EXISTS (SELECT 1 FROM {pauses} p WHERE p.name = j.name) ORDER BY id""",
}


def pause(q: Query, sql: dict[str, str], name: str | None) -> PauseChange:
    changed = q.write(sql["pause_add"], (PAUSE_ALL if name is None else name,)) == 1
    if changed and name is not None:
        q.write(sql["pause_jobs"], (name,))
    return PauseChange(name, True, changed)


def resume(q: Query, sql: dict[str, str], name: str | None) -> PauseChange:
    """Resume ``name``; the caller notifies the servers when it changed something."""
    removed = q.write(sql["pause_remove"], (PAUSE_ALL if name is None else name,), deletes=True)
    changed = removed == 1
    if changed and name is not None:
        q.write(sql["resume_jobs"], (name,))
    return PauseChange(name, False, changed)


def paused(q: Query, sql: dict[str, str]) -> Paused:
    names = {row[0] for row in q.rows(sql["pauses"])}
    return Paused(PAUSE_ALL in names, frozenset(names - {PAUSE_ALL}))
