"""Concurrency and rate limits on LMDB (see mpqueue/concurrency.py and mpqueue/rates.py
for what they are).

``limits`` holds each limit's concurrency, running count, rate and log of recent
starts. The ready jobs of a
limited task or queue are not in ``ready``/``queued`` but in ``laned``, one key range
(a lane) per queue and task: ``(queue, task)`` for a limited task's jobs, ``(queue, "")``
for the other jobs of a limited queue; ``lanes`` counts each lane's jobs, so a claim
finds the lanes without reading their jobs. A claim visits only the lanes whose limits
have room now, at most that many jobs of each, merged with the unlimited jobs in
priority and FIFO order; so jobs at their limit cost a claim nothing.

A claimed limited job gets a ``counted`` entry (its processing key -> the limits it
takes a slot of), written with the claim; whatever ends or puts back the claim (an
outcome, ``requeue_server``, a delete) releases it in the same commit. A store without
limits has these databases empty and pays one empty check where it would look.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable
from functools import partial

from ...concurrency import QUEUE, TASK, Limit, LimitState
from . import keys
from .env import Tx


def in_use(tx: Tx) -> bool:
    """Whether any limit exists (lanes can hold jobs only then)."""
    return tx.has_entries(keys.DB_LIMITS)


def lane_of(tx: Tx, name: str, queue: str) -> bytes | None:
    """The lane prefix a ready job of task ``name`` in ``queue`` is filed under; None
    for a job of neither a limited task nor a limited queue."""
    if tx.get(keys.DB_LIMITS, keys.limit_key(TASK, name)) is not None:
        return keys.lane_prefix(queue, name)
    if tx.get(keys.DB_LIMITS, keys.limit_key(QUEUE, queue)) is not None:
        return keys.lane_prefix(queue, "")
    return None


def count(tx: Tx, prefix: bytes, delta: int) -> None:
    """Add ``delta`` to a lane's job count (its entry goes at zero)."""
    left = keys.decode_count(tx.get(keys.DB_LANES, prefix)) + delta
    if left > 0:
        tx.put(keys.DB_LANES, prefix, keys.encode_count(left))
    else:
        tx.delete(keys.DB_LANES, prefix)


def limits_of(prefix: bytes, stored: Collection[bytes]) -> tuple[bytes, ...]:
    """The limits a job of the lane ``prefix`` counts against: its task's, its queue's
    (those of the limit keys ``stored`` that exist)."""
    return tuple(key for key in keys.lane_limit_keys(prefix) if key in stored)


def stored_limits(tx: Tx) -> dict[bytes, LimitState]:
    """Every limit, by limit key (a handful: one read each)."""
    found = {}
    for key, raw in tx.scan(keys.DB_LIMITS):
        value = keys.decode_limit(raw)
        if value is not None:  # bytes mpqueue did not write: no limit, never a crash
            found[key] = value
    return found


def open_lanes(
    tx: Tx, queue: str | None, wanted: int, free: dict[bytes, int]
) -> list[tuple[bytes, str, int, tuple[bytes, ...]]]:
    """(prefix, queue, room, limits) of each lane (of ``queue``; None: of every queue)
    with a free slot: its room is what its limits have free (at most ``wanted``)."""
    found = []
    prefixes = list(tx.keys_from(keys.DB_LANES, b""))
    tx.counter.cursor_steps += len(prefixes) + 1
    for prefix in prefixes:
        lane_queue, candidates = _lane_names(prefix)
        if queue is not None and lane_queue != queue:
            continue
        limits = tuple(key for key in candidates if key in free)
        room = min((free[key] for key in limits), default=wanted)
        if room > 0:
            found.append((prefix, lane_queue, min(room, wanted), limits))
    return found


@functools.lru_cache(maxsize=4096)
def _lane_names(prefix: bytes) -> tuple[str, tuple[bytes, ...]]:
    """(queue, the keys of the limits it may count against) of a lane: a function of
    the prefix's bytes alone, remembered since every claim visits every lane."""
    return keys.split_lane_prefix(prefix)[0], keys.lane_limit_keys(prefix)


def take_slots(tx: Tx, claims: Iterable[tuple[bytes, tuple[bytes, ...]]], now_ms: int) -> None:
    """Jobs claimed now, each (its processing key, its limits), take a slot of each of
    their limits (and a start of each one's rate); their ``counted`` entries say which.
    Each limit is read and written once for the lot, not once per job."""
    taken: dict[bytes, int] = {}
    entries = []
    for processing_key, limits in claims:
        entries.append((processing_key, keys.SEP.join(limits)))
        for key in limits:
            taken[key] = taken.get(key, 0) + 1
    entries.sort()  # one multi-put, in key order
    tx.put_many(keys.DB_COUNTED, entries)
    for key, count in taken.items():
        _change(tx, key, partial(LimitState.claimed, count=count, now_ms=now_ms))


def release(tx: Tx, processing_keys: Iterable[bytes]) -> None:
    """Claims that ended or were put back free their slots (none for most jobs); each
    limit is read and written once for the lot."""
    freed: dict[bytes, int] = {}
    for processing_key in processing_keys:
        raw = tx.pop(keys.DB_COUNTED, processing_key)
        if raw is None:
            continue
        for key in raw.split(keys.SEP):
            freed[key] = freed.get(key, 0) + 1
    for key, count in freed.items():
        _change(tx, key, partial(LimitState.released, count=count))


def _change(tx: Tx, key: bytes, change: Callable[[LimitState], LimitState]) -> None:
    state = keys.decode_limit(tx.get(keys.DB_LIMITS, key))
    if state is not None:  # a limit removed meanwhile: nothing to count
        tx.put(keys.DB_LIMITS, key, keys.encode_limit(change(state)))


def listed(tx: Tx) -> list[Limit]:
    return [
        state.limit(*keys.decode_limit_key(key)) for key, state in sorted(stored_limits(tx).items())
    ]


def reopens_at(tx: Tx, now_ms: int) -> int | None:
    """The earliest time a rate that lets no start through now lets one through."""
    times = [state.reopens_at(now_ms) for state in stored_limits(tx).values()]
    return min((t for t in times if t is not None), default=None)


def move_lane(tx: Tx, prefix: bytes, target: tuple[bytes, bytes] | None, queue: str) -> None:
    """Move every job of lane ``prefix`` to ``target`` (db, key prefix), None: to its
    queue's plain index (``ready`` or ``queued``)."""
    moved = [key for key, _ in tx.scan_prefix(keys.DB_LANED, prefix, values=False)]
    for key in moved:
        tx.delete(keys.DB_LANED, key)
        ready = key[len(prefix) :]
        if target is None:
            if queue == "default":
                tx.put(keys.DB_READY, ready, b"")
            else:
                tx.put(keys.DB_QUEUED, keys.queued_key(queue, ready), b"")
        else:
            tx.put(target[0], target[1] + ready, b"")
    tx.delete(keys.DB_LANES, prefix)
    if target is not None and target[0] == keys.DB_LANED and moved:
        count(tx, target[1], len(moved))
