"""The depth history on PostgreSQL: ``mpqueue_history`` holds one row per (tier, slot)
of ``mpqueue/history.py``'s rings (its primary key), written by upsert, so it never
holds more than ``history.SIZE`` rows. A server's sample is written in its heartbeat's
transaction (``PostgresStore.heartbeat``)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from ...history import TIERS, Point, check_sample, current, in_order, tier_for
from .session import Query

# Every tier's slot in one statement, in tier order (so two servers writing the same
# slots lock them in the same order).
SQL = {
    "history_put": """INSERT INTO {history} (tier, slot, at_ms, counts)
        SELECT t, s, %s::bigint, %s::jsonb FROM unnest(%s::smallint[], %s::integer[]) AS u(t, s)
        ON CONFLICT (tier, slot) DO UPDATE SET at_ms = excluded.at_ms,
            counts = excluded.counts""",
    "history_read": """SELECT slot, at_ms, counts FROM {history}
        WHERE tier = %s AND slot BETWEEN %s AND %s AND at_ms BETWEEN %s AND %s""",
}


def record(q: Query, sql: dict[str, str], at_ms: int, counts: Mapping[str, int]) -> None:
    raw = json.dumps(check_sample(at_ms, counts))
    tiers = [tier.number for tier in TIERS]
    slots = [tier.slot(at_ms) for tier in TIERS]
    q.write(sql["history_put"], (at_ms, raw, tiers, slots))


def read(q: Query, sql: dict[str, str], since_ms: int, until_ms: int) -> list[Point]:
    tier = tier_for(since_ms, until_ms)
    found = []
    for lo, hi in tier.slot_ranges(since_ms, until_ms):
        for slot, at_ms, counts in q.rows(
            sql["history_read"], (tier.number, lo, hi, since_ms, until_ms)
        ):
            if current(tier, slot, int(at_ms), since_ms, until_ms) and isinstance(counts, dict):
                found.append((int(at_ms), in_order({str(k): int(v) for k, v in counts.items()})))
    return sorted(found, key=lambda point: point[0])
