"""The PostgreSQL store's side of workflows: dependency edges (``mpqueue_deps``), each
job's count of open edges (``open_deps``) and unique keys (a partial unique index on
name and key). The rules are in ``mpqueue/dependencies.py``.

Locks keep the count right across hosts: a new job locks the rows it depends on
before it reads their states, and an ending job's row is locked by the finish that
ends it; so an edge is either seen by the end, or written after it and born closed.
Each count is changed under its job's row lock (``open_count`` locks it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ...dependencies import Admission, admit, settle
from ...records import JobRecord, JobState
from .session import Query

# Statements of this module (``{jobs}``-style names filled in by the store).
SQL = {
    "open_edges": "SELECT dep_id, job_id FROM {deps} WHERE dep_id = ANY(%s) AND open",
    "close_edges": "UPDATE {deps} SET open = false WHERE dep_id = %s AND open",
    "lock_waiting": """SELECT id, open_deps, allow_failures FROM {jobs}
        WHERE id = ANY(%s) AND state = 'waiting' ORDER BY id FOR UPDATE""",
    "count_down_many": """UPDATE {jobs} AS j SET open_deps = u.open_deps
        FROM unnest(%s::text[], %s::integer[]) AS u(id, open_deps) WHERE j.id = u.id""",
    "release": """UPDATE {jobs} SET state = %s, open_deps = 0, seq = nextval({seq_name})
        WHERE id = %s""",
    "cancel": """UPDATE {jobs} SET state = 'cancelled', open_deps = 0, errors = %s,
            finished_at_ms = %s, dead_reason = %s WHERE id = %s""",
    "expire_waiting": """UPDATE {jobs} SET state = 'expired', open_deps = 0, errors = %s,
            finished_at_ms = %s WHERE id = %s""",
    "lock_deps": "SELECT id, name, state FROM {jobs} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
    "key_holder": """SELECT {columns} FROM {jobs} WHERE name = %s AND key = %s
        AND state NOT IN ('dead', 'cancelled', 'expired') FOR UPDATE""",
    "add_edges": """INSERT INTO {deps} (dep_id, job_id, open)
        SELECT unnest(%s::text[]), %s, unnest(%s::boolean[]) ON CONFLICT DO NOTHING""",
    "mark_dependencies": """UPDATE {jobs} SET has_dependents = true
        WHERE id = ANY(%s) AND NOT has_dependents""",
    "dependents": "SELECT job_id FROM {deps} WHERE dep_id = %s ORDER BY job_id",
    "unlink": """DELETE FROM {deps} WHERE dep_id = %s
        OR (job_id = %s AND dep_id = ANY(%s::text[]))""",
}


class PgGraph:
    """``dependencies.Graph`` over one transaction of the PostgreSQL store.

    The ends of one finish are settled together: ``prepare`` reads all their edges
    in one statement and locks every job waiting on them in another (in id order, so
    two finishes lock the jobs they share in the same order), and ``flush`` writes the
    counts that went down in one more; only a cascade of cancellations reads more.
    """

    def __init__(
        self,
        q: Query,
        sql: dict[str, str],
        load: Callable[[Query, str], JobRecord],
        encode_errors: Callable[[Sequence[Any]], str],
        text: Callable[[str], str],
    ):
        self.q, self.sql, self._load = q, sql, load
        self._encode_errors, self._text = encode_errors, text
        self.released = 0
        self._edges: dict[str, list[str]] = {}  # ending job -> dependents, prepared
        self._counts: dict[str, tuple[int, bool]] = {}  # waiting job -> (open, allow)
        self._changed: set[str] = set()  # counts to write at flush

    def prepare(self, job_ids: Sequence[str]) -> None:
        for dep_id, job_id in self.q.rows(self.sql["open_edges"], (list(job_ids),)):
            self._edges.setdefault(dep_id, []).append(job_id)
        self._edges.update((job_id, []) for job_id in job_ids if job_id not in self._edges)
        self._lock([d for dependents in self._edges.values() for d in dependents])

    def _lock(self, job_ids: Sequence[str]) -> None:
        wanted = sorted(set(job_ids) - self._counts.keys())
        if wanted:
            for job_id, open_deps, allow in self.q.rows(self.sql["lock_waiting"], (wanted,)):
                self._counts[job_id] = (int(open_deps), bool(allow))

    def open_edges(self, job_id: str) -> list[str]:
        if job_id not in self._edges:
            self.prepare([job_id])  # a job cancelled by this settle: its own edges
        return sorted(self._edges.pop(job_id))

    def open_count(self, job_id: str) -> tuple[int, bool] | None:
        return self._counts.get(job_id)

    def count_down(self, job_id: str, open_deps: int) -> None:
        self._counts[job_id] = (open_deps, self._counts[job_id][1])
        self._changed.add(job_id)

    def load(self, job_id: str) -> JobRecord:
        return self._load(self.q, job_id)

    def file_released(self, rec: JobRecord) -> None:
        self._forget(rec.id)
        self.q.write(self.sql["release"], (rec.state.value, rec.id))
        self.released += 1

    def file_cancelled(self, rec: JobRecord, reason: str) -> None:
        self._forget(rec.id)
        errors = self._encode_errors(rec.errors)
        self.q.write(self.sql["cancel"], (errors, rec.finished_at_ms, self._text(reason), rec.id))

    def file_expired(self, rec: JobRecord) -> None:
        self._forget(rec.id)
        errors = self._encode_errors(rec.errors)
        self.q.write(self.sql["expire_waiting"], (errors, rec.finished_at_ms, rec.id))

    def _forget(self, job_id: str) -> None:
        """A job that stops waiting: no count of it is written or read again."""
        self._counts.pop(job_id, None)
        self._changed.discard(job_id)

    def flush(self) -> None:
        if self._changed:
            ids = sorted(self._changed)
            self.q.write(self.sql["count_down_many"], (ids, [self._counts[i][0] for i in ids]))
            self._changed.clear()


def settle_ends(
    graph: PgGraph, ends: Sequence[tuple[str, str, JobState | None]], now_ms: int
) -> None:
    """``dependencies.settle`` for each (id, name, end) of jobs that ended in this
    transaction (None: deleted before it ended), with their I/O batched."""
    graph.prepare([job_id for job_id, _, _ in ends])
    for job_id, name, end in ends:
        settle(graph, job_id, name, end, now_ms)
    graph.flush()


def dependency_stand_ins(
    q: Query, sql: dict[str, str], job_ids: Sequence[str]
) -> list[JobRecord | None]:
    """The jobs ``job_ids`` as ``admit`` reads them (id, name, state), locked, in order."""
    rows = {row[0]: row for row in q.rows(sql["lock_deps"], (list(job_ids),))}
    found: list[JobRecord | None] = []
    for job_id in job_ids:
        row = rows.get(job_id)
        if row is None:
            found.append(None)
            continue
        state = stored_state(row[2]) or JobState.DEAD  # a state no mpqueue wrote: it cannot run
        found.append(JobRecord(row[0], row[1], state, b""))
    return found


def link(q: Query, sql: dict[str, str], admission: Admission) -> None:
    """Write the edges of an admitted job (its row is already inserted)."""
    rec = admission.record
    q.write(sql["add_edges"], (list(rec.depends_on), rec.id, list(admission.open_edges)))
    q.write(sql["mark_dependencies"], (list(rec.depends_on),))


def admit_new(q: Query, sql: dict[str, str], rec: JobRecord, now_ms: int) -> Admission:
    return admit(rec, dependency_stand_ins(q, sql, rec.depends_on), now_ms)


def stored_state(value: str) -> JobState | None:
    """The state a row's text names; None for text no mpqueue wrote."""
    try:
        return JobState(value)
    except ValueError:
        return None
