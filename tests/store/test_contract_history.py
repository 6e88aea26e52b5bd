"""The store contract, continued: the depth history (``record_history``, ``history``,
``heartbeat`` with a sample), on every store (the fixtures of ``test_contract.py``):
the memory store, LMDB (both layouts) and PostgreSQL. The clock is injected: every
sample names its own time."""

from __future__ import annotations

import pytest

from mpqueue import ConfigError
from mpqueue.history import SIZE, TIERS, parse_duration
from mpqueue.store.lmdb import keys
from mpqueue.store.lmdb.store import LmdbStore
from mpqueue.store.memory import MemoryStore

from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

S, MIN, H, DAY = 1_000, 60_000, 3_600_000, 86_400_000
T0 = 1_700_000_000_000  # an injected "now", far from 0 so every ring has lapped before


def counts(n: int) -> dict[str, int]:
    return {"ready": n, "processing": 1, "total": n + 1}


def stored_slots(store) -> int:
    """How many history slots the store holds, read below the interface."""
    if isinstance(store, MemoryStore):
        return len(store._db.history)
    if isinstance(store, LmdbStore):
        return store.env.read(lambda tx: tx.entries(keys.DB_HISTORY))
    row = store.session.run(lambda q: q.one("SELECT count(*) FROM mpqueue_history"), write=False)
    return int(row[0])


def test_a_sample_reads_back_with_its_time_and_counts(store):
    store.record_history(T0, counts(3))
    store.record_history(T0 + 10 * S, counts(5))
    assert store.history(T0 - H, T0 + H) == [(T0, counts(3)), (T0 + 10 * S, counts(5))]
    assert store.history(T0 + 5 * S, T0 + H) == [(T0 + 10 * S, counts(5))]
    assert store.history(T0 - H, T0 - S) == []


def test_the_last_sample_of_a_bucket_is_kept(store):
    store.record_history(T0, counts(1))
    store.record_history(T0 + 4 * S, counts(2))  # the same 10 s bucket
    assert store.history(T0 - H, T0 + H) == [(T0 + 4 * S, counts(2))]


def test_a_heartbeat_with_a_sample_records_the_stores_counts(store):
    add(store, record(), record())
    store.heartbeat("server-1", {"heartbeat_ms": T0, "pid": 1}, T0)
    store.heartbeat("server-1", {"heartbeat_ms": T0 + 2 * S, "pid": 1})  # no sample
    [(at_ms, sampled)] = store.history(T0 - H, T0 + H)
    assert at_ms == T0 and sampled == store.stats()
    assert sampled["ready"] == 2 and sampled["total"] == 2
    assert "server-1" in store.servers()


def test_a_lapped_slot_is_not_read_as_its_old_time(store):
    store.record_history(T0, counts(1))
    store.record_history(T0 + DAY, counts(2))  # a day later: the same 10 s slot
    assert store.history(T0 - H, T0 + H) == []  # tier 0: overwritten, not misdated
    assert store.history(T0 + DAY - H, T0 + DAY) == [(T0 + DAY, counts(2))]


def test_a_range_across_the_rings_end_reads_both_sides(store):
    tier = TIERS[0]
    wrap = (T0 // tier.span_ms + 1) * tier.span_ms  # where tier 0's slot 0 begins again
    times = [wrap - 20 * S, wrap - 10 * S, wrap, wrap + 10 * S]
    for n, at in enumerate(times):
        store.record_history(at, counts(n))
    assert [at for at, _ in store.history(wrap - MIN, wrap + MIN)] == times


def test_history_stays_within_its_fixed_size_over_simulated_weeks(store):
    """40 days hourly (tier 1's 30-day ring laps), a day at just under 5 min, then the
    last 2 hours every 10 s: the stored slots never exceed the fixed size and are
    exactly the (tier, slot) pairs the samples map to."""
    phases = [(40 * DAY, H + 7 * S), (DAY, 290 * S), (2 * H, 10 * S)]
    at, slots = T0, set()
    for length, step in phases:
        end = at + length
        while at < end:
            store.record_history(at, counts(at // step % 1000))
            slots.update((tier.number, tier.slot(at)) for tier in TIERS)
            at += step
        assert stored_slots(store) == len(slots) <= SIZE
    now = at - 10 * S
    hour = store.history(now - H, now)
    assert len(hour) == 361 and all(b - a == 10 * S for (a, _), (b, _) in zip(hour, hour[1:]))
    assert hour[-1] == (now, counts(now // (10 * S) % 1000))
    week = store.history(now - 7 * DAY, now)
    buckets = [t // TIERS[1].resolution_ms for t, _ in week]
    assert buckets == sorted(set(buckets))  # one point per 5-min bucket, in order
    assert 6 * 24 < len(week) <= 7 * 24 * 12 + 1
    assert week[-1][0] == now  # the last sample is the newest bucket's
    assert week[0][0] >= now - 7 * DAY


@pytest.mark.parametrize("text", ["", "1", "h", "0h", "-1h", "1.5h", "1w", "31d", "1 h x"])
def test_a_bad_duration_is_one_line_and_the_store_is_unchanged(store, text):
    store.record_history(T0, counts(1))
    with pytest.raises(ConfigError) as info:
        parse_duration(text)
    assert "\n" not in str(info.value) and "history" in str(info.value)
    assert store.history(T0 - H, T0 + H) == [(T0, counts(1))]


def test_a_bad_count_is_refused_and_nothing_is_written(store):
    with pytest.raises(ConfigError):
        store.record_history(T0, {"ready": -1})
    with pytest.raises(ConfigError):
        store.record_history(T0, {"ready": "3"})
    with pytest.raises(ConfigError):
        store.record_history(-1, counts(1))
    assert store.history(T0 - H, T0 + H) == []


def test_lmdb_skips_a_history_entry_it_did_not_write(tmp_path):
    store = LmdbStore(str(tmp_path / "store"))
    try:
        store.record_history(T0, counts(1))
        key = keys.history_key(0, TIERS[0].slot(T0 + 10 * S))
        store.env.write(lambda tx: tx.put(keys.DB_HISTORY, key, b"\xffnot a sample"))
        assert store.history(T0 - H, T0 + H) == [(T0, counts(1))]
    finally:
        store.close()


def test_durations():
    assert [parse_duration(t) for t in ("10s", "30m", "1h", "7d", "30d")] == [
        10 * S,
        30 * MIN,
        H,
        7 * DAY,
        30 * DAY,
    ]
