"""Concurrency and rate limits on PostgreSQL (see mpqueue/concurrency.py and
mpqueue/rates.py for what they are).

``mpqueue_limits`` holds each limit's concurrency (NULL: a rate alone), running count,
rate (count and window) and its rate's log of recent starts (``start_at`` and
``start_n``, side by side). Each job row's
``lane`` says which limit files it: ``t:NAME`` for a job of a limited task, ``q:QUEUE``
for a limited queue's job whose task has none, NULL for the rest. The claim indexes
hold only rows whose lane is NULL, and ``mpqueue_jobs_laned`` the others by lane, so
a claim reads no job of a lane whose limit has no room. ``holds`` says which slots a
running job takes (1: its task's, 2: its queue's).

While no limit exists the claim pays two reads of the empty table (init plans) and
claims as before. Once one exists, the claim locks the limit rows (``FOR UPDATE``:
claimers of limited work take turns), reads in one statement the plain candidates and,
of each lane with room, at most that many, and claims what the room allows in priority
and FIFO order, writing each job's ``holds`` in the claim's own update; it adds to the
running counts (and to the rates' logs) in its transaction, and every outcome,
put-back and delete takes the running count away in its own (a serve cycle's
outcomes in its claim's statement). A store handle whose last
claim found limits goes to that path at once (``limits_seen``), not through the plain
claim first.

A row's lane is written when the row is (``new_lane``) and by ``set_limit`` on the
unfinished rows it concerns; ``set_limit`` first takes a SHARE lock on the jobs table,
so no writer that began before it can leave a row with the lane of before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...concurrency import QUEUE, TASK, Limit, LimitState
from ...rates import Rate
from .session import Query

TASK_SLOT, QUEUE_SLOT = 1, 2


def lane_of(name: str, queue: str) -> str:
    """SQL: the lane of a row whose task and queue are the expressions given."""
    return f"""CASE WHEN EXISTS (SELECT 1 FROM {{limits}} l
                    WHERE l.kind = 'task' AND l.name = {name}) THEN 't:' || {name}
                 WHEN EXISTS (SELECT 1 FROM {{limits}} l
                    WHERE l.kind = 'queue' AND l.name = {queue}) THEN 'q:' || {queue} END"""


def new_lane(name: str, queue: str) -> str:
    """``lane_of`` for a row being written, behind one read of the (empty) table."""
    return f"CASE WHEN EXISTS (SELECT 1 FROM {{limits}}) THEN {lane_of(name, queue)} END"


NO_LIMITS = "NOT EXISTS (SELECT 1 FROM {limits})"

# The claim's candidates in one statement: up to N plain ready jobs (no lane) and, of
# each lane given with its room and slot bit, up to that many; each row says its lane
# and bit (NULL and 0: plain). Read without row locks: claimers of limited work take
# turns on the limits' lock, and the claim of the chosen ids locks them (skipping any a
# cancel or delete holds), so only the jobs claimed are locked, not every candidate.
_CANDIDATES = """SELECT * FROM (SELECT id, priority, seq, queue, NULL::text AS lane_name,
            0::smallint AS bit
        FROM {{jobs}} AS j WHERE state = 'ready' AND NOT paused AND lane IS NULL {queue}
            AND {claimable}
        ORDER BY priority DESC, seq LIMIT %s) AS plain
    UNION ALL
    SELECT c.* FROM unnest(%s::text[], %s::integer[], %s::smallint[]) AS l(lane_name, room, bit)
    CROSS JOIN LATERAL (SELECT id, priority, seq, queue, l.lane_name, l.bit
        FROM {{jobs}} AS j WHERE state = 'ready' AND NOT paused AND j.lane = l.lane_name {queue}
            AND {claimable}
        ORDER BY priority DESC, seq LIMIT l.room) AS c"""

# Where each lane's job takes one slot, its lane's (``one_slot_each``), the first N
# candidates in priority and FIFO order are what ``pick`` would choose: the claim
# statement reads them itself, as (id, slot bit), and no candidates come back.
_CHOSEN = """(SELECT id, bit FROM ({candidates}) AS found
    ORDER BY priority DESC, seq LIMIT %s)"""


def sql(claimable: str) -> dict[str, str]:
    """The statements, with the claim's pause conditions ``claimable``."""
    return {
        "limits_lock": f"""SELECT {_COLUMNS} FROM {{limits}} ORDER BY kind, name FOR UPDATE""",
        "limits": f"SELECT {_COLUMNS} FROM {{limits}} ORDER BY kind, name",
        "starts_set": """UPDATE {limits} AS l SET start_at = u.at, start_n = u.n
            FROM (SELECT %s::text AS kind, %s::text AS name,
                         %s::bigint[] AS at, %s::integer[] AS n) u
            WHERE l.kind = u.kind AND l.name = u.name""",
        **{
            f"{kind}{suffix}": template.format(
                candidates=_CANDIDATES.format(queue=queue_filter, claimable=claimable)
            )
            for kind, template in (("candidates", "{candidates}"), ("chosen", _CHOSEN))
            for suffix, queue_filter in (("", ""), ("_queue", "AND queue = %s"))
        },
        "running_add": """UPDATE {limits} AS l SET running = greatest(l.running + u.n, 0)
            FROM unnest(%s::text[], %s::text[], %s::integer[]) AS u(kind, name, n)
            WHERE l.kind = u.kind AND l.name = u.name""",
        "limit_get": """SELECT concurrency, rate_count, rate_window_ms FROM {limits}
            WHERE kind = %s AND name = %s FOR UPDATE""",
        "limit_peek": """SELECT concurrency, rate_count, rate_window_ms FROM {limits}
            WHERE kind = %s AND name = %s""",
        "limit_update": """UPDATE {limits} SET concurrency = %s, rate_count = %s,
            rate_window_ms = %s,
            start_at = CASE WHEN %s THEN '{{}}'::bigint[] ELSE start_at END,
            start_n = CASE WHEN %s THEN '{{}}'::integer[] ELSE start_n END
            WHERE kind = %s AND name = %s""",
        "limit_delete": "DELETE FROM {limits} WHERE kind = %s AND name = %s",
        "lock_jobs": "LOCK TABLE {jobs} IN SHARE MODE",
        # ``check``: each limit's running count is the running jobs holding its slot.
        "check_limits": f"""SELECT * FROM (SELECT l.kind, l.name, l.running,
                (SELECT count(*) FROM {{jobs}} j
                 WHERE j.state = 'processing' AND j.holds IS NOT NULL AND CASE l.kind
                    WHEN 'task' THEN j.name = l.name AND j.holds & {TASK_SLOT} <> 0
                    ELSE j.queue = l.name AND j.holds & {QUEUE_SLOT} <> 0 END) AS held
            FROM {{limits}} l) c WHERE running <> held ORDER BY kind, name""",
        # Per kind: the column that names what the limit limits.
        **{
            f"limit_insert_{kind}": f"""INSERT INTO {{limits}}
                (kind, name, concurrency, rate_count, rate_window_ms, running)
                VALUES (%s, %s, %s, %s, %s, (SELECT count(*) FROM {{jobs}}
                    WHERE state = 'processing' AND {column} = %s))"""
            for kind, column in ((TASK, "name"), (QUEUE, "queue"))
        },
        **{
            f"holds_set_{kind}": f"""UPDATE {{jobs}} SET holds = coalesce(holds, 0) | %s
                WHERE state = 'processing' AND {column} = %s"""
            for kind, column in ((TASK, "name"), (QUEUE, "queue"))
        },
        **{
            f"holds_clear_{kind}": f"""UPDATE {{jobs}} SET holds = nullif(holds & ~%s::smallint, 0)
                WHERE holds IS NOT NULL AND {column} = %s"""
            for kind, column in ((TASK, "name"), (QUEUE, "queue"))
        },
        **{
            f"relane_{kind}": f"""UPDATE {{jobs}} AS j SET lane = {lane_of("j.name", "j.queue")}
                WHERE {column} = %s
                AND state IN ('waiting', 'scheduled', 'ready', 'processing')"""
            for kind, column in ((TASK, "name"), (QUEUE, "queue"))
        },
    }


_COLUMNS = "kind, name, concurrency, running, rate_count, rate_window_ms, start_at, start_n"


def stored(q: Query, statements: dict[str, str], lock: bool) -> dict[tuple[str, str], LimitState]:
    rows = q.rows(statements["limits_lock" if lock else "limits"])
    return {(str(row[0]), str(row[1])): state_of(row[2:]) for row in rows}


def state_of(row: Sequence[Any]) -> LimitState:
    """The state of (concurrency, running, rate count, window ms, start_at, start_n)."""
    concurrency, running, count, window_ms, at, n = row
    rate = None if count is None or window_ms is None else Rate(int(count), int(window_ms))
    starts = tuple(zip(map(int, at or ()), map(int, n or ())))
    return LimitState(None if concurrency is None else int(concurrency), int(running), rate, starts)


def listed(q: Query, statements: dict[str, str]) -> list[Limit]:
    return [state.limit(k, n) for (k, n), state in stored(q, statements, False).items()]


def read(
    q: Query,
    statements: dict[str, str],
    freed: dict[tuple[str, str], int] | None = None,
) -> dict[tuple[str, str], LimitState]:
    """The limits, locked for this claim, less the slots ``freed`` (negative counts)
    the claim's statement gives back."""
    limits = stored(q, statements, lock=True)
    for key, count in (freed or {}).items():
        if key in limits:
            limits[key] = limits[key].released(-count)
    return limits


def one_slot_each(limits: dict[tuple[str, str], LimitState]) -> bool:
    """Whether every limit is of one kind, so a laned job takes its own lane's slot
    alone (a job of a limited task in a limited queue takes two)."""
    return len({kind for kind, _ in limits}) <= 1


class Lanes:
    """The lanes a claim of ``queue`` (None: every queue) reads, each with its room
    (at most ``wanted``) and its slot bit, as ``limits`` allow at ``now_ms``."""

    def __init__(
        self,
        limits: dict[tuple[str, str], LimitState],
        queue: str | None,
        wanted: int,
        now_ms: int,
    ) -> None:
        self.free = {key: state.room(now_ms) for key, state in limits.items()}
        self.of_name = {
            ("t:" if kind == TASK else "q:") + name: (kind, name)
            for (kind, name), room in self.free.items()
            if room > 0 and not (kind == QUEUE and queue is not None and name != queue)
        }
        self.queue = queue
        self.wanted = wanted

    def params(self) -> tuple[Any, ...]:
        """The candidates statement's parameters."""
        keys = list(self.of_name.values())
        rooms = [min(self.free[key], self.wanted) for key in keys]
        bits = [TASK_SLOT if kind == TASK else QUEUE_SLOT for kind, _ in keys]
        named = () if self.queue is None else (self.queue,)
        return (*named, self.wanted, list(self.of_name), rooms, bits, *named)


def statement(kind: str, queue: str | None) -> str:
    """The name of the ``kind`` ("candidates", "chosen") statement for ``queue``."""
    return kind if queue is None else f"{kind}_queue"


def pick(
    q: Query,
    statements: dict[str, str],
    limits: dict[tuple[str, str], LimitState],
    lanes: Lanes,
) -> list[tuple[str, int]]:
    """The ids a claim may take now, up to ``lanes.wanted``, with the slots each takes
    (``holds``), in priority and FIFO order."""
    found: list[tuple[tuple[Any, ...], tuple[str, str] | None]] = [
        (row[:4], None if row[4] is None else lanes.of_name[row[4]])
        for row in q.rows(statements[statement("candidates", lanes.queue)], lanes.params())
    ]
    found.sort(key=lambda item: (-item[0][1], item[0][2]))
    free = lanes.free
    picked: list[tuple[str, int]] = []
    for (job_id, _, _, job_queue), lane in found:
        keys = _slots(lane, job_queue, limits)
        if any(free[key] <= 0 for key, _ in keys):
            continue  # its limit filled in this claim: it stays ready
        for key, _ in keys:
            free[key] -= 1
        picked.append((job_id, sum(bit for _, bit in keys)))
        if len(picked) >= lanes.wanted:
            break
    return picked


def _slots(
    lane: tuple[str, str] | None, queue: str, limits: dict[tuple[str, str], LimitState]
) -> list[tuple[tuple[str, str], int]]:
    """The (limit, slot bit) a candidate of ``lane`` (None: no lane) takes: its task's
    limit, and its queue's where there is one."""
    if lane is None:
        return []
    if lane[0] == QUEUE:
        return [(lane, QUEUE_SLOT)]
    slots = [(lane, TASK_SLOT)]
    if (QUEUE, queue) in limits:
        slots.append(((QUEUE, queue), QUEUE_SLOT))
    return slots


# The running counts a claim changes, in one statement with the claim's update: the
# slots of the rows it claimed (``{claimed}``: its RETURNING with each row's holds
# last) taken, and those the cycle's outcomes freed (kinds, names, negative counts)
# given back.
COUNT_CLAIMED = f"""UPDATE {{{{limits}}}} AS l SET running = greatest(l.running + d.n, 0)
    FROM (SELECT kind, name, sum(n) AS n FROM (
            SELECT 'task' AS kind, name, count(*) AS n FROM {{claimed}}
              WHERE holds & {TASK_SLOT} <> 0 GROUP BY name
            UNION ALL
            SELECT 'queue', queue, count(*) FROM {{claimed}}
              WHERE holds & {QUEUE_SLOT} <> 0 GROUP BY queue
            UNION ALL
            SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])) AS c
          GROUP BY kind, name) AS d
    WHERE l.kind = d.kind AND l.name = d.name"""


def log_starts(
    q: Query,
    statements: dict[str, str],
    claimed: Sequence[tuple[str, str, int]],
    limits: dict[tuple[str, str], LimitState],
    now_ms: int,
) -> None:
    """Claimed (task, queue, holds): their starts logged for the limits with a rate
    (``limits``: as ``pick`` read them); the claim counted their slots."""
    started = deltas(claimed, 1)
    for key, count in started.items():
        state = limits.get(key)
        if state is not None and state.rate is not None:
            starts = state.claimed(count, now_ms).starts
            at, n = [a for a, _ in starts], [c for _, c in starts]
            q.write(statements["starts_set"], (*key, at, n))


def release(q: Query, statements: dict[str, str], rows: Sequence[tuple[str, str, Any]]) -> None:
    """(task, queue, holds) of claims that ended or went back: their slots freed (the
    caller's statement cleared ``holds``)."""
    _add_running(q, statements, rows, -1)


def _add_running(
    q: Query, statements: dict[str, str], rows: Sequence[tuple[str, str, Any]], sign: int
) -> None:
    """Add ``sign`` per slot each (task, queue, holds) row holds."""
    delta = deltas(rows, sign)
    if delta:
        q.write(statements["running_add"], columns(delta))


def columns(delta: dict[tuple[str, str], int]) -> tuple[list[str], list[str], list[int]]:
    """A change of each limit as the arrays (kinds, names, counts) statements take."""
    return [k for k, _ in delta], [n for _, n in delta], list(delta.values())


def deltas(rows: Sequence[tuple[str, str, Any]], sign: int) -> dict[tuple[str, str], int]:
    """The change of each limit: ``sign`` per slot each (task, queue, holds) holds."""
    delta: dict[tuple[str, str], int] = {}
    for name, queue, holds in rows:
        if not holds:
            continue
        if holds & TASK_SLOT:
            delta[(TASK, name)] = delta.get((TASK, name), 0) + sign
        if holds & QUEUE_SLOT:
            delta[(QUEUE, queue)] = delta.get((QUEUE, queue), 0) + sign
    return delta


def set_limit(
    q: Query,
    statements: dict[str, str],
    kind: str,
    name: str,
    concurrency: int | None,
    rate: Rate | None,
) -> bool:
    wanted = (concurrency, *((None, None) if rate is None else (rate.count, rate.window_ms)))
    row = q.one(statements["limit_peek"], (kind, name))
    removed = concurrency is None and rate is None
    if row is not None and not removed and tuple(row) == wanted:
        return False  # what a server's start writes most of the time: no lock taken
    q.write(statements["lock_jobs"])
    row = q.one(statements["limit_get"], (kind, name))
    bit = TASK_SLOT if kind == TASK else QUEUE_SLOT
    if row is not None and not removed:
        if tuple(row) == wanted:
            return False
        dropped = rate is None  # a rate removed takes its log with it
        q.write(statements["limit_update"], (*wanted, dropped, dropped, kind, name))
        return True  # the running count and the log of starts stay
    if removed:
        if row is None:
            return False
        q.write(statements["limit_delete"], (kind, name), deletes=True)
        q.write(statements[f"holds_clear_{kind}"], (bit, name))
    else:
        q.write(statements[f"limit_insert_{kind}"], (kind, name, *wanted, name))
        q.write(statements[f"holds_set_{kind}"], (bit, name))
    q.write(statements[f"relane_{kind}"], (name,))
    return True


def reopens_at(rows: Sequence[Sequence[Any]], now_ms: int) -> int | None:
    """The earliest reopening of the rates of ``rows`` (rate count, window ms,
    start_at, start_n; NULLs where no rate limit exists)."""
    times = [state_of((None, 0, *row)).reopens_at(now_ms) for row in rows if row[0] is not None]
    return min((t for t in times if t is not None), default=None)
