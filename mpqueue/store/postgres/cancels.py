"""The PostgreSQL store's side of cancelling (the rules are in ``mpqueue/cancellation.py``).

A queued job's row becomes ``cancelled`` in the cancel's transaction. A running job's
row gets the cancel's text in ``cancel_request``; its server finds it through a NOTIFY
with the payload ``cancel`` (or its next poll), and the finish of its outcome, whatever
that is, ends it cancelled. Rows are locked in id order (or the name index's order)
before they are read, as the finish and the claim lock them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from ...cancellation import CancelReport, cancel_entry
from ...records import QUEUED_STATES, ErrorInfo, JobState
from .graph import stored_state
from .session import Query

CANCEL_PAYLOAD = "cancel"  # the NOTIFY payload that tells servers to read their requests

_ROW = "id, name, state, attempts, errors, has_dependents, cancel_request"
SQL = {
    "lock_ids": f"SELECT {_ROW} FROM {{jobs}} WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
    # A running job asked to stop already is left out: a later batch would count it again.
    "match_name": f"""SELECT {_ROW}, created_at_ms FROM {{jobs}}
        WHERE name = %s AND state = ANY(%s) AND (created_at_ms, id) > (%s, %s)
          AND (state <> 'processing' OR cancel_request IS NULL)
        ORDER BY created_at_ms, id LIMIT %s FOR UPDATE""",
    "match": f"""SELECT {_ROW}, created_at_ms FROM {{jobs}}
        WHERE state = ANY(%s) AND id > %s AND (state <> 'processing' OR cancel_request IS NULL)
        ORDER BY id LIMIT %s FOR UPDATE""",
    # Binary arrays (%b): psycopg escapes every element of a text-format array, which
    # was most of a bulk cancel's time.
    "end_rows": """UPDATE {jobs} AS j SET state = 'cancelled', errors = u.errors,
            finished_at_ms = %s, dead_reason = u.reason, open_deps = 0, worker_id = NULL,
            claimed_at_ms = NULL, deadline_ms = NULL, cancel_request = NULL
        FROM unnest(%b::text[], %b::text[], %b::text[]) AS u(id, errors, reason)
        WHERE j.id = u.id""",
    "request": """UPDATE {jobs} SET cancel_request = %s
        WHERE id = ANY(%s) AND state = 'processing' AND cancel_request IS NULL""",
    "requests_of": """SELECT id FROM {jobs} WHERE state = 'processing' AND worker_id = %s
        AND cancel_request IS NOT NULL ORDER BY id""",
    "requested_of": f"""SELECT {_ROW} FROM {{jobs}} WHERE state = 'processing'
        AND worker_id = %s AND cancel_request IS NOT NULL ORDER BY id FOR UPDATE""",
    "notify_cancel": f"SELECT pg_notify(%s, '{CANCEL_PAYLOAD}')",
}

Ends = list[tuple[str, str, JobState | None]]  # (id, name, end) of jobs others wait for


class PgCancel:
    """One cancel's transaction: the rows it ends and the requests it makes."""

    def __init__(
        self,
        q: Query,
        sql: dict[str, str],
        text: str,
        now: int,
        encode_errors: Callable[[Sequence[ErrorInfo]], str],
        decode_errors: Callable[[str], tuple[ErrorInfo, ...]],
        clean: Callable[[str], str],
    ):
        self.q, self.sql, self.text, self.now = q, sql, text, now
        self._encode, self._decode, self._clean = encode_errors, decode_errors, clean
        self.report = CancelReport()
        self.ends: Ends = []
        self._ended: list[tuple[str, str, str]] = []  # (id, errors, reason) to write
        self._asked: list[str] = []

    def rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        for row in rows:
            self.row(row)

    def row(self, row: tuple[Any, ...]) -> None:
        job_id, name, state_text, attempts, errors, has_dependents, request = row[:7]
        state = stored_state(state_text)
        if state in QUEUED_STATES:
            self._end(job_id, name, attempts, errors, has_dependents, self.text)
            self.report.cancelled.append(job_id)
        elif state is JobState.PROCESSING:
            if request is None:
                self._asked.append(job_id)
            self.report.requested.append(job_id)
        else:
            self.report.finished.append(job_id)

    def requested_rows(self, rows: Sequence[tuple[Any, ...]]) -> list[str]:
        """End running jobs whose cancel was requested (their server is gone)."""
        for job_id, name, _, attempts, errors, has_dependents, request in rows:
            self._end(job_id, name, attempts, errors, has_dependents, request)
        return [row[0] for row in rows]

    def _end(
        self,
        job_id: str,
        name: str,
        attempts: int,
        errors: str,
        has_dependents: bool,
        text: str,
    ) -> None:
        error = cancel_entry(text, attempts, self.now)
        if errors == "[]":  # most queued jobs: no history to decode
            history: tuple[ErrorInfo, ...] = ()
        else:
            try:
                history = self._decode(errors)
            except ValueError:
                history = ()  # unreadable: the cancel is all that is left of it
        self._ended.append((job_id, self._encode(history + (error,)), self._clean(text)))
        if has_dependents:
            self.ends.append((job_id, name, JobState.CANCELLED))

    def write(self) -> CancelReport:
        """Write the ends and requests of this cancel (before settling the ends)."""
        if self._ended:
            ids, errors, reasons = (list(column) for column in zip(*self._ended))
            self.q.write(self.sql["end_rows"], (self.now, ids, errors, reasons))
        if self._asked:
            self.q.write(self.sql["request"], (self._clean(self.text), self._asked))
        return self.report


def match(
    q: Query,
    sql: dict[str, str],
    name: str | None,
    states: Collection[JobState],
    limit: int,
    after: str,
) -> tuple[list[tuple[Any, ...]], str | None]:
    """Up to ``limit`` rows to cancel after the position ``after`` ("" to begin), and
    the position of the last (None when fewer were left)."""
    values = [state.value for state in states]
    if name is None:
        rows = q.rows(sql["match"], (values, after, limit))
        last = rows[-1][0] if rows else ""
    else:
        created, _, job_id = after.partition(":")
        rows = q.rows(sql["match_name"], (name, values, int(created or -1), job_id, limit))
        last = f"{rows[-1][7]}:{rows[-1][0]}" if rows else ""
    return rows, (last if len(rows) >= limit else None)
