"""The depth history on LMDB: the ``history`` database holds one entry per (tier,
slot) of ``mpqueue/history.py``'s rings, so it never holds more than ``history.SIZE``
entries. A server's sample is written in its heartbeat's write transaction
(``LmdbStore.heartbeat``): no commit of its own."""

from __future__ import annotations

from collections.abc import Mapping

from ...history import TIERS, Point, check_sample, current, tier_for
from . import keys
from .env import Tx


def record(tx: Tx, at_ms: int, counts: Mapping[str, int]) -> None:
    value = keys.encode_sample(at_ms, check_sample(at_ms, counts))
    for tier in TIERS:
        tx.put(keys.DB_HISTORY, keys.history_key(tier.number, tier.slot(at_ms)), value)


def read(tx: Tx, since_ms: int, until_ms: int) -> list[Point]:
    """The current points of [since_ms, until_ms]: one cursor walk per slot range."""
    tier = tier_for(since_ms, until_ms)
    found = []
    for lo, hi in tier.slot_ranges(since_ms, until_ms):
        start = keys.history_key(tier.number, lo)
        stop = keys.history_key(tier.number, hi) + b"\x00"  # just past slot hi
        for key, raw in tx.scan(keys.DB_HISTORY, start, stop):
            sample = keys.decode_sample(raw)
            slot = keys.decode_history_key(key)[1]
            if sample is not None and current(tier, slot, sample[0], since_ms, until_ms):
                found.append(sample)
    return sorted(found, key=lambda point: point[0])
