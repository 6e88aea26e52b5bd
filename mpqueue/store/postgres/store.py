"""``PostgresStore``: the job store in a PostgreSQL database, shared by many hosts.

One row per job (see ``pg_schema.py``); a job's state is a column, and partial indexes
give each state its own small index, so claiming and promoting cost the same however
many finished jobs the table holds. Claims take rows with ``FOR UPDATE SKIP LOCKED``:
concurrent claimers, on any host, skip each other's rows instead of waiting or
double-claiming. Every method is one transaction; ``finish_and_claim`` too.
"""

from __future__ import annotations

import builtins
import functools
import itertools
import json
import random
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import psycopg

from ...cancellation import CancelReport, requested
from ...concurrency import TASK, Limit, LimitState, check_concurrency, check_kind
from ...dependencies import check_add_order, on_holders
from ...errors import ConfigError, JobNotFound
from ...expiry import expiry_entry
from ...history import Point
from ...limits import TIMEOUT_MAX_S, check_key_part, key_held, stored_problem
from ...outcomes import Destination, apply_outcome
from ...pausing import PauseChange, Paused, pause_target
from ...queues import (
    DEFAULT_QUEUE,
    Selection,
    check_queue_name,
    check_queues,
    claim_selected,
    depths_by_queue,
    is_queue_name,
)
from ...rates import Rate, earliest
from ...records import (
    FINISHED_STATES,
    Claim,
    Ending,
    ErrorInfo,
    JobRecord,
    JobState,
    Outcome,
    Progress,
    now_ms,
)
from ...schedules import Live, ScheduleRow, ScheduleSpec
from ..base import (
    BROWSE_SCAN_MAX,
    HEADS_READ_MAX,
    CheckReport,
    Fired,
    FirePlan,
    Gauges,
    HolderGone,
    OpCounter,
    Page,
    Requeued,
    Store,
    check_browse,
    check_run_at,
    redrive_state,
)
from ..codec import decode_server_info, encode_server_info
from . import cancels as pg_cancels
from . import graph as pg_graph
from . import history as pg_history
from . import limits as pg_limits
from . import pauses as pg_pauses
from . import schedules as pg_schedules
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
    "depends_on",
    "pass_results",
    "allow_failures",
    "key",
    "retry_on",
    "no_retry_on",
    "expires_at_ms",
    "queue",
    "preview",
    "result_preview",
)
_COLUMNS = ", ".join(_FIELDS)
_PLAIN_COLUMNS = ", ".join(_FIELDS[:18])  # a job without workflow fields: "add" writes these
_BLOBS = {
    "payload": "''::bytea AS payload",
    "func": "NULL::bytea AS func",
    "result": "NULL::bytea AS result",
}
_LIST_COLUMNS = ", ".join(_BLOBS.get(f, f) for f in _FIELDS)  # _FIELDS, blobs left out
_STATES = {state.value: state for state in JobState}
_Cycle = tuple[list[bool], list[JobRecord]]  # (inside the class, ``list`` is a method)
_SQL_GRAPH = {key: text.replace("{columns}", _COLUMNS) for key, text in pg_graph.SQL.items()}
_SQL_CANCELS = pg_cancels.SQL
_SQL_PAUSES = pg_pauses.SQL
_SQL_LIMITS = pg_limits.sql(pg_pauses.CLAIMABLE)
_SQL_HISTORY = pg_history.SQL
_SQL_SCHEDULES = pg_schedules.SQL

_DROP_EDGES = """outgoing AS (DELETE FROM {deps} WHERE dep_id IN (SELECT id FROM gone)),
        incoming AS (DELETE FROM {deps} d USING
            (SELECT id, unnest(depends_on) AS dep FROM gone) g
            WHERE d.dep_id = g.dep AND d.job_id = g.id)
        SELECT count(*) FROM gone"""


# The ``paused`` of a row written from nowhere (see pauses.py), named ``u``: a new one,
# or one requeued from dead.
_NEW_PAUSED = pg_pauses.task_paused("u.name", lock=True)


def _insert_unnest(extra_column: str = "", extra_value: str = "", optional: bool = False) -> str:
    """The bulk insert of plain jobs: one array per column, in ``_insert_row``'s order
    (``extra_column`` takes ``extra_value`` for every row); with ``optional``, four
    arrays more, the retry lists, the deadline and the queue (``_optional_row``), for a
    batch in which some job has one of them."""
    list_columns, list_values, list_arrays, list_names = "", "", "", ""
    if optional:
        list_columns = ", retry_on, no_retry_on, expires_at_ms, queue"
        list_values = ", u.retry_on, u.no_retry_on, u.expires_at_ms, u.queue"
        list_arrays = ", %s::text[], %s::text[], %s::bigint[], %s::text[]"
        list_names = " retry_on, no_retry_on, expires_at_ms, queue,"
    lane = pg_limits.new_lane("u.name", "u.queue" if optional else "'default'")
    return f"""INSERT INTO {{jobs}} ({_PLAIN_COLUMNS}, preview{list_columns}{extra_column},
            paused, lane)
        SELECT u.id, u.name, u.state, u.payload, u.priority, nextval({{seq_name}}),
               u.run_at_ms, u.created_at_ms, u.attempts, u.max_retries, u.timeout_s,
               u.func, u.result, u.errors, u.finished_at_ms, u.backoff_base_s,
               u.backoff_cap_s, u.signature, u.preview{list_values}{extra_value},
               {_NEW_PAUSED}, {lane}
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[], %s::integer[],
                    %s::bigint[], %s::bigint[], %s::integer[], %s::integer[],
                    %s::float8[], %s::bytea[], %s::bytea[], %s::text[], %s::bigint[],
                    %s::float8[], %s::float8[], %s::bytea[], %s::text[]{list_arrays})
             WITH ORDINALITY
             AS u(id, name, state, payload, priority, run_at_ms, created_at_ms, attempts,
             max_retries, timeout_s, func, result, errors, finished_at_ms, backoff_base_s,
             backoff_cap_s, signature, preview,{list_names} ord)
        ORDER BY u.ord RETURNING id, seq"""


def _claim_statement(queue_filter: str, plain: bool = True, given: str = "") -> str:
    """The claim: up to N ready jobs (of one queue, with ``queue_filter``) in priority
    and FIFO order become processing, or expired if past their deadline (see _SQL).

    ``plain``: the claim while no limit exists (see limits.py): of jobs in no lane, and
    nothing once a limit exists; each row it returns ends with whether one does (one
    row of NULLs and that when it claims nothing). Else the claim of the (id, holds)
    rows ``given`` (a table expression), each claimed job's slots written by the same
    update and counted by the same statement; each row it returns ends with them."""
    if not plain:
        # A job the claim ended expired takes no slot; one _take buries gives its back.
        return f"""WITH claimed AS ({_claim_update(queue_filter, given)}),
            counted AS ({pg_limits.COUNT_CLAIMED.format(claimed="claimed")})
            SELECT {_COLUMNS}, holds FROM claimed"""
    plain_filter = f"AND lane IS NULL AND {pg_limits.NO_LIMITS} {queue_filter}"
    return f"""WITH claimed AS ({_claim_update(plain_filter)})
        SELECT c.*, f.limited FROM (SELECT EXISTS (SELECT 1 FROM {{limits}}) AS limited) f
        LEFT JOIN claimed c ON true"""


def _claim_update(queue_filter: str, given: str = "") -> str:
    join, hold = "", ""
    if given:
        join = f"JOIN {given} AS u(id, holds) ON u.id = j.id"
        hold = "holds = CASE WHEN picked.gone THEN NULL ELSE nullif(picked.holds, 0) END,"
    return f"""UPDATE {{jobs}} AS j SET {hold}
                state = CASE WHEN picked.gone THEN 'expired' ELSE 'processing' END,
                attempts = CASE WHEN NOT picked.gone AND j.attempts < {INTEGER_MAX}
                                THEN j.attempts + 1 ELSE j.attempts END,
                worker_id = CASE WHEN picked.gone THEN NULL ELSE %s::text END,
                claimed_at_ms = CASE WHEN picked.gone THEN NULL ELSE %s::bigint END,
                deadline_ms = CASE WHEN NOT picked.gone AND j.timeout_s > 0
                                        AND j.timeout_s <= {TIMEOUT_MAX_S}
                                   THEN %s::bigint + trunc(j.timeout_s * 1000)::bigint END,
                finished_at_ms = CASE WHEN picked.gone THEN %s::bigint ELSE j.finished_at_ms END
            FROM (SELECT j.id, coalesce(expires_at_ms <= %s AND attempts = 0, false) AS gone
                         {", u.holds" if given else ""}
                  FROM {{jobs}} AS j {join} WHERE state = 'ready' AND NOT paused {queue_filter}
                    AND {pg_pauses.CLAIMABLE}
                  ORDER BY priority DESC, seq LIMIT %s FOR UPDATE OF j SKIP LOCKED) AS picked
            WHERE j.id = picked.id
            RETURNING {", ".join("j." + f for f in _FIELDS)}{", j.holds" if given else ""}"""


def _list_statements() -> dict[str, str]:
    """ "list", "list_name", "list_state", ..., "list_name_state_queue": one statement
    per set of filters. Variants, not "(%s IS NULL OR name = %s)": a prepared generic
    plan of that form could not use the name index. A listing by name walks the name
    index (created_at_ms, id), the others the primary key (ids begin with the creation
    time), in the order it returns, so LIMIT stops the scan."""
    statements = {}
    for flags in itertools.product((False, True), repeat=3):
        used = [column for column, on in zip(("name", "state", "queue"), flags) if on]
        where = " AND ".join(f"{column} = %s" for column in used)
        order = "created_at_ms, id" if "name" in used else "id"
        statements["list" + "".join(f"_{c}" for c in used)] = (
            f"SELECT {_LIST_COLUMNS} FROM {{jobs}} {'WHERE ' + where if where else ''} "
            f"ORDER BY {order} LIMIT %s"
        )
    return statements


def _browse_statements() -> dict[str, str]:
    """ "browse", "browse_name", ..., "browse_name_state_queue": a newest-first page
    below a cursor (see ``Store.browse``). A page by task walks ``mpqueue_jobs_name_id``
    backwards from (task, cursor), one by state ``mpqueue_jobs_state_id``, and LIMIT
    stops the walk; the other filters are checked on the rows it visits. The lead column
    is bounded by a row comparison and ``>=``, not ``=``: against a constant, the
    planner would drop it from the order and could walk the primary key instead,
    filtering, which reads every newer job when the matching ones are old. Parameters:
    the lead column's value, the cursor, the value again, the other filters, LIMIT.
    Without task or state, the primary key: (filters, cursor, LIMIT)."""
    statements = {}
    for flags in itertools.product((False, True), repeat=3):
        used = [column for column, on in zip(("name", "state", "queue"), flags) if on]
        key = "browse" + "".join(f"_{c}" for c in used)
        lead = next((c for c in used if c in ("name", "state")), None)
        if used == ["queue"]:
            continue  # the queue alone: "browse_span" and "browse_queue_span"
        if lead is None:
            where = "".join(f"{column} = %s AND " for column in used)
            statements[key] = (
                f"SELECT {_LIST_COLUMNS} FROM {{jobs}} WHERE {where}id < %s "
                "ORDER BY id DESC LIMIT %s"
            )
            continue
        rest = "".join(f" AND {column} = %s" for column in used if column != lead)
        # With other filters than the lead, the walk is bounded by a span of at most
        # BROWSE_SCAN_MAX entries of the lead's index (its lowest id is the last
        # parameter but LIMIT), as a page by queue alone is.
        spanned = " AND id >= %s" if rest else ""
        statements[key] = (
            f"SELECT {_LIST_COLUMNS} FROM {{jobs}} WHERE ({lead}, id) < (%s, %s) "
            f"AND {lead} >= %s{rest}{spanned} ORDER BY {lead} DESC, id DESC LIMIT %s"
        )
        statements[f"browse_span_{lead}"] = (
            f"SELECT min(id), count(*) FROM (SELECT id FROM {{jobs}} "
            f"WHERE ({lead}, id) < (%s, %s) AND {lead} >= %s "
            f"ORDER BY {lead} DESC, id DESC LIMIT %s) AS span"
        )
    return statements


_SQL = {
    "add": _insert_unnest(),
    # "add" of jobs that later jobs of the same add depend on (a chord's members): they
    # are flagged as they are written, not updated again after.
    "add_depended": _insert_unnest(", has_dependents", ", true"),
    "add_optional": _insert_unnest(optional=True),
    "add_depended_optional": _insert_unnest(", has_dependents", ", true", optional=True),
    # A due job past its deadline (expiry.is_expired, in SQL) ends expired instead; the
    # ids of those come back for their history and dependents (``_end_expired``).
    "promote": """WITH moved AS (UPDATE {jobs} AS j SET
            state = CASE WHEN j.expires_at_ms <= %s AND j.attempts = 0 THEN 'expired'
                         ELSE 'ready' END,
            finished_at_ms = CASE WHEN j.expires_at_ms <= %s AND j.attempts = 0 THEN %s
                                  ELSE j.finished_at_ms END
        WHERE j.id IN (SELECT id FROM {jobs} WHERE state = 'scheduled' AND run_at_ms <= %s
                       FOR UPDATE SKIP LOCKED)
        RETURNING j.id, j.state)
        SELECT count(*), array_agg(id) FILTER (WHERE state = 'expired') FROM moved""",
    # A stored value out of bounds must not fail the statement (it would stop every
    # claim): such a row gets no deadline and keeps its attempts, and _claim buries it.
    # A picked job past its deadline (``gone``: expiry.is_expired, in SQL) ends expired
    # instead of processing, in the same statement; _claim writes its history.
    "claim": _claim_statement(""),
    # The claim of one named queue, over its own index (mpqueue_jobs_ready_queue).
    "claim_queue": _claim_statement("AND queue = %s"),
    # The claim of the jobs limits.pick chose (limits in use), and the claim that
    # chooses them itself where each laned job takes one slot (limits.one_slot_each).
    "claim_ids": _claim_statement("", plain=False, given="unnest(%s::text[], %s::smallint[])"),
    **{
        f"claim_chosen{suffix}": _claim_statement(
            "", plain=False, given=_SQL_LIMITS[f"chosen{suffix}"]
        )
        for suffix in ("", "_queue")
    },
    "expired_rows": "SELECT id, name, errors, expires_at_ms FROM {jobs} WHERE id = ANY(%s)",
    "expired_history": """UPDATE {jobs} AS j SET errors = u.errors
        FROM unnest(%s::text[], %s::text[]) AS u(id, errors) WHERE j.id = u.id""",
    "held": """SELECT id, worker_id, attempts, max_retries, backoff_base_s, backoff_cap_s,
            errors, name, has_dependents, cancel_request, expires_at_ms, holds, queue FROM {jobs}
        WHERE id = ANY(%s) AND state = 'processing' ORDER BY id FOR UPDATE""",
    # A job with dependencies or a key, one at a time (see graph.py): the rest of the
    # batch goes through "add". A held key inserts nothing (the caller reads the holder).
    # The last value is the task name again, for its ``paused``.
    "add_linked": f"""INSERT INTO {{jobs}} ({_COLUMNS}, open_deps, paused, lane)
        VALUES (%s, %s, %s, %s, %s, nextval({{seq_name}}), %s, %s, %s, %s, %s, %s, %s, %s,
                %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                {pg_pauses.task_paused("%s", lock=True)},
                {pg_limits.new_lane("%s", "%s")})
        ON CONFLICT (name, key) WHERE key IS NOT NULL
            AND state NOT IN ('dead', 'cancelled', 'expired')
        DO NOTHING RETURNING seq""",
    # One statement applies every outcome of a batch; NULL means "keep the old value".
    "finish": """UPDATE {jobs} AS j SET state = u.state, result = u.result,
            errors = coalesce(u.errors, j.errors), run_at_ms = coalesce(u.run_at_ms, j.run_at_ms),
            attempts = j.attempts + u.attempts_delta, finished_at_ms = u.finished_at_ms,
            dead_reason = u.dead_reason, worker_id = NULL, claimed_at_ms = NULL,
            deadline_ms = NULL, cancel_request = NULL, holds = NULL,
            seq = CASE WHEN u.requeue THEN nextval({seq_name}) ELSE j.seq END,
            result_preview = u.result_preview
        FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::text[], %s::bigint[],
                    %s::integer[], %s::bigint[], %s::text[], %s::boolean[], %s::text[])
             AS u(id, state, result, errors, run_at_ms, attempts_delta, finished_at_ms,
                  dead_reason, requeue, result_preview)
        WHERE j.id = u.id""",
    "park": """UPDATE {jobs} SET state = 'dead', dead_reason = %s, worker_id = NULL,
            claimed_at_ms = NULL, deadline_ms = NULL, holds = NULL WHERE id = %s""",
    "bury": """UPDATE {jobs} SET state = 'dead', dead_reason = %s, errors = %s,
            finished_at_ms = %s, worker_id = NULL, claimed_at_ms = NULL, deadline_ms = NULL,
            holds = NULL
        WHERE id = %s""",
    "next_run_at": "SELECT min(run_at_ms) FROM {jobs} WHERE state = 'scheduled'",
    # The same, with every rate limit's row (one row of NULLs beside it if none).
    "next_run_at_rates": """SELECT (SELECT min(run_at_ms) FROM {jobs} WHERE state = 'scheduled'),
            r.rate_count, r.rate_window_ms, r.start_at, r.start_n
        FROM (SELECT 1) AS one LEFT JOIN {limits} r ON r.rate_count IS NOT NULL""",
    "claims": """SELECT id, worker_id, claimed_at_ms, deadline_ms FROM {jobs}
        WHERE state = 'processing' ORDER BY worker_id, id""",
    "claims_of": """SELECT id, worker_id, claimed_at_ms, deadline_ms FROM {jobs}
        WHERE state = 'processing' AND worker_id = %s ORDER BY id""",
    # The slots of a server's claims being put back or ended (see requeue_server).
    "release_worker": """WITH o AS (SELECT id, name, queue, holds FROM {jobs}
            WHERE state = 'processing' AND worker_id = %s AND holds IS NOT NULL FOR UPDATE),
        cleared AS (UPDATE {jobs} AS j SET holds = NULL FROM o WHERE j.id = o.id)
        SELECT name, queue, holds FROM o""",
    "holds_of": "SELECT name, queue, holds FROM {jobs} WHERE id = %s AND state = 'processing'",
    "requeue_worker": """UPDATE {jobs} SET state = 'ready', attempts = attempts - 1,
            worker_id = NULL, claimed_at_ms = NULL, deadline_ms = NULL
        WHERE id IN (SELECT id FROM {jobs} WHERE state = 'processing' AND worker_id = %s
                     ORDER BY id FOR UPDATE)
        RETURNING id""",
    "get": f"SELECT {_COLUMNS} FROM {{jobs}} WHERE id = %s",
    "get_many": f"SELECT {_COLUMNS} FROM {{jobs}} WHERE id = ANY(%s)",
    "endings": "SELECT id, state, result, errors FROM {jobs} WHERE id = ANY(%s)",
    "seqs_of": "SELECT id, seq FROM {jobs} WHERE id = ANY(%s)",
    # Listing leaves the blobs out (see Store.list); see _list_statements.
    **_list_statements(),
    **_browse_statements(),
    # A page by queue alone: no index orders a queue's jobs by id, so a page reads the
    # next BROWSE_SCAN_MAX ids below the cursor (the primary key) and the queue's jobs
    # among them, as the LMDB store's budget does.
    "browse_span": """SELECT min(id), count(*) FROM (SELECT id FROM {jobs} WHERE id < %s
        ORDER BY id DESC LIMIT %s) AS span""",
    "browse_queue_span": f"""SELECT {_LIST_COLUMNS} FROM {{jobs}} WHERE queue = %s
        AND id < %s AND id >= %s ORDER BY id DESC LIMIT %s""",
    "newest_dead": f"""SELECT {_LIST_COLUMNS} FROM {{jobs}} WHERE state = 'dead'
        ORDER BY id DESC LIMIT %s""",
    # The first claimable job of each priority, found by one index seek each down the
    # claim index (a skip scan), at most HEADS_READ_MAX priorities.
    "oldest_ready": """WITH RECURSIVE heads (priority, run_at_ms, n) AS (
            (SELECT priority, run_at_ms, 1 FROM {jobs} WHERE state = 'ready' AND NOT paused
             AND lane IS NULL
             ORDER BY priority DESC, seq LIMIT 1)
            UNION ALL
            SELECT nxt.priority, nxt.run_at_ms, heads.n + 1 FROM heads, LATERAL (
                SELECT priority, run_at_ms FROM {jobs}
                WHERE state = 'ready' AND NOT paused AND lane IS NULL
                    AND priority < heads.priority
                ORDER BY priority DESC, seq LIMIT 1) AS nxt
            WHERE heads.n < %s)
        SELECT min(run_at_ms) FROM heads""",
    "queue_depths": """SELECT queue, count(*) FILTER (WHERE state = 'ready'),
            count(*) FILTER (WHERE state = 'processing')
        FROM {jobs} WHERE state IN ('ready', 'processing') GROUP BY queue""",
    # Ready jobs in two counts, each over its own index (a paused one is still ready).
    "stats": """SELECT (SELECT count(*) FROM {jobs}
                    WHERE state = 'ready' AND NOT paused AND lane IS NULL)
                + (SELECT count(*) FROM {jobs}
                    WHERE state = 'ready' AND NOT paused AND lane IS NOT NULL)
                + (SELECT count(*) FROM {jobs} WHERE paused AND state = 'ready'),
            (SELECT count(*) FROM {jobs} WHERE state = 'scheduled'),
            (SELECT count(*) FROM {jobs} WHERE state = 'processing'),
            (SELECT count(*) FROM {jobs} WHERE state = 'done'),
            (SELECT count(*) FROM {jobs} WHERE state = 'dead'),
            (SELECT count(*) FROM {jobs} WHERE state = 'waiting'),
            (SELECT count(*) FROM {jobs} WHERE state = 'cancelled'),
            (SELECT count(*) FROM {jobs} WHERE state = 'expired')""",
    "delete": "DELETE FROM {jobs} WHERE id = %s",
    "lock_one": f"SELECT {_COLUMNS} FROM {{jobs}} WHERE id = %s FOR UPDATE",
    "requeue_dead": f"""UPDATE {{jobs}} AS u SET state = %s, attempts = 0,
            run_at_ms = %s, finished_at_ms = NULL, dead_reason = NULL,
            seq = nextval({{seq_name}}), paused = {_NEW_PAUSED},
            lane = {pg_limits.new_lane("u.name", "u.queue")}, holds = NULL
        WHERE id = %s RETURNING seq""",
    # Deleting finished jobs takes their edges with them, both ways (a cancelled job's
    # edges from dependencies still running may be open: nothing counts them any more).
    "purge_dead": """WITH gone AS (DELETE FROM {jobs} WHERE state = 'dead'
            RETURNING id, depends_on), """
    + _DROP_EDGES,
    "expire": """WITH gone AS (DELETE FROM {jobs} WHERE state IN ('done', 'cancelled', 'expired')
            AND finished_at_ms < %s RETURNING id, depends_on), """
    + _DROP_EDGES,
    "key_taken": """SELECT id FROM {jobs} WHERE name = %s AND key = %s AND id <> %s
        AND state NOT IN ('dead', 'cancelled', 'expired')""",
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
            OR (state IN ('done', 'expired') AND finished_at_ms IS NULL)
            OR (state <> 'processing' AND cancel_request IS NOT NULL) ORDER BY id""",
    "check_holders": """SELECT DISTINCT worker_id FROM {jobs} j WHERE state = 'processing'
            AND worker_id IS NOT NULL
            AND NOT EXISTS (SELECT 1 FROM {workers} w WHERE w.worker_id = j.worker_id)""",
    "check_seqs": """SELECT seq, count(*) FROM {jobs} WHERE state IN ('ready', 'scheduled')
            GROUP BY seq HAVING count(*) > 1""",
    "check_errors": "SELECT id, errors FROM {jobs} WHERE errors <> '[]'",
    # An edge counts while it is open and its dependency has not ended.
    "check_waiting": """SELECT j.id, j.open_deps, count(d.job_id) FILTER (WHERE d.open AND
            dj.state NOT IN ('done', 'dead', 'cancelled', 'expired'))
        FROM {jobs} j LEFT JOIN {deps} d ON d.job_id = j.id LEFT JOIN {jobs} dj ON dj.id = d.dep_id
        WHERE j.state = 'waiting' GROUP BY j.id, j.open_deps
        HAVING j.open_deps <> count(d.job_id) FILTER (WHERE d.open AND
            dj.state NOT IN ('done', 'dead', 'cancelled', 'expired')) OR j.open_deps < 1""",
    "check_edges": """SELECT d.dep_id, d.job_id FROM {deps} d WHERE NOT EXISTS
            (SELECT 1 FROM {jobs} j WHERE j.id = d.job_id AND d.dep_id = ANY(j.depends_on))""",
    "count": "SELECT count(*) FROM {jobs}",
    "record_progress": """UPDATE {jobs} AS j SET progress = u.progress
        FROM unnest(%b::text[], %b::text[]) AS u(id, progress) WHERE j.id = u.id""",
    "progress": "SELECT id, progress FROM {jobs} WHERE id = ANY(%s)",
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
        # Whether this handle's last claim found limits: it then asks limits.pick first
        # instead of trying the plain claim, which claims nothing once a limit exists.
        # Only a shortcut: a pick that finds no limits turns it off again.
        self.limits_seen = False
        # The slots the outcomes of a finish_and_claim free, while its claim may still
        # give them back in its own statement (see _finish); whatever it does not is
        # written after it. Empty outside that transaction.
        self.unreleased: list[tuple[str, str, Any]] = []
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
        sql = (
            _SQL
            | _SQL_GRAPH
            | _SQL_CANCELS
            | _SQL_PAUSES
            | _SQL_HISTORY
            | _SQL_SCHEDULES
            | _SQL_LIMITS
        )
        self.sql = {key: pg_schema.render(text, names) for key, text in sql.items()}

    # ---- adding -------------------------------------------------------------------
    def add(self, records: Sequence[JobRecord]) -> None:
        for rec in records:  # the LMDB store's limits, so a queue can move between them
            check_key_part(rec.name, f"task name {rec.name!r}")
        check_queues(records)
        if any(rec.depends_on or rec.key is not None for rec in records):
            self._add_with_links(records)
        elif records:  # safe to repeat: see _add_unless_committed
            self.session.run(
                lambda q: self._add(q, records),
                resume=lambda q: self._add_unless_committed(q, records),
            )

    def _add_with_links(self, records: Sequence[JobRecord]) -> None:
        """``add`` of a batch in which some jobs have dependencies or a key: the plain
        ones in one statement, then the others in order (see graph.py)."""
        now = now_ms()
        check_add_order(records)
        stored = self.session.run(
            lambda q: self._add_linked(q, records, now),
            resume=lambda q: self._resume_linked(q, records, now),
        )
        for rec, final in zip(records, stored):
            if final is not rec:
                rec.__dict__.update(final.__dict__)

    def _add_linked(self, q: Query, records: Sequence[JobRecord], now: int) -> list[JobRecord]:
        plain = [rec for rec in records if not rec.depends_on and rec.key is None]
        depended = {dep for rec in records for dep in rec.depends_on}
        for flagged in (False, True):
            part = [rec for rec in plain if (rec.id in depended) is flagged]
            if part:
                statement = "add_depended" if flagged else "add"
                self._add(q, part, notify=False, statement=statement)
        replaced: dict[str, str] = {}
        stored = []
        for rec in records:
            if not rec.depends_on and rec.key is None:
                stored.append(rec)
                continue
            final = self._add_one_linked(q, rec, now, replaced)
            if final.id != rec.id:
                replaced[rec.id] = final.id
            stored.append(final)
        q.rows(self.sql["notify"], (self.channel,))
        return stored

    def _add_one_linked(
        self, q: Query, rec: JobRecord, now: int, replaced: dict[str, str]
    ) -> JobRecord:
        """Insert one job with dependencies or a key; returns it as stored, or the job
        holding its key."""
        if rec.key is not None:
            holder = q.one(self.sql["key_holder"], (rec.name, rec.key))
            if holder is not None:
                return _read(holder)
        rec = on_holders(rec, replaced)
        admission = pg_graph.admit_new(q, self.sql, rec, now) if rec.depends_on else None
        new = rec if admission is None else admission.record
        open_deps = 0 if admission is None else admission.open_deps
        lane = (new.name, new.name, new.queue, new.queue)  # the four of new_lane("%s", "%s")
        values = (
            *_insert_row(new),
            *_workflow_row(new),
            *_optional_row(new),
            new.preview,
            new.result_preview,
            open_deps,
            new.name,
            *lane,
        )
        row = q.one(self.sql["add_linked"], values)
        if row is None:  # another producer took the key after our look
            holder = q.one(self.sql["key_holder"], (rec.name, rec.key))
            assert holder is not None  # the conflict's row, locked by the insert's wait
            return _read(holder)
        q.counter.puts += 1
        new = new.evolve(seq=row[0])
        if admission is not None:
            pg_graph.link(q, self.sql, admission)
            if new.state is JobState.CANCELLED:
                self._graph(q).file_cancelled(new, admission.reason)  # with its reason
        return new

    def _resume_linked(self, q: Query, records: Sequence[JobRecord], now: int) -> list[JobRecord]:
        """``_add_linked`` again after a COMMIT whose reply was lost: none of the ids in
        the store means it did not commit; some means it did (the others were held
        keys), and the stored records are read back."""
        found = {row[0] for row in q.rows(self.sql["seqs_of"], ([r.id for r in records],))}
        if not found:
            return self._add_linked(q, records, now)
        stored = []
        for rec in records:
            row = q.one(self.sql["get"], (rec.id,)) if rec.id in found else None
            if row is None and rec.key is not None:
                row = q.one(self.sql["key_holder"], (rec.name, rec.key))
            stored.append(rec if row is None else _read(row))
        return stored

    def _add(
        self,
        q: Query,
        records: Sequence[JobRecord],
        *,
        notify: bool = True,
        statement: str = "add",
    ) -> None:
        # The optional columns only in a batch where a job has one (see _insert_unnest).
        optional = any(
            rec.retry_on is not None
            or rec.no_retry_on
            or rec.expires_at_ms is not None
            or rec.queue != DEFAULT_QUEUE
            for rec in records
        )
        columns: list[list[Any]] = [[] for _ in range(22 if optional else 18)]
        for rec in records:
            row = (*_insert_row(rec), rec.preview)
            if optional:
                row += _optional_row(rec)
            for column, value in zip(columns, row):
                column.append(value)
        seqs = dict(q.rows(self.sql[statement + ("_optional" if optional else "")], columns))
        for rec in records:
            rec.seq = seqs[rec.id]
        q.counter.puts += len(records)
        if notify:
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
        return self.session.run(lambda q: self._promote(q, now_ms))

    def _promote(self, q: Query, now_ms: int) -> int:
        (count, lapsed), *_ = q.rows(self.sql["promote"], (now_ms, now_ms, now_ms, now_ms))
        q.counter.puts += int(count)
        if lapsed:  # only when a job expired: a promotion without pays no statement more
            self._end_expired(q, q.rows(self.sql["expired_rows"], (list(lapsed),)), now_ms)
        return int(count)

    def claim(
        self, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> list[JobRecord]:
        _check_server_id(server_id)
        if limit <= 0:
            return []
        return self.session.run(lambda q: self._claim(q, server_id, limit, now_ms, queues))

    def _claim(
        self, q: Query, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> list[JobRecord]:
        if queues is None:
            return self._claim_from(q, None, server_id, limit, now_ms)[0]

        def take(name: str, wanted: int) -> tuple[list[JobRecord], bool]:
            return self._claim_from(q, name, server_id, wanted, now_ms)

        return claim_selected(queues, limit, self.rng, take)

    def _claim_from(
        self, q: Query, queue: str | None, server_id: str, limit: int, now_ms: int
    ) -> tuple[list[JobRecord], bool]:
        """Claim from one queue (None: from all of them, in priority and FIFO order);
        and whether some job ended otherwise (``queues.claim_selected``)."""
        claimed: list[JobRecord] = []
        ended = False
        while True:
            wanted = limit - len(claimed)
            statement = "claim" if queue is None else "claim_queue"
            named = () if queue is None else (queue,)
            params = (server_id, now_ms, now_ms, now_ms, now_ms, *named, wanted)
            holds: dict[str, int] = {}
            states: dict[tuple[str, str], LimitState] = {}
            if self.limits_seen:  # the claim of limits.pick's ids, with their slots
                rows, holds, states = self._claim_limited(q, queue, server_id, wanted, now_ms)
                self.limits_seen = bool(states)
            else:
                found = q.rows(self.sql[statement], params)
                rows = [row[:-1] for row in found if row[0] is not None]
                if found and found[0][-1]:  # a limit exists: it claimed nothing
                    self.limits_seen = True
                    rows, holds, states = self._claim_limited(q, queue, server_id, wanted, now_ms)
            q.counter.puts += len(rows)  # RETURNING counted them as reads; each was updated
            before = len(claimed)
            self._take(q, rows, now_ms, claimed)
            if holds:
                self._count_claimed(q, rows, claimed[before:], holds, states, now_ms)
            # Again while some picked jobs ended otherwise (expired, bad), which may have
            # released others; each statement takes its rows out of ready, so this ends.
            if len(claimed) - before == len(rows) or len(claimed) >= limit:
                break
            ended = True
        claimed.sort(key=lambda r: (-r.priority, r.seq))  # RETURNING has no order
        ended = ended or len(claimed) - before < len(rows)
        return claimed, ended

    def _claim_limited(
        self, q: Query, queue: str | None, server_id: str, wanted: int, now_ms: int
    ) -> tuple[list[tuple[Any, ...]], dict[str, int], dict[tuple[str, str], LimitState]]:
        """The claim where limits exist: the rows it claimed, the slots of each, and
        the limits as it read them. The claim statement gives back the slots of the
        cycle's outcomes (``unreleased``)."""
        freed = pg_limits.deltas(self.unreleased, -1)
        states = pg_limits.read(q, self.sql, freed)
        lanes = pg_limits.Lanes(states, queue, wanted, now_ms)
        kinds, names, counts = pg_limits.columns(freed)
        params: tuple[Any, ...] = (server_id, now_ms, now_ms, now_ms, now_ms)
        if pg_limits.one_slot_each(states):
            name = "claim_" + pg_limits.statement("chosen", queue)
            params = (*params, *lanes.params(), wanted, wanted)
        else:
            picked = pg_limits.pick(q, self.sql, states, lanes)
            if not picked:
                return [], {}, states
            ids, slots = [job_id for job_id, _ in picked], [bits for _, bits in picked]
            name, params = "claim_ids", (*params, ids, slots, len(picked))
        found = q.rows(self.sql[name], (*params, kinds, names, counts))
        self.unreleased = []  # the claim's statement gave them back
        return [row[:-1] for row in found], {row[0]: row[-1] or 0 for row in found}, states

    def _count_claimed(
        self,
        q: Query,
        rows: list[tuple[Any, ...]],
        claimed: list[JobRecord],
        holds: dict[str, int],
        states: dict[tuple[str, str], LimitState],
        now_ms: int,
    ) -> None:
        """After a limited claim (which counted the slots of the rows it claimed): the
        slots of the rows _take buried given back, the starts of the rest logged."""
        kept = {rec.id for rec in claimed}
        buried = [
            (str(row[1]), str(row[25]), holds.get(row[0], 0))
            for row in rows
            if row[0] not in kept and row[2] != JobState.EXPIRED.value
        ]
        if any(slots for *_, slots in buried):
            pg_limits.release(q, self.sql, buried)
        taken = [(rec.name, rec.queue, holds.get(rec.id, 0)) for rec in claimed]
        pg_limits.log_starts(q, self.sql, taken, states, now_ms)

    def _take(
        self, q: Query, rows: list[tuple[Any, ...]], now_ms: int, claimed: list[JobRecord]
    ) -> None:
        """The claim statement's rows: claimed ones into ``claimed``; those it ended
        expired get their history, and bad ones are buried."""
        lapsed = []
        for row in rows:
            if row[2] == JobState.EXPIRED.value:
                lapsed.append((row[0], row[1], row[13], row[24]))
                continue
            try:
                rec = _read(row)
            except ValueError as exc:  # unreadable: park it, never hand it out
                q.write(self.sql["park"], (f"corrupt record: {exc}", row[0]))
                self._settle(q, [(row[0], str(row[1]), JobState.DEAD)], now_ms)
                continue
            problem = stored_problem(rec)  # written by older code or by hand
            if problem is None:
                claimed.append(rec)
            else:
                self._bury_bad(q, rec, problem, now_ms)
                self._settle(q, [(rec.id, rec.name, JobState.DEAD)], now_ms)
        if lapsed:
            self._end_expired(q, lapsed, now_ms)

    def _end_expired(self, q: Query, rows: Sequence[tuple[Any, ...]], now_ms: int) -> None:
        """Finish the jobs a statement ended expired ((id, name, errors, deadline) rows):
        the ``Expired`` entry last in their history, their dependents settled."""
        ids, histories, ends = [], [], []
        for job_id, name, errors, deadline in sorted(rows):
            try:
                history = _decode_errors(errors) if errors != "[]" else ()
            except ValueError:
                q.write(self.sql["park"], ("corrupt record: errors cannot be decoded", job_id))
                ends.append((job_id, name, JobState.DEAD))
                continue
            ids.append(job_id)
            histories.append(_encode_errors((*history, expiry_entry(deadline or 0, now_ms))))
            ends.append((job_id, name, JobState.EXPIRED))
        if ids:
            q.write(self.sql["expired_history"], (ids, histories))
        self._settle(q, ends, now_ms)

    def _bury_bad(self, q: Query, rec: JobRecord, problem: str, now_ms: int) -> None:
        """A row holding a value out of bounds is that job's failure: dead, with the
        reason in its error history (as the LMDB store does)."""
        reason = f"stored value out of bounds: {problem}"
        error = ErrorInfo("OutOfBounds", reason, kind="corrupt", at_ms=now_ms)
        q.write(
            self.sql["bury"], (_text(reason), _encode_errors(rec.errors + (error,)), now_ms, rec.id)
        )

    def next_run_at_ms(self, now_ms: int | None = None) -> int | None:
        if now_ms is None:
            row = self.session.run(lambda q: q.one(self.sql["next_run_at"]), write=False)
            return None if row is None or row[0] is None else int(row[0])
        rows = self.session.run(lambda q: q.rows(self.sql["next_run_at_rates"]), write=False)
        due = None if not rows or rows[0][0] is None else int(rows[0][0])
        return earliest(due, pg_limits.reopens_at([row[1:] for row in rows], now_ms))

    # ---- outcomes -----------------------------------------------------------------
    def finish(self, outcomes: Sequence[Outcome], now_ms: int) -> list[bool]:
        if not outcomes:
            return []
        return self.session.run(lambda q: self._finish(q, outcomes, now_ms))

    def _finish(
        self, q: Query, outcomes: Sequence[Outcome], now_ms: int, defer: bool = False
    ) -> list[bool]:
        """Apply ``outcomes``; with ``defer``, the slots they free go to
        ``self.unreleased`` for the claim that follows to give back."""
        held = {row[0]: row for row in q.rows(self.sql["held"], ([o.job_id for o in outcomes],))}
        freed = [(row[7], row[12], row[11]) for row in held.values() if row[11]]
        updates: list[tuple[Any, ...]] = []
        ends: list[tuple[str, str, JobState]] = []  # of jobs others wait for
        acks = []
        for outcome in outcomes:
            row = held.pop(outcome.job_id, None)  # popped: a repeated outcome is late
            if row is None or row[1] != outcome.server_id:
                acks.append(False)  # the claim was taken back: a late outcome changes nothing
                if row is not None and row[11]:
                    freed.remove((row[7], row[12], row[11]))  # still running elsewhere
                continue
            if row[9] is not None:  # its cancel was requested: it ends cancelled
                outcome = requested(outcome, row[9], row[2], now_ms)
            update = self._outcome_update(row, outcome, now_ms)
            acks.append(update is not None)
            if update is None:
                q.write(
                    self.sql["park"], ("corrupt record: errors cannot be decoded", outcome.job_id)
                )
                ends.append((outcome.job_id, row[7], JobState.DEAD))
                continue
            updates.append(update)
            end = _STATES.get(update[1])
            if row[8] and end in FINISHED_STATES:
                ends.append((outcome.job_id, row[7], end))
        if updates:
            q.write(self.sql["finish"], [list(column) for column in zip(*updates)])
        if freed and defer:
            self.unreleased = freed
        elif freed:  # in the commit of the outcomes: their slots
            pg_limits.release(q, self.sql, freed)
        if ends:
            self._settle(q, ends, now_ms)
        return acks

    def _graph(self, q: Query) -> pg_graph.PgGraph:
        return pg_graph.PgGraph(q, self.sql, self._load_locked, _encode_errors, _text)

    def _settle(self, q: Query, ends: Sequence[tuple[str, str, JobState | None]], now: int) -> None:
        """Settle the dependents of jobs that ended (or were deleted: None) in ``q``."""
        graph = self._graph(q)
        pg_graph.settle_ends(graph, ends, now)
        if graph.released:
            q.rows(self.sql["notify"], (self.channel,))  # released jobs are ready jobs

    def _load_locked(self, q: Query, job_id: str) -> JobRecord:
        row = q.one(self.sql["lock_one"], (job_id,))
        if row is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return _decode(row)

    def _outcome_update(
        self, row: tuple[Any, ...], outcome: Outcome, now_ms: int
    ) -> tuple[Any, ...] | None:
        """The ``finish`` statement's row for one outcome (None: the record is unreadable).

        Columns: id, state, result, errors, run_at_ms, attempts_delta, finished_at_ms,
        dead_reason, requeue, result_preview. NULL keeps the stored value, and the stored
        errors are decoded only when the outcome appends one.
        """
        # The rule reads only these columns of a claimed job; its errors come after.
        claimed = JobRecord(
            id=outcome.job_id,
            name="",
            state=JobState.PROCESSING,
            payload=b"",
            attempts=row[2],
            max_retries=row[3],
            backoff_base_s=row[4],
            backoff_cap_s=row[5],
            expires_at_ms=row[10],  # for the history of one that expired before it started
        )
        applied = apply_outcome(claimed, outcome, now_ms, self.rng)
        rec, destination = applied.record, applied.destination
        errors = None
        if applied.error is not None:
            try:
                errors = _encode_errors(_decode_errors(row[6]) + (applied.error,))
            except ValueError:
                return None
        requeue = destination is Destination.SCHEDULED  # behind the jobs waiting: a new seq
        return (
            rec.id,
            rec.state.value,
            rec.result,
            errors,
            min(rec.run_at_ms, BIGINT_MAX) if requeue else None,
            rec.attempts - claimed.attempts,
            rec.finished_at_ms,
            _dead_reason(applied.dead_reason, applied.error, destination),
            requeue,
            rec.result_preview,
        )

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
            pg_limits.release(q, self.sql, q.rows(self.sql["release_worker"], (server_id,)))
            cancelled = self._end_requested(q, server_id)
            ids = sorted(row[0] for row in q.rows(self.sql["requeue_worker"], (server_id,)))
            ids = sorted(ids + cancelled)
            q.counter.puts += len(ids)
            if ids:
                q.rows(self.sql["notify"], (self.channel,))  # other hosts may be idle
            return ids

        return self.session.run(body)

    def _end_requested(self, q: Query, server_id: str) -> list[str]:
        """End the jobs of a server being put back whose cancel was requested."""
        rows = q.rows(self.sql["requested_of"], (server_id,))
        if not rows:
            return []
        cancel = self._cancel(q, "", now_ms())
        ended = cancel.requested_rows(rows)
        self._settle_cancel(q, cancel)
        return ended

    # ---- cancelling ---------------------------------------------------------------------
    def cancel(self, job_ids: Sequence[str], text: str, now_ms: int) -> CancelReport:
        def body(q: Query) -> CancelReport:
            rows = {row[0]: row for row in q.rows(self.sql["lock_ids"], (sorted(job_ids),))}
            cancel = self._cancel(q, text, now_ms)
            for job_id in dict.fromkeys(job_ids):  # an id given twice counts once
                row = rows.get(job_id)
                if row is not None:
                    cancel.row(row)
                else:
                    cancel.report.missing.append(job_id)
            return self._settle_cancel(q, cancel)

        return self.session.run(body)

    def cancel_matching(
        self,
        name: str | None,
        states: Collection[JobState],
        text: str,
        now_ms: int,
        limit: int,
        after: str,
    ) -> tuple[CancelReport, str | None]:
        if name is not None:
            check_key_part(name, f"task name {name!r}")

        def body(q: Query) -> tuple[CancelReport, str | None]:
            rows, resume = pg_cancels.match(q, self.sql, name, states, limit, after)
            cancel = self._cancel(q, text, now_ms)
            cancel.rows(rows)
            return self._settle_cancel(q, cancel), resume

        return self.session.run(body)

    def _cancel(self, q: Query, text: str, now: int) -> pg_cancels.PgCancel:
        return pg_cancels.PgCancel(q, self.sql, text, now, _encode_errors, _decode_errors, _text)

    def _settle_cancel(self, q: Query, cancel: pg_cancels.PgCancel) -> CancelReport:
        report = cancel.write()
        if cancel.ends:
            self._settle(q, cancel.ends, cancel.now)
        if report.requested:
            q.rows(self.sql["notify_cancel"], (self.channel,))
        return report

    def cancel_requests(self, server_id: str) -> list[str]:
        _check_server_id(server_id)
        rows = self.session.run(
            lambda q: q.rows(self.sql["requests_of"], (server_id,)), write=False
        )
        return [row[0] for row in rows]

    def register_server(self, server_id: str, info: dict[str, Any]) -> None:
        self.heartbeat(server_id, info)

    def heartbeat(
        self, server_id: str, info: dict[str, Any], sample_at_ms: int | None = None
    ) -> None:
        raw = encode_server_info(info)

        def body(q: Query) -> None:
            q.write(self.sql["register"], (server_id, raw))
            if sample_at_ms is not None:
                pg_history.record(q, self.sql, sample_at_ms, self._counts(q))

        self.session.run(body)

    # ---- history ----------------------------------------------------------------------
    def record_history(self, sample_at_ms: int, counts: Mapping[str, int]) -> None:
        self.session.run(lambda q: pg_history.record(q, self.sql, sample_at_ms, counts))

    def history(self, since_ms: int, until_ms: int) -> builtins.list[Point]:
        return self.session.run(
            lambda q: pg_history.read(q, self.sql, since_ms, until_ms), write=False
        )

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

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        ids = list(job_ids)
        rows = self.session.run(lambda q: q.rows(self.sql["get_many"], (ids,)), write=False)
        found = {row[0]: _decode(row) for row in rows}
        return [found.get(job_id) for job_id in ids]

    def endings(self, job_ids: Sequence[str]) -> list[Ending | None]:
        ids = list(job_ids)
        rows = self.session.run(lambda q: q.rows(self.sql["endings"], (ids,)), write=False)
        found = {row[0]: _ending(row) for row in rows}
        return [found.get(job_id) for job_id in ids]

    def dependents(self, job_id: str) -> list[str]:
        rows = self.session.run(lambda q: q.rows(self.sql["dependents"], (job_id,)), write=False)
        return [row[0] for row in rows]

    def list(
        self,
        name: str | None = None,
        state: JobState | None = None,
        limit: int | None = None,
        queue: str | None = None,
    ) -> list[JobRecord]:
        filters = {"name": name, "state": None if state is None else state.value, "queue": queue}
        key = "list" + "".join(f"_{column}" for column, v in filters.items() if v is not None)
        params = [v for v in filters.values() if v is not None]
        rows = self.session.run(lambda q: q.rows(self.sql[key], (*params, limit)), write=False)
        return [_decode(row) for row in rows]

    def newest_dead(self, limit: int) -> builtins.list[JobRecord]:
        sql = self.sql["newest_dead"]
        rows = self.session.run(lambda q: q.rows(sql, (max(limit, 0),)), write=False)
        return [_decode(row) for row in rows]

    def stats(self) -> dict[str, int]:
        return self.session.run(self._counts, write=False)

    def gauges(self) -> Gauges:
        def body(q: Query) -> Gauges:
            row = q.one(self.sql["oldest_ready"], (HEADS_READ_MAX,))
            oldest = None if row is None or row[0] is None else int(row[0])
            counts = self._counts(q)
            rows = q.rows(self.sql["queue_depths"])
            ready = {queue: int(n) for queue, n, _ in rows}
            running = {queue: int(n) for queue, _, n in rows}
            depths = depths_by_queue(ready, running)
            return Gauges(counts, pg_pauses.paused(q, self.sql), oldest, depths)

        return self.session.run(body, write=False)

    def _counts(self, q: Query) -> dict[str, int]:
        row = q.one(self.sql["stats"])
        assert row is not None
        names = (
            "ready",
            "scheduled",
            "processing",
            "done",
            "dead",
            "waiting",
            "cancelled",
            "expired",
        )
        counts = dict(zip(names, map(int, row)))
        counts["total"] = sum(counts.values())
        return counts

    # ---- pausing ----------------------------------------------------------------------
    # The names are checked as every task name is: "" (pauses.PAUSE_ALL) is none.
    def pause(self, name: str | None) -> PauseChange:
        name = pause_target(name)
        return self.session.run(lambda q: pg_pauses.pause(q, self.sql, name))

    def resume(self, name: str | None) -> PauseChange:
        name = pause_target(name)

        def body(q: Query) -> PauseChange:
            change = pg_pauses.resume(q, self.sql, name)
            if change.changed:  # as after an enqueue: its jobs are claimable again
                q.rows(self.sql["notify"], (self.channel,))
            return change

        return self.session.run(body)

    def paused(self) -> Paused:
        return self.session.run(lambda q: pg_pauses.paused(q, self.sql), write=False)

    # ---- periodic schedules (schedules.py) --------------------------------------------
    def declare_schedules(
        self, specs: Sequence[ScheduleSpec], server_id: str, now_ms: int, live: Live
    ) -> builtins.list[ScheduleRow]:
        for spec in specs:
            check_key_part(spec.name, f"schedule name {spec.name!r}")
        return self.session.run(
            lambda q: pg_schedules.declare(q, self.sql, specs, server_id, now_ms, live)
        )

    def fire_schedules(self, now_ms: int, plan: FirePlan, limit: int) -> Fired:
        def write_jobs(q: Query, records: Sequence[JobRecord]) -> None:
            self._add(q, records)  # notifies the servers at commit

        return self.session.run(
            lambda q: pg_schedules.fire(q, self.sql, now_ms, plan, limit, write_jobs)
        )

    def retire_schedules(self, expected: Mapping[str, tuple[str, ...]]) -> builtins.list[str]:
        return self.session.run(lambda q: pg_schedules.retire(q, self.sql, expected))

    def schedules(self) -> builtins.list[ScheduleRow]:
        return self.session.run(lambda q: pg_schedules.rows(q, self.sql), write=False)

    def pause_schedule(self, name: str) -> bool:
        return self.session.run(lambda q: pg_schedules.set_paused(q, self.sql, name, True, 0))

    def resume_schedule(self, name: str, now_ms: int) -> bool:
        return self.session.run(lambda q: pg_schedules.set_paused(q, self.sql, name, False, now_ms))

    def next_schedule_due_ms(self) -> int | None:
        return self.session.run(lambda q: pg_schedules.next_due(q, self.sql), write=False)

    # ---- removing ---------------------------------------------------------------------
    # ---- concurrency limits -------------------------------------------------------
    def set_limit(
        self, kind: str, name: str, concurrency: int | None, rate: Rate | None = None
    ) -> bool:
        check_kind(kind)
        check_concurrency(concurrency)
        if kind == TASK:
            check_key_part(name, f"task name {name!r}")
        elif not is_queue_name(name):
            check_queue_name(name)
        changed = self.session.run(
            lambda q: pg_limits.set_limit(q, self.sql, kind, name, concurrency, rate)
        )
        if changed:
            self.session.run(lambda q: q.rows(self.sql["notify"], (self.channel,)))
        return changed

    def limits(self) -> builtins.list[Limit]:
        return self.session.run(lambda q: pg_limits.listed(q, self.sql), write=False)

    def delete(self, job_id: str) -> bool:
        return self.session.run(lambda q: self._delete(q, job_id))

    def _delete(self, q: Query, job_id: str) -> bool:
        row = q.one(self.sql["lock_one"], (job_id,))
        if row is None:
            return False
        rec = _decode(row)
        if rec.state is JobState.PROCESSING:
            pg_limits.release(q, self.sql, q.rows(self.sql["holds_of"], (job_id,)))
        if rec.state not in FINISHED_STATES:
            self._settle(q, [(rec.id, rec.name, None)], now_ms())
        q.write(self.sql["unlink"], (job_id, job_id, list(rec.depends_on)), deletes=True)
        return bool(q.write(self.sql["delete"], (job_id,), deletes=True))

    def requeue_dead(self, job_id: str, now_ms: int, run_at_ms: int | None = None) -> JobRecord:
        check_run_at(run_at_ms)
        return self.session.run(lambda q: self._requeue_dead(q, job_id, now_ms, run_at_ms))

    def requeue_dead_many(
        self, job_ids: Sequence[str], now_ms: int, run_at_ms: int | None = None
    ) -> Requeued:
        check_run_at(run_at_ms)

        def body(q: Query) -> Requeued:
            return Requeued.each(
                job_ids, lambda job_id: self._requeue_dead(q, job_id, now_ms, run_at_ms)
            )

        return self.session.run(body)

    def _requeue_dead(
        self, q: Query, job_id: str, now_ms: int, run_at_ms: int | None = None
    ) -> JobRecord:
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
        if rec.key is not None:
            holder = q.one(self.sql["key_taken"], (rec.name, rec.key, job_id))
            if holder is not None:
                raise key_held(job_id, rec.key, holder[0])
        q.write(self.sql["close_edges"], (job_id,))  # counted when it died: not again
        new_state, run_at = redrive_state(now_ms, run_at_ms)
        seq = q.rows(self.sql["requeue_dead"], (new_state.value, run_at, job_id))[0][0]
        q.counter.puts += 1
        q.rows(self.sql["notify"], (self.channel,))
        return rec.evolve(
            state=new_state, attempts=0, run_at_ms=run_at, finished_at_ms=None, seq=seq
        )

    def browse(
        self,
        *,
        state: JobState | None = None,
        name: str | None = None,
        queue: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> Page:
        check_browse(limit, before)
        used = [(c, v) for c, v in (("name", name), ("state", state), ("queue", queue)) if v]
        statement = "browse" + "".join(f"_{c}" for c, _ in used)
        values = [v.value if isinstance(v, JobState) else v for _, v in used]
        cursor = before or "~"  # '~' sorts after every id character (ids are hex)
        if queue is not None and name is None and state is None:
            body = functools.partial(self._browse_queue, queue=queue, cursor=cursor, limit=limit)
            return self.session.run(body, write=False)
        if len(used) > 1 and (name is not None or state is not None):  # a span, then a page
            lead = used[0][0]
            return self.session.run(
                lambda q: self._browse_spanned(q, statement, lead, values, cursor, limit),
                write=False,
            )
        if name is not None or state is not None:  # see _browse_statements
            params = (values[0], cursor, values[0], *values[1:], limit + 1)
        else:
            params = (*values, cursor, limit + 1)
        rows = self.session.run(lambda q: q.rows(self.sql[statement], params), write=False)
        jobs = [_decode(row) for row in rows[:limit]]
        return Page(jobs, jobs[-1].id if len(rows) > limit else None)

    def _browse_spanned(
        self,
        q: Query,
        statement: str,
        lead: str,
        values: builtins.list[Any],
        cursor: str,
        limit: int,
    ) -> Page:
        """A page by task or state and another filter: the matching jobs among the next
        BROWSE_SCAN_MAX entries of the lead's index below the cursor."""
        span = (values[0], cursor, values[0], BROWSE_SCAN_MAX)
        low, scanned = q.one(self.sql[f"browse_span_{lead}"], span) or (None, 0)
        if not scanned:
            return Page([], None)
        params = (values[0], cursor, values[0], *values[1:], low, limit + 1)
        return self._spanned_page(q.rows(self.sql[statement], params), limit, low, scanned)

    def _spanned_page(
        self, rows: builtins.list[tuple[Any, ...]], limit: int, low: str, scanned: int
    ) -> Page:
        jobs = [_decode(row) for row in rows[:limit]]
        if len(rows) > limit:
            return Page(jobs, jobs[-1].id)
        return Page(jobs, low if scanned >= BROWSE_SCAN_MAX else None)  # budget spent

    def _browse_queue(self, q: Query, queue: str, cursor: str, limit: int) -> Page:
        low, scanned = q.one(self.sql["browse_span"], (cursor, BROWSE_SCAN_MAX)) or (None, 0)
        if not scanned:
            return Page([], None)
        rows = q.rows(self.sql["browse_queue_span"], (queue, cursor, low, limit + 1))
        return self._spanned_page(rows, limit, low, scanned)

    def purge_dead(self) -> int:
        return self.session.run(lambda q: self._delete_finished(q, "purge_dead", ()))

    def expire_finished(self, before_ms: int) -> int:
        """Delete done, cancelled and expired jobs that finished before ``before_ms``."""
        return self.session.run(lambda q: self._delete_finished(q, "expire", (before_ms,)))

    def _delete_finished(self, q: Query, statement: str, params: tuple[Any, ...]) -> int:
        deleted = int(q.rows(self.sql[statement], params)[0][0])
        q.counter.deletes += deleted
        return deleted

    # ---- the server's cycle -------------------------------------------------------------
    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        server_id: str,
        limit: int,
        now_ms: int,
        *,
        progress: Mapping[str, Progress] | None = None,
        queues: Selection | None = None,
    ) -> _Cycle:
        # No hand-off here: jobs always go through the ready queue, and NOTIFY wakes
        # the servers.
        def body(q: Query) -> _Cycle:
            try:
                return cycle(q)
            finally:
                self.unreleased = []  # this transaction's, whether it commits or not

        def cycle(q: Query) -> _Cycle:
            if progress:
                self._record_progress(q, progress)
            acks = self._finish(q, outcomes, now_ms, defer=limit > 0) if outcomes else []
            if limit <= 0:
                return acks, []
            self._promote(q, now_ms)
            claimed = self._claim(q, server_id, limit, now_ms, queues)
            if self.unreleased:  # no limited claim gave them back
                pg_limits.release(q, self.sql, self.unreleased)
            return acks, claimed

        _check_server_id(server_id)
        if not outcomes and limit <= 0 and not progress:
            return [], []
        return self.session.run(body)

    # ---- progress ---------------------------------------------------------------------
    def record_progress(self, updates: Mapping[str, Progress]) -> None:
        if updates:
            self.session.run(lambda q: self._record_progress(q, updates))

    def _record_progress(self, q: Query, updates: Mapping[str, Progress]) -> None:
        ids = sorted(updates)  # rows locked in id order, as every statement here does
        reports = [json.dumps(list(updates[job_id])) for job_id in ids]  # ASCII-only
        q.write(self.sql["record_progress"], (ids, reports))

    def progress(self, job_ids: Sequence[str]) -> builtins.list[Progress | None]:
        rows = self.session.run(
            lambda q: q.rows(self.sql["progress"], (list(job_ids),)), write=False
        )
        found = {job_id: _progress(raw) for job_id, raw in rows if raw is not None}
        return [found.get(job_id) for job_id in job_ids]

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
            report.inconsistent += [
                f"job {job_id} waits for {count} jobs but has {edges} open edges"
                for job_id, count, edges in q.rows(self.sql["check_waiting"])
            ]
            report.inconsistent += [
                f"an edge says job {job_id} depends on {dep_id}; its record does not"
                for dep_id, job_id in q.rows(self.sql["check_edges"])
            ]
            report.inconsistent += [
                f"job {job_id} is held as paused but its task is not paused"
                for (job_id,) in q.rows(self.sql["check_paused"])
            ]
            report.inconsistent += [
                f"the {kind} limit of {name} counts {running} running, but {held} are"
                for kind, name, running, held in q.rows(self.sql["check_limits"])
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


def _progress(raw: str) -> Progress | None:
    """A stored report; None for text that is not one (shown, never acted on)."""
    try:
        done, total, message, at_ms = json.loads(raw)
    except (ValueError, TypeError):
        return None
    numbers_ok = isinstance(done, (int, float)) and isinstance(total, (int, float, type(None)))
    if numbers_ok and isinstance(message, (str, type(None))) and isinstance(at_ms, int):
        return Progress(done, total, message, at_ms)
    return None


def _dead_reason(reason: str, error: ErrorInfo | None, destination: Destination) -> str | None:
    """The ``dead_reason`` column of a finished job: why it is dead, or cancelled."""
    if destination is Destination.DEAD:
        return _text(reason)
    if destination is Destination.CANCELLED and error is not None:
        return _text(error.message)
    return None


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


def _insert_row(rec: JobRecord) -> tuple[Any, ...]:
    """The columns "add" inserts for a job, in its unnest order."""
    return (
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


def _workflow_row(rec: JobRecord) -> tuple[Any, ...]:
    return (list(rec.depends_on), rec.pass_results, rec.allow_failures, rec.key)


def _optional_row(rec: JobRecord) -> tuple[str | None, str | None, int | None, str]:
    """The retry lists as their columns hold them: JSON arrays (ASCII, as ``errors``),
    NULL for retry_on None and for an empty no_retry_on; the deadline (NULL: none); the
    queue."""
    retry_on = None if rec.retry_on is None else json.dumps(list(rec.retry_on))
    no_retry_on = json.dumps(list(rec.no_retry_on)) if rec.no_retry_on else None
    return retry_on, no_retry_on, rec.expires_at_ms, rec.queue


def _decode_names(raw: str) -> tuple[str, ...]:
    try:
        names = json.loads(raw)
    except Exception as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(names, list) or not all(type(name) is str for name in names):
        raise ValueError("malformed retry lists")
    return tuple(names)


def _ending(row: tuple[Any, ...]) -> Ending:
    """(id, state, result, errors) as an Ending; a row that cannot be read ends dead."""
    state = _STATES.get(row[1])
    try:
        if state is None:
            raise ValueError(f"unknown state {row[1]!r}")
        errors = () if row[3] == "[]" else _decode_errors(row[3])
    except ValueError as exc:
        error = ErrorInfo("CorruptRecord", f"record cannot be decoded: {exc}", kind="corrupt")
        return Ending(JobState.DEAD, None, error)
    return Ending(state, row[2], errors[-1] if errors else None)


def _read(row: tuple[Any, ...]) -> JobRecord:
    """A record from a row in ``_FIELDS`` order; raises ValueError if it cannot be read."""
    rec = object.__new__(JobRecord)  # no __init__: the server decodes every claim
    rec.__dict__.update(zip(_FIELDS, row))
    try:
        rec.state = _STATES[row[2]]
    except KeyError:
        raise ValueError(f"unknown state {row[2]!r}") from None
    rec.errors = _decode_errors(row[13]) if row[13] != "[]" else ()
    rec.depends_on = tuple(row[18]) if row[18] else ()
    if row[25] != DEFAULT_QUEUE and not is_queue_name(row[25]):
        raise ValueError(f"bad queue name {str(row[25])[:80]!r}")
    if row[22] is not None or row[23] is not None:
        rec.retry_on = None if row[22] is None else _decode_names(row[22])
        rec.no_retry_on = () if row[23] is None else _decode_names(row[23])
    else:
        rec.no_retry_on = ()
    return rec
