"""``PostgresStore``: the job store in a PostgreSQL database, shared by many hosts.

One row per job (see ``pg_schema.py``); a job's state is a column, and partial indexes
give each state its own small index, so claiming and promoting cost the same however
many finished jobs the table holds. Claims take rows with ``FOR UPDATE SKIP LOCKED``:
concurrent claimers, on any host, skip each other's rows instead of waiting or
double-claiming. Every method is one transaction; ``finish_and_claim`` too.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

import psycopg

from ...errors import ConfigError, JobNotFound
from ...limits import TIMEOUT_MAX_S, check_key_part, stored_problem
from ...records import Claim, ErrorInfo, JobRecord, JobState, Outcome
from ...retry import next_run_at_ms
from ..base import CheckReport, HolderGone, OpCounter, Store
from ..codec import decode_server_info, encode_server_info
from . import schema as pg_schema
from .listen import PgListener
from .session import PgSession, Query

BIGINT_MAX = 2**63 - 1  # run-at times beyond it (year 292 million) are stored as it
INTEGER_MAX = 2**31 - 1
CHANNEL_MAX_BYTES = 63  # PostgreSQL identifiers (and so channel names) are this short

# JobRecord's fields, in the order every query selects them.
_FIELDS = (
    "id",
    "name",
    "state",
    "payload",
    "priority",
    "seq",
    "run_at_ms",
    "created_at_ms",
    "attempts",
    "max_retries",
    "timeout_s",
    "func",
    "result",
    "errors",
    "finished_at_ms",
    "backoff_base_s",
    "backoff_cap_s",
    "signature",
)
_COLUMNS = ", ".join(_FIELDS)
_BLOBS = {
    "payload": "''::bytea AS payload",
    "func": "NULL::bytea AS func",
    "result": "NULL::bytea AS result",
}
_LIST_COLUMNS = ", ".join(_BLOBS.get(f, f) for f in _FIELDS)  # _FIELDS, blobs left out
_STATES = {state.value: state for state in JobState}
_Cycle = tuple[list[bool], list[JobRecord]]  # (inside the class, ``list`` is a method)

_SQL = {
    "add": f"""INSERT INTO {{jobs}} ({_COLUMNS})
        SELECT u.id, u.name, u.state, u.payload, u.priority, nextval({{seq_name}}),
               u.run_at_ms, u.created_at_ms, u.attempts, u.max_retries, u.timeout_s,
               u.func, u.result, u.errors, u.finished_at_ms, u.backoff_base_s,
               u.backoff_cap_s, u.signature
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::integer[],
                    %s::bigint[], %s::bigint[], %s::integer[], %s::integer[],
                    %s::float8[], %s::bytea[], %s::bytea[], %s::text[], %s::bigint[],
                    %s::float8[], %s::float8[], %s::bytea[]) WITH ORDINALITY AS u(id, name,
             state, payload, priority, run_at_ms, created_at_ms, attempts, max_retries,
             timeout_s, func, result, errors, finished_at_ms, backoff_base_s, backoff_cap_s,
             signature, ord)
        ORDER BY u.ord RETURNING id, seq""",
    "promote": """UPDATE {jobs} SET state = 'ready' WHERE id IN (
        SELECT id FROM {jobs} WHERE state = 'scheduled' AND run_at_ms <= %s
        FOR UPDATE SKIP LOCKED)""",
    # A stored value out of bounds must not fail the statement (it would stop every
    # claim): such a row gets no deadline and keeps its attempts, and _claim buries it.
    "claim": f"""UPDATE {{jobs}} AS j SET state = 'processing',
            attempts = CASE WHEN j.attempts < {INTEGER_MAX} THEN j.attempts + 1
                            ELSE j.attempts END,
            worker_id = %s, claimed_at_ms = %s,
            deadline_ms = CASE WHEN j.timeout_s > 0 AND j.timeout_s <= {TIMEOUT_MAX_S}
                               THEN %s + trunc(j.timeout_s * 1000)::bigint END
        FROM (SELECT id FROM {{jobs}} WHERE state = 'ready' ORDER BY priority DESC, seq
              LIMIT %s FOR UPDATE SKIP LOCKED) AS picked
        WHERE j.id = picked.id
        RETURNING {", ".join("j." + f for f in _FIELDS)}""",
    "held": """SELECT id, worker_id, attempts, max_retries, backoff_base_s, backoff_cap_s,
            errors FROM {jobs} WHERE id = ANY(%s) AND state = 'processing'
        ORDER BY id FOR UPDATE""",
    # One statement applies every outcome of a batch; NULL means "keep the old value".
    "finish": """UPDATE {jobs} AS j SET state = u.state, result = u.result,
            errors = coalesce(u.errors, j.errors), run_at_ms = coalesce(u.run_at_ms, j.run_at_ms),
            attempts = j.attempts + u.attempts_delta, finished_at_ms = u.finished_at_ms,
            dead_reason = u.dead_reason, worker_id = NULL, claimed_at_ms = NULL,
            deadline_ms = NULL,
            seq = CASE WHEN u.requeue THEN nextval({seq_name}) ELSE j.seq END
        FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[], %s::bigint[],
                    %s::integer[], %s::bigint[], %s::text[], %s::boolean[])
             AS u(id, state, result, errors, run_at_ms, attempts_delta, finished_at_ms,
                  dead_reason, requeue)
        WHERE j.id = u.id""",
    "park": """UPDATE {jobs} SET state = 'dead', dead_reason = %s, worker_id = NULL,
            claimed_at_ms = NULL, deadline_ms = NULL WHERE id = %s""",
    "bury": """UPDATE {jobs} SET state = 'dead', dead_reason = %s, errors = %s,
            finished_at_ms = %s, worker_id = NULL, claimed_at_ms = NULL, deadline_ms = NULL
        WHERE id = %s""",
    "next_run_at": "SELECT min(run_at_ms) FROM {jobs} WHERE state = 'scheduled'",
    "claims": """SELECT id, worker_id, claimed_at_ms, deadline_ms FROM {jobs}
        WHERE state = 'processing' ORDER BY worker_id, id""",
    "claims_of": """SELECT id, worker_id, claimed_at_ms, deadline_ms FROM {jobs}
        WHERE state = 'processing' AND worker_id = %s ORDER BY id""",
    "requeue_worker": """UPDATE {jobs} SET state = 'ready', attempts = attempts - 1,
            worker_id = NULL, claimed_at_ms = NULL, deadline_ms = NULL
        WHERE id IN (SELECT id FROM {jobs} WHERE state = 'processing' AND worker_id = %s
                     ORDER BY id FOR UPDATE)
        RETURNING id""",
    "get": f"SELECT {_COLUMNS} FROM {{jobs}} WHERE id = %s",
    "seqs_of": "SELECT id, seq FROM {jobs} WHERE id = ANY(%s)",
    # Variants, not "(%s IS NULL OR name = %s)": a prepared generic plan of that form
    # could not use the name index.
    # Listing leaves the blobs out (see Store.list) and walks an index in the order it
    # returns, so LIMIT stops the scan: the primary key (ids begin with the creation
    # time), the dead jobs' partial index on id, or the name index.
    "list": f"SELECT {_LIST_COLUMNS} FROM {{jobs}} ORDER BY id LIMIT %s",
    "list_name": f"""SELECT {_LIST_COLUMNS} FROM {{jobs}} WHERE name = %s
        ORDER BY created_at_ms, id LIMIT %s""",
    "list_state": f"""SELECT {_LIST_COLUMNS} FROM {{jobs}} WHERE state = %s
        ORDER BY id LIMIT %s""",
    "list_name_state": f"""SELECT {_LIST_COLUMNS} FROM {{jobs}} WHERE name = %s AND state = %s
        ORDER BY created_at_ms, id LIMIT %s""",
    "stats": """SELECT (SELECT count(*) FROM {jobs} WHERE state = 'ready'),
            (SELECT count(*) FROM {jobs} WHERE state = 'scheduled'),
            (SELECT count(*) FROM {jobs} WHERE state = 'processing'),
            (SELECT count(*) FROM {jobs} WHERE state = 'done'),
            (SELECT count(*) FROM {jobs} WHERE state = 'dead')""",
    "delete": "DELETE FROM {jobs} WHERE id = %s",
    "lock_one": f"SELECT {_COLUMNS} FROM {{jobs}} WHERE id = %s FOR UPDATE",
    "requeue_dead": """UPDATE {jobs} SET state = 'ready', attempts = 0, run_at_ms = %s,
            finished_at_ms = NULL, dead_reason = NULL, seq = nextval({seq_name})
        WHERE id = %s RETURNING seq""",
    "purge_dead": "DELETE FROM {jobs} WHERE state = 'dead'",
    "expire": "DELETE FROM {jobs} WHERE state = 'done' AND finished_at_ms < %s",
    "register": """INSERT INTO {workers} (worker_id, info, heartbeat_at)
        VALUES (%s, %s, clock_timestamp())
        ON CONFLICT (worker_id) DO UPDATE SET info = excluded.info,
            heartbeat_at = excluded.heartbeat_at""",
    "workers": """SELECT worker_id, info, greatest(0, (extract(epoch FROM
            clock_timestamp() - heartbeat_at) * 1000)::bigint) FROM {workers}""",
    "unregister": "DELETE FROM {workers} WHERE worker_id = %s",
    "notify": "SELECT pg_notify(%s, '')",
    # ``check``: rows whose columns disagree with their state (the LMDB store's index
    # rules, as columns), and claims no registered server holds.
    "check_rows": """SELECT id, state FROM {jobs} WHERE
            (state = 'processing') <> (worker_id IS NOT NULL AND claimed_at_ms IS NOT NULL)
            OR (state = 'done' AND finished_at_ms IS NULL) ORDER BY id""",
    "check_holders": """SELECT DISTINCT worker_id FROM {jobs} j WHERE state = 'processing'
            AND worker_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM {workers} w WHERE w.worker_id = j.worker_id)""",
    "check_seqs": """SELECT seq, count(*) FROM {jobs} WHERE state IN ('ready', 'scheduled')
            GROUP BY seq HAVING count(*) > 1""",
    "check_errors": "SELECT id, errors FROM {jobs} WHERE errors <> '[]'",
    "count": "SELECT count(*) FROM {jobs}",
}


class PostgresStore(Store):
    """Job store in a PostgreSQL database (``postgresql://user@host/db``).

    Tables live in the first schema of the connection's ``search_path`` and are
    created or upgraded on open. One instance per process; threads may share it.

    Raises ConfigError for a bad URL or schema, StoreError when the server fails.
    """

    mode = "optimized"

    def __init__(self, url: str):
        self.url = url
        self.counter = OpCounter()
        self.rng = random.Random()
        self.session = PgSession(url, self.counter)
        conn = self.session.connection()
        with self.session._lock:
            try:
                schema = pg_schema.current_schema(conn)
                pg_schema.migrate(conn, schema)
            except psycopg.Error as exc:
                self.session.close()
                raise self.session._translate(exc, conn) from self.session._cause(exc)
            except BaseException:
                self.session.close()
                raise
            names = pg_schema.qualified_names(conn, schema)
        self.schema = schema
        self.channel = _channel_name(schema)
        self.sql = {key: pg_schema.render(text, names) for key, text in _SQL.items()}

    # ---- adding -------------------------------------------------------------------
    def add(self, records: Sequence[JobRecord]) -> None:
        for rec in records:  # the LMDB store's limits, so a queue can move between them
            check_key_part(rec.name, f"task name {rec.name!r}")
        if records:  # safe to repeat: see _add_unless_committed
            self.session.run(
                lambda q: self._add(q, records),
                resume=lambda q: self._add_unless_committed(q, records),
            )

    def _add(self, q: Query, records: Sequence[JobRecord]) -> None:
        columns: list[list[Any]] = [[] for _ in range(17)]
        for rec in records:
            row = (
                rec.id,
                rec.name,
                rec.state.value,
                rec.payload,
                rec.priority,
                min(rec.run_at_ms, BIGINT_MAX),
                rec.created_at_ms,
                rec.attempts,
                rec.max_retries,
                rec.timeout_s,
                rec.func,
                rec.result,
                _encode_errors(rec.errors),
                rec.finished_at_ms,
                rec.backoff_base_s,
                rec.backoff_cap_s,
                rec.signature,
            )
            for column, value in zip(columns, row):
                column.append(value)
        seqs = dict(q.rows(self.sql["add"], columns))
        for rec in records:
            rec.seq = seqs[rec.id]
        q.counter.puts += len(records)
        q.rows(self.sql["notify"], (self.channel,))  # delivered at commit, if it commits

    def _add_unless_committed(self, q: Query, records: Sequence[JobRecord]) -> None:
        """``_add`` again after a COMMIT whose reply was lost. The job ids were chosen
        before the first insert, so finding them all means it committed (the jobs are
        not added twice); finding none, it did not. A few is a genuine duplicate id:
        ``_add`` fails on it as it would have the first time."""
        seqs = dict(q.rows(self.sql["seqs_of"], ([rec.id for rec in records],)))
        if len(seqs) < len(records):
            self._add(q, records)
            return
        for rec in records:
            rec.seq = seqs[rec.id]

    # ---- polling ------------------------------------------------------------------
    def promote_due(self, now_ms: int) -> int:
        return self.session.run(lambda q: q.write(self.sql["promote"], (now_ms,)))

    def claim(self, server_id: str, limit: int, now_ms: int) -> list[JobRecord]:
        _check_server_id(server_id)
        if limit <= 0:
            return []
        return self.session.run(lambda q: self._claim(q, server_id, limit, now_ms))

    def _claim(self, q: Query, server_id: str, limit: int, now_ms: int) -> list[JobRecord]:
        rows = q.rows(self.sql["claim"], (server_id, now_ms, now_ms, limit))
        q.counter.puts += len(rows)  # RETURNING counted them as reads; each was updated
        claimed = []
        for row in rows:
            try:
                rec = _read(row)
            except ValueError as exc:  # unreadable: park it, never hand it out
                q.write(self.sql["park"], (f"corrupt record: {exc}", row[0]))
                continue
            problem = stored_problem(rec)  # written by older code or by hand
            if problem is None:
                claimed.append(rec)
            else:
                self._bury_bad(q, rec, problem, now_ms)
        claimed.sort(key=lambda r: (-r.priority, r.seq))  # RETURNING has no order
        return claimed

    def _bury_bad(self, q: Query, rec: JobRecord, problem: str, now_ms: int) -> None:
        """A row holding a value out of bounds is that job's failure: dead, with the
        reason in its error history (as the LMDB store does)."""
        reason = f"stored value out of bounds: {problem}"
        error = ErrorInfo("OutOfBounds", reason, kind="corrupt", at_ms=now_ms)
        q.write(
            self.sql["bury"], (_text(reason), _encode_errors(rec.errors + (error,)), now_ms, rec.id)
        )

    def next_run_at_ms(self) -> int | None:
        row = self.session.run(lambda q: q.one(self.sql["next_run_at"]), write=False)
        return None if row is None or row[0] is None else int(row[0])

    # ---- outcomes -----------------------------------------------------------------
    def finish(self, outcomes: Sequence[Outcome], now_ms: int) -> list[bool]:
        if not outcomes:
            return []
        return self.session.run(lambda q: self._finish(q, outcomes, now_ms))

    def _finish(self, q: Query, outcomes: Sequence[Outcome], now_ms: int) -> list[bool]:
        held = {row[0]: row for row in q.rows(self.sql["held"], ([o.job_id for o in outcomes],))}
        updates: list[tuple[Any, ...]] = []
        acks = []
        for outcome in outcomes:
            row = held.pop(outcome.job_id, None)  # popped: a repeated outcome is late
            if row is None or row[1] != outcome.server_id:
                acks.append(False)  # the claim was taken back: a late outcome changes nothing
                continue
            update = self._outcome_update(row, outcome, now_ms)
            acks.append(update is not None)
            if update is None:
                q.write(
                    self.sql["park"], ("corrupt record: errors cannot be decoded", outcome.job_id)
                )
            else:
                updates.append(update)
        if updates:
            q.write(self.sql["finish"], [list(column) for column in zip(*updates)])
        return acks

    def _outcome_update(
        self, row: tuple[Any, ...], outcome: Outcome, now_ms: int
    ) -> tuple[Any, ...] | None:
        """The ``finish`` statement's row for one outcome (None: the record is unreadable).

        Columns: id, state, result, errors, run_at_ms, attempts_delta, finished_at_ms,
        dead_reason, requeue.
        """
        job_id = outcome.job_id
        if outcome.kind == "done":
            return (job_id, "done", outcome.result, None, None, 0, now_ms, None, False)
        if outcome.kind == "released":
            # Undo the claim and keep the job's place (its seq), as the LMDB store does.
            return (job_id, "ready", None, None, None, -1, None, None, False)
        try:
            errors = _decode_errors(row[6])
        except ValueError:
            return None
        error = outcome.error or ErrorInfo("Unknown", "no error recorded")
        rec = JobRecord(
            id=job_id,
            name="",
            state=JobState.PROCESSING,
            payload=b"",
            attempts=row[2],
            max_retries=row[3],
            backoff_base_s=row[4],
            backoff_cap_s=row[5],
        )
        run_at = next_run_at_ms(
            rec, now_ms, self.rng, retryable=outcome.retryable, delay_s=outcome.retry_delay_s
        )
        encoded = _encode_errors(errors + (error,))
        if run_at is None:
            return (job_id, "dead", None, encoded, None, 0, now_ms, _text(str(error)), False)
        return (job_id, "scheduled", None, encoded, min(run_at, BIGINT_MAX), 0, None, None, True)

    # ---- claims and workers -------------------------------------------------------
    def claims(self, server_id: str | None = None) -> list[Claim]:
        query, params = (
            (self.sql["claims"], ()) if server_id is None else (self.sql["claims_of"], (server_id,))
        )
        rows = self.session.run(lambda q: q.rows(query, params), write=False)
        return [
            Claim(job_id, worker, claimed, deadline_ms=deadline)
            for job_id, worker, claimed, deadline in rows
        ]

    def requeue_server(self, server_id: str) -> list[str]:
        def body(q: Query) -> list[str]:
            ids = sorted(row[0] for row in q.rows(self.sql["requeue_worker"], (server_id,)))
            q.counter.puts += len(ids)
            if ids:
                q.rows(self.sql["notify"], (self.channel,))  # other hosts may be idle
            return ids

        return self.session.run(body)

    def register_server(self, server_id: str, info: dict[str, Any]) -> None:
        raw = encode_server_info(info)
        self.session.run(lambda q: q.write(self.sql["register"], (server_id, raw)))

    def servers(self) -> dict[str, dict[str, Any]]:
        """Every coordinator's info, plus ``heartbeat_age_ms``: how long ago it last
        registered, measured on the database's clock (so hosts' clocks may disagree)."""
        rows = self.session.run(lambda q: q.rows(self.sql["workers"]), write=False)
        found = {}
        for server_id, raw, age_ms in rows:
            info = decode_server_info(bytes(raw))
            info["heartbeat_age_ms"] = int(age_ms)
            found[server_id] = info
        return found

    def unregister_server(self, server_id: str) -> None:
        self.session.run(lambda q: q.write(self.sql["unregister"], (server_id,), deletes=True))

    # ---- reading --------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        row = self.session.run(lambda q: q.one(self.sql["get"], (job_id,)), write=False)
        return None if row is None else _decode(row)

    def list(
        self, name: str | None = None, state: JobState | None = None, limit: int | None = None
    ) -> list[JobRecord]:
        key = "list" + ("_name" if name is not None else "") + ("_state" if state else "")
        params = [v for v in (name, None if state is None else state.value) if v is not None]
        rows = self.session.run(lambda q: q.rows(self.sql[key], (*params, limit)), write=False)
        return [_decode(row) for row in rows]

    def stats(self) -> dict[str, int]:
        row = self.session.run(lambda q: q.one(self.sql["stats"]), write=False)
        assert row is not None
        counts = dict(zip(("ready", "scheduled", "processing", "done", "dead"), map(int, row)))
        counts["total"] = sum(counts.values())
        return counts

    # ---- removing ---------------------------------------------------------------------
    def delete(self, job_id: str) -> bool:
        return bool(
            self.session.run(lambda q: q.write(self.sql["delete"], (job_id,), deletes=True))
        )

    def requeue_dead(self, job_id: str, now_ms: int) -> JobRecord:
        return self.session.run(lambda q: self._requeue_dead(q, job_id, now_ms))

    def _requeue_dead(self, q: Query, job_id: str, now_ms: int) -> JobRecord:
        row = q.one(self.sql["lock_one"], (job_id,))
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        try:
            rec = _read(row)
            state = rec.state.value
        except ValueError:
            state = "unreadable"
        if state != JobState.DEAD.value:
            raise ConfigError(f"job {job_id} is {state}; only dead jobs can be requeued")
        seq = q.rows(self.sql["requeue_dead"], (now_ms, job_id))[0][0]
        q.counter.puts += 1
        q.rows(self.sql["notify"], (self.channel,))
        return rec.evolve(
            state=JobState.READY, attempts=0, run_at_ms=now_ms, finished_at_ms=None, seq=seq
        )

    def purge_dead(self) -> int:
        return self.session.run(lambda q: q.write(self.sql["purge_dead"], deletes=True))

    def expire_finished(self, before_ms: int) -> int:
        return self.session.run(lambda q: q.write(self.sql["expire"], (before_ms,), deletes=True))

    # ---- the server's cycle -------------------------------------------------------------
    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        server_id: str,
        limit: int,
        now_ms: int,
        idle_children: Sequence[int] = (),
    ) -> _Cycle:
        # idle_children is not used: this store has no hand-off (jobs always go through
        # the ready queue, and NOTIFY wakes the servers).
        def body(q: Query) -> _Cycle:
            acks = self._finish(q, outcomes, now_ms) if outcomes else []
            if limit <= 0:
                return acks, []
            q.write(self.sql["promote"], (now_ms,))
            return acks, self._claim(q, server_id, limit, now_ms)

        _check_server_id(server_id)
        if not outcomes and limit <= 0:
            return [], []
        return self.session.run(body)

    # ---- checking ---------------------------------------------------------------------
    def check(self, holder_gone: HolderGone = lambda server_id: False) -> CheckReport:
        """The LMDB store's check in SQL: each row's claim and finish columns match its
        state, every error history decodes, claims belong to registered or dead
        servers, queued jobs have distinct FIFO numbers. (PostgreSQL keeps its own
        indexes consistent; a backup is pg_dump's job.)"""

        def body(q: Query) -> CheckReport:
            report = CheckReport(jobs=int(q.rows(self.sql["count"])[0][0]))
            report.inconsistent += [
                f"job {job_id} is {state} but its claim or finish columns say otherwise"
                for job_id, state in q.rows(self.sql["check_rows"])
            ]
            report.inconsistent += [
                f"jobs are claimed by {worker}, which is neither registered nor dead"
                for (worker,) in q.rows(self.sql["check_holders"])
                if not holder_gone(worker)
            ]
            report.inconsistent += [
                f"{n} queued jobs share the FIFO number {seq}"
                for seq, n in q.rows(self.sql["check_seqs"])
            ]
            for job_id, errors in q.rows(self.sql["check_errors"]):
                try:
                    _decode_errors(errors)
                except ValueError as exc:
                    report.corrupt.append(
                        f"job {job_id}: the error history cannot be decoded ({exc})"
                    )
            return report

        report = self.session.run(body, write=False)
        return report.add_registry(self.servers())

    def backup(self, dest: str) -> None:
        raise ConfigError("a PostgreSQL store is backed up with the database's own tools: pg_dump")

    def listen(self) -> PgListener:
        return PgListener(self.session.connect, self.channel)

    def close(self) -> None:
        self.session.close()


def _channel_name(schema: str) -> str:
    """The NOTIFY channel of the queue in ``schema``: at most 63 bytes (pg_notify
    refuses longer), cut at a character boundary (an unfinished one is dropped)."""
    encoded = f"mpqueue_{schema}".encode()[:CHANNEL_MAX_BYTES]
    return encoded.decode("utf-8", "ignore")


def _check_server_id(server_id: str) -> None:
    check_key_part(server_id, "server id")


def _text(value: str) -> str:
    """``value`` as PostgreSQL text can hold it (no NUL, no lone surrogates)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")


def _encode_errors(errors: Sequence[ErrorInfo]) -> str:
    return json.dumps(
        [[e.type, e.message, e.traceback, e.attempt, e.at_ms, e.kind] for e in errors]
    )  # ASCII-only: see pg_schema


def _decode_errors(raw: str) -> tuple[ErrorInfo, ...]:
    try:
        return tuple(ErrorInfo(*e) for e in json.loads(raw))
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc


def _decode(row: tuple[Any, ...]) -> JobRecord:
    """A record from a row in ``_FIELDS`` order; a dead stand-in if it cannot be read."""
    try:
        return _read(row)
    except ValueError as exc:
        return JobRecord.corrupt(row[0], row[1], f"record cannot be decoded: {exc}")


def _read(row: tuple[Any, ...]) -> JobRecord:
    """A record from a row in ``_FIELDS`` order; raises ValueError if it cannot be read."""
    rec = object.__new__(JobRecord)  # no __init__: the server decodes every claim
    rec.__dict__.update(zip(_FIELDS, row))
    try:
        rec.state = _STATES[row[2]]
    except KeyError:
        raise ValueError(f"unknown state {row[2]!r}") from None
    rec.errors = _decode_errors(row[13]) if row[13] != "[]" else ()
    return rec
