"""The PostgreSQL store's tables, and the migrations that create and upgrade them.

mpqueue owns its schema: every store open checks the recorded version and applies the
missing migrations, in order, in one transaction, under an advisory lock (so two
processes starting at once cannot both migrate). Migrations are append-only: a released
one is never edited, a change is a new entry at the end of ``MIGRATIONS``.

Layout (version 1), in the schema the connection's ``search_path`` selects:

- ``mpqueue_jobs``: one row per job, the ``JobRecord`` fields as columns, plus
  ``worker_id``/``claimed_at_ms``/``deadline_ms`` while processing and ``dead_reason``.
  Partial indexes keep each queue's hot path as small as that queue: ready jobs in
  claim order, scheduled jobs in due order, processing jobs by holder, done jobs by
  finish time, and every job by name then age for listing.
- ``mpqueue_workers``: the coordinator registry, heartbeats on the database's clock.
- ``mpqueue_job_seq``: FIFO order among jobs of one priority.
- ``mpqueue_schema_version``: one row per applied migration.

Version 3 adds workflows: the ``waiting`` and ``cancelled`` states, the workflow
columns of ``JobRecord`` (``depends_on``, ``pass_results``, ``allow_failures``,
``key``), ``open_deps`` (a waiting job's count of open edges) and ``has_dependents``
(so a finish looks for edges only where there are some), the edges table
``mpqueue_deps`` (dependency, dependent, open), and the unique index on (name, key)
over jobs that are neither dead nor cancelled.

Version 4 adds ``cancel_request``: the text of a cancel asked for while the job runs
(see ``cancels.py``); NULL otherwise.

Version 5 adds the retry lists of ``JobRecord`` (``retry_on``, ``no_retry_on``): text
columns holding JSON arrays of exception names, NULL when a job has none (NULL
``retry_on``: every exception is retried).

Version 6 adds ``progress``: a job's last progress report, as JSON (``[done, total,
message, at_ms]``), NULL before the first.

Version 7 adds expiry (``expires=``, see ``mpqueue/expiry.py``): ``expires_at_ms``, the
deadline by which a job must start (NULL: never), the ``expired`` state with its
partial index by finish time (retention), and the unique key index rebuilt so that an
expired job frees its key as a dead or cancelled one does.

Version 8 adds pausing (see ``pauses.py``): ``mpqueue_pauses`` (the paused task names,
and ``''`` for the whole queue) and ``paused`` on jobs, true while the job's task is
paused (set by pause and resume on the task's unfinished rows, read from
``mpqueue_pauses`` when a row is added or requeued from dead, carried along by every
other change of state; a finished row may keep it until the resume, unread). The claim
index ``mpqueue_jobs_ready`` is rebuilt over ready rows that are not paused, and
``mpqueue_jobs_paused`` finds a task's flagged rows for the resume.

Version 9 adds the depth history (see ``history.py`` here and ``mpqueue/history.py``):
``mpqueue_history``, one row per (tier, slot) of the rings, its time and the counts by
state as JSON; its primary key bounds it to ``history.SIZE`` rows.

The next version adds periodic schedules (see ``schedules.py`` here and
``mpqueue/periodic.py``): ``mpqueue_schedules``, one row per schedule name (its spec,
paused and retired flags, its last and next slots, its last job and its declarers),
and ``mpqueue_schedules_due``, the partial index on ``next_due_ms`` over the rows that
are neither paused nor retired, which a fire reads.

Version 12 adds concurrency limits (see ``limits.py`` here).

Version 13 adds the dashboard's columns and indexes: ``preview`` and
``result_preview``, the text previews of a job's arguments and result
(``mpqueue/previews.py``; NULL in rows written before), and ``(state, id)`` and
``(name, id)``, which a newest-first page (``browse``) walks backwards from its cursor.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ...errors import ConfigError

VERSION_TABLE = "mpqueue_schema_version"
# First key of the two-int advisory lock ('mpqu'); the second is the schema's hash, so
# queues in different schemas of one database never wait for each other.
LOCK_CLASS = 0x6D707175

# Names the queries use; each is qualified with the store's schema at open.
TABLES = {
    "jobs": "mpqueue_jobs",
    "workers": "mpqueue_workers",
    "seq": "mpqueue_job_seq",
    "version": VERSION_TABLE,
    "deps": "mpqueue_deps",
    "pauses": "mpqueue_pauses",
    "history": "mpqueue_history",
    "schedules": "mpqueue_schedules",
    "limits": "mpqueue_limits",
}

# ``errors`` is JSON in a text column, written ASCII-only: exception text may hold NUL
# or lone surrogates, which jsonb (and UTF-8 text) would refuse.
MIGRATIONS: list[tuple[str, ...]] = [
    (  # 1: jobs, registry, indexes
        "CREATE SEQUENCE {seq}",
        """CREATE TABLE {jobs} (
            id             text PRIMARY KEY,
            name           text NOT NULL,
            state          text NOT NULL CHECK (state IN
                               ('scheduled', 'ready', 'processing', 'done', 'dead')),
            payload        bytea NOT NULL,
            priority       integer NOT NULL,
            seq            bigint NOT NULL,
            run_at_ms      bigint NOT NULL,
            created_at_ms  bigint NOT NULL,
            attempts       integer NOT NULL,
            max_retries    integer NOT NULL,
            timeout_s      double precision,
            func           bytea,
            result         bytea,
            errors         text NOT NULL DEFAULT '[]',
            finished_at_ms bigint,
            backoff_base_s double precision NOT NULL,
            backoff_cap_s  double precision NOT NULL,
            worker_id      text,
            claimed_at_ms  bigint,
            deadline_ms    bigint,
            dead_reason    text
        )""",
        "CREATE INDEX mpqueue_jobs_ready ON {jobs} (priority DESC, seq) WHERE state = 'ready'",
        "CREATE INDEX mpqueue_jobs_scheduled ON {jobs} (run_at_ms, priority DESC, seq) "
        "WHERE state = 'scheduled'",
        "CREATE INDEX mpqueue_jobs_processing ON {jobs} (worker_id) WHERE state = 'processing'",
        "CREATE INDEX mpqueue_jobs_done ON {jobs} (finished_at_ms) WHERE state = 'done'",
        "CREATE INDEX mpqueue_jobs_dead ON {jobs} (id) WHERE state = 'dead'",
        "CREATE INDEX mpqueue_jobs_by_name ON {jobs} (name, created_at_ms, id)",
        """CREATE TABLE {workers} (
            worker_id    text PRIMARY KEY,
            info         bytea NOT NULL,
            heartbeat_at timestamptz NOT NULL
        )""",
    ),
    (  # 2: a job's signature (signed payloads, see mpqueue/signing.py)
        "ALTER TABLE {jobs} ADD COLUMN signature bytea",
    ),
    (  # 3: workflows (dependencies, cancelled jobs, unique keys)
        "ALTER TABLE {jobs} DROP CONSTRAINT mpqueue_jobs_state_check",
        """ALTER TABLE {jobs} ADD CONSTRAINT mpqueue_jobs_state_check CHECK (state IN
            ('waiting', 'scheduled', 'ready', 'processing', 'done', 'dead', 'cancelled'))""",
        """ALTER TABLE {jobs} ADD COLUMN depends_on text[] NOT NULL DEFAULT '{{}}',
            ADD COLUMN pass_results text NOT NULL DEFAULT '',
            ADD COLUMN allow_failures boolean NOT NULL DEFAULT false,
            ADD COLUMN key text,
            ADD COLUMN open_deps integer NOT NULL DEFAULT 0,
            ADD COLUMN has_dependents boolean NOT NULL DEFAULT false""",
        """CREATE TABLE {deps} (
            dep_id text NOT NULL,
            job_id text NOT NULL,
            open   boolean NOT NULL,
            PRIMARY KEY (dep_id, job_id)
        )""",
        "CREATE UNIQUE INDEX mpqueue_jobs_key ON {jobs} (name, key) "
        "WHERE key IS NOT NULL AND state NOT IN ('dead', 'cancelled')",
        "CREATE INDEX mpqueue_jobs_waiting ON {jobs} (id) WHERE state = 'waiting'",
        "CREATE INDEX mpqueue_jobs_cancelled ON {jobs} (finished_at_ms) WHERE state = 'cancelled'",
    ),
    (  # 4: cancelling running jobs (the text of the cancel requested while it runs)
        "ALTER TABLE {jobs} ADD COLUMN cancel_request text",
    ),
    (  # 5: what is retried (a task's retry_on and no_retry_on, JSON arrays of names)
        "ALTER TABLE {jobs} ADD COLUMN retry_on text, ADD COLUMN no_retry_on text",
    ),
    (  # 6: a running job's last progress report (JSON: done, total, message, at_ms)
        "ALTER TABLE {jobs} ADD COLUMN progress text",
    ),
    (  # 7: expiry (a job not started by its deadline ends expired)
        "ALTER TABLE {jobs} ADD COLUMN expires_at_ms bigint",
        "ALTER TABLE {jobs} DROP CONSTRAINT mpqueue_jobs_state_check",
        """ALTER TABLE {jobs} ADD CONSTRAINT mpqueue_jobs_state_check CHECK (state IN
            ('waiting', 'scheduled', 'ready', 'processing', 'done', 'dead', 'cancelled',
             'expired'))""",
        "CREATE INDEX mpqueue_jobs_expired ON {jobs} (finished_at_ms) WHERE state = 'expired'",
        "DROP INDEX {key_index}",
        "CREATE UNIQUE INDEX mpqueue_jobs_key ON {jobs} (name, key) "
        "WHERE key IS NOT NULL AND state NOT IN ('dead', 'cancelled', 'expired')",
    ),
    (  # 8: pausing (the paused tasks; a paused task's ready jobs out of the claim index)
        "CREATE TABLE {pauses} (name text PRIMARY KEY)",
        "ALTER TABLE {jobs} ADD COLUMN paused boolean NOT NULL DEFAULT false",
        "DROP INDEX {ready_index}",
        "CREATE INDEX mpqueue_jobs_ready ON {jobs} (priority DESC, seq) "
        "WHERE state = 'ready' AND NOT paused",
        "CREATE INDEX mpqueue_jobs_paused ON {jobs} (name) WHERE paused",
    ),
    (  # 9: the depth history (a fixed-size ring per tier, see mpqueue/history.py)
        """CREATE TABLE {history} (
            tier smallint NOT NULL,
            slot integer NOT NULL,
            at_ms bigint NOT NULL,
            counts jsonb NOT NULL,
            PRIMARY KEY (tier, slot)
        )""",
    ),
    (  # 10: named queues (a job's queue; the claim of one queue has its own index)
        "ALTER TABLE {jobs} ADD COLUMN queue text NOT NULL DEFAULT 'default'",
        "CREATE INDEX mpqueue_jobs_ready_queue ON {jobs} (queue, priority DESC, seq) "
        "WHERE state = 'ready' AND NOT paused",
    ),
    (  # 11: periodic schedules (mpqueue/periodic.py), with the next-due index a fire reads
        """CREATE TABLE {schedules} (
            name           text PRIMARY KEY,
            cron           text,
            every_ms       bigint,
            tz             text NOT NULL,
            catch_up       text NOT NULL,
            last_slot_ms   bigint NOT NULL,
            next_due_ms    bigint NOT NULL,
            paused         boolean NOT NULL DEFAULT false,
            retired        boolean NOT NULL DEFAULT false,
            last_fired_ms  bigint,
            last_job_id    text,
            declared_at_ms bigint NOT NULL,
            declarers      text[] NOT NULL DEFAULT '{{}}'
        )""",
        "CREATE INDEX mpqueue_schedules_due ON {schedules} (next_due_ms) "
        "WHERE NOT paused AND NOT retired",
    ),
    (  # 12: concurrency limits (see limits.py): a limited job's lane, out of the claim
        # indexes, and the slots a running one holds
        """CREATE TABLE {limits} (
            kind        text NOT NULL,
            name        text NOT NULL,
            concurrency integer NOT NULL,
            running     integer NOT NULL DEFAULT 0,
            PRIMARY KEY (kind, name)
        )""",
        "ALTER TABLE {jobs} ADD COLUMN lane text",
        "ALTER TABLE {jobs} ADD COLUMN holds smallint",
        "DROP INDEX {ready_index}",
        "CREATE INDEX mpqueue_jobs_ready ON {jobs} (priority DESC, seq) "
        "WHERE state = 'ready' AND NOT paused AND lane IS NULL",
        "DROP INDEX {ready_queue_index}",
        "CREATE INDEX mpqueue_jobs_ready_queue ON {jobs} (queue, priority DESC, seq) "
        "WHERE state = 'ready' AND NOT paused AND lane IS NULL",
        "CREATE INDEX mpqueue_jobs_laned ON {jobs} (lane, priority DESC, seq) "
        "WHERE state = 'ready' AND NOT paused AND lane IS NOT NULL",
    ),
    (  # 13: rate limits (see limits.py, mpqueue/rates.py): a limit may be a rate alone,
        # and keeps its rate's log of recent starts as two arrays
        "ALTER TABLE {limits} ALTER COLUMN concurrency DROP NOT NULL",
        "ALTER TABLE {limits} ADD COLUMN rate_count integer",
        "ALTER TABLE {limits} ADD COLUMN rate_window_ms integer",
        "ALTER TABLE {limits} ADD COLUMN start_at bigint[] NOT NULL DEFAULT '{{}}'",
        "ALTER TABLE {limits} ADD COLUMN start_n integer[] NOT NULL DEFAULT '{{}}'",
    ),
    (  # 14: the dashboard: text previews of the arguments and the result, and the
        # indexes of its newest-first pages by state and by task (``browse``)
        "ALTER TABLE {jobs} ADD COLUMN preview text, ADD COLUMN result_preview text",
        "CREATE INDEX mpqueue_jobs_state_id ON {jobs} (state, id)",
        "CREATE INDEX mpqueue_jobs_name_id ON {jobs} (name, id)",
    ),
]


def qualified_names(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """``{jobs}``-style placeholders mapped to quoted, schema-qualified names (tables,
    and the indexes a migration drops: ``{key_index}``, ``{ready_index}``), and
    ``{seq_name}`` to the sequence's name as a string literal (``nextval`` takes text)."""
    names = {key: sql.Identifier(schema, table).as_string(conn) for key, table in TABLES.items()}
    names["seq_name"] = sql.Literal(names["seq"]).as_string(conn)
    # An index lives in its table's schema: dropping one names that schema too.
    names["key_index"] = sql.Identifier(schema, "mpqueue_jobs_key").as_string(conn)
    names["ready_index"] = sql.Identifier(schema, "mpqueue_jobs_ready").as_string(conn)
    names["ready_queue_index"] = sql.Identifier(schema, "mpqueue_jobs_ready_queue").as_string(conn)
    return names


def render(template: str, names: dict[str, str]) -> str:
    """``template`` with ``names`` (from ``qualified_names``) filled in; nothing else
    is ever formatted into SQL text: values go in as parameters."""
    return template.format(**names)


def current_schema(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise ConfigError(
            "the PostgreSQL connection has no schema to keep mpqueue's tables "
            "in: the search_path names no existing schema (set it with "
            "?options=-csearch_path%3Dmyschema in the URL)"
        )
    return str(row[0])


def installed_version(conn: psycopg.Connection[Any], names: dict[str, str]) -> int:
    """The schema version in place (0 when mpqueue never ran on this schema)."""
    exists = conn.execute("SELECT to_regclass(%s)", (names["version"],)).fetchone()
    if exists is None or exists[0] is None:
        return 0
    row = conn.execute(render("SELECT coalesce(max(version), 0) FROM {version}", names))
    found = row.fetchone()
    return int(found[0]) if found else 0


def migrate(conn: psycopg.Connection[Any], schema: str) -> int:
    """Bring ``schema`` up to the newest version; returns how many migrations ran.

    Raises ConfigError when the schema is newer than this mpqueue knows.
    """
    names = qualified_names(conn, schema)
    if _check_version(installed_version(conn, names)) == len(MIGRATIONS):
        return 0  # the common case: no lock taken
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (LOCK_CLASS, schema))
        conn.execute(
            render(
                "CREATE TABLE IF NOT EXISTS {version} (version integer "
                "PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
                names,
            )
        )
        start = _check_version(installed_version(conn, names))  # another may have won
        for version in range(start + 1, len(MIGRATIONS) + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(render(statement, names))
            conn.execute(render("INSERT INTO {version} (version) VALUES (%s)", names), (version,))
    return len(MIGRATIONS) - start


def _check_version(version: int) -> int:
    if version > len(MIGRATIONS):
        raise ConfigError(
            f"the PostgreSQL store has schema version {version}, newer than "
            f"this mpqueue supports ({len(MIGRATIONS)}); upgrade mpqueue"
        )
    return version
