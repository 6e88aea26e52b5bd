"""Named queues on LMDB (see mpqueue/queues.py for what they are).

The default queue's ready jobs stay in ``ready``; a named queue's are in ``queued``
under the queue's name (``keys.queued_key``), so one queue's jobs are one key range in
priority and FIFO order, and a server that serves some queues never steps over the
others' jobs. ``queues`` keeps each named queue's number of ready jobs (held ones of a
paused task too), adjusted by whatever files or unfiles one: ``file`` and ``unfile``
here, and the claim's ``take``. A store in which no job names a queue has both
databases empty and pays one empty check where it would look at them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from ...queues import DEFAULT_QUEUE
from . import keys, lanes
from .env import Tx

READY_DBS = (keys.DB_READY, keys.DB_QUEUED, keys.DB_LANED)  # where claimable jobs are filed


def entry(queue: str, ready_key: bytes) -> tuple[bytes, bytes]:
    """The (db, key) a ready job of ``queue`` is filed under."""
    if queue == DEFAULT_QUEUE:
        return keys.DB_READY, ready_key
    return keys.DB_QUEUED, keys.queued_key(queue, ready_key)


def laned(tx: Tx, name: str, queue: str, plain: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    """Where a ready job of task ``name`` in ``queue`` whose plain entry (``entry``) is
    ``plain`` is filed: in its lane where its task or queue is limited (lanes.py). One
    empty check where no limit exists."""
    if plain[0] not in (keys.DB_READY, keys.DB_QUEUED) or not lanes.in_use(tx):
        return plain
    prefix = lanes.lane_of(tx, name, queue)
    if prefix is None:
        return plain
    return keys.DB_LANED, prefix + keys.ready_of_held(plain[1])


def filed(tx: Tx, name: str, queue: str, ready_key: bytes) -> tuple[bytes, bytes]:
    """The (db, key) a ready job of task ``name`` in ``queue`` is filed under."""
    return laned(tx, name, queue, entry(queue, ready_key))


def in_use(tx: Tx) -> bool:
    """Whether any named queue has ready jobs (held ones too)."""
    return tx.has_entries(keys.DB_QUEUES)


def count(tx: Tx, queue: str, delta: int) -> None:
    """Add ``delta`` to a named queue's ready count (its entry goes at zero)."""
    key = queue.encode("ascii")
    left = keys.decode_count(tx.get(keys.DB_QUEUES, key)) + delta
    if left > 0:
        tx.put(keys.DB_QUEUES, key, keys.encode_count(left))
    else:
        tx.delete(keys.DB_QUEUES, key)


def counts(tx: Tx) -> dict[str, int]:
    """Each named queue's ready jobs (held ones of paused tasks too)."""
    return {
        key.decode("ascii", "replace"): keys.decode_count(value)
        for key, value in tx.scan(keys.DB_QUEUES)
    }


def names(tx: Tx) -> list[str]:
    """The named queues that have ready jobs."""
    return [key.decode("ascii", "replace") for key, _ in tx.scan(keys.DB_QUEUES, values=False)]


def has_ready(tx: Tx, queue: str) -> bool:
    """Whether ``queue`` has a claimable job (held jobs are not): one seek."""
    if queue == DEFAULT_QUEUE:
        return tx.has_entries(keys.DB_READY)
    prefix = keys.queue_prefix(queue)
    first = tx.first_key_from(keys.DB_QUEUED, prefix)
    return first is not None and first.startswith(prefix)


def any_ready(tx: Tx, queues: tuple[str, ...] | None) -> bool:
    """Whether a server that serves ``queues`` (None: all) has a claimable job."""
    if queues is None:
        return tx.has_entries(keys.DB_READY) or tx.has_entries(keys.DB_QUEUED)
    return any(has_ready(tx, queue) for queue in queues)


def _index_of(queue: str) -> tuple[bytes, bytes]:
    """(db, key prefix) of ``queue``'s claimable jobs: all of ``ready`` for the default
    queue, its own key range of ``queued`` for a named one."""
    if queue == DEFAULT_QUEUE:
        return keys.DB_READY, b""
    return keys.DB_QUEUED, keys.queue_prefix(queue)


def scan(tx: Tx, queue: str) -> Iterator[tuple[bytes, bytes, bytes]]:
    """(ready key, db, key) of ``queue``'s claimable jobs, in claim order."""
    db, prefix = _index_of(queue)
    for key, _ in tx.scan_prefix(db, prefix, values=False):
        yield key[len(prefix) :], db, key


def merged(tx: Tx) -> Iterator[tuple[bytes, bytes, bytes]]:
    """``scan`` of every queue at once, in priority and FIFO order across them (the
    queues' keys are merged by their ready keys: one cursor per queue)."""
    queues = [DEFAULT_QUEUE, *names(tx)]
    return heapq.merge(*(scan(tx, queue) for queue in queues))


def take(tx: Tx, found: Iterator[tuple[bytes, bytes, bytes]], wanted: int) -> list[bytes]:
    """Take up to ``wanted`` entries of ``found`` (from ``scan`` or ``merged``) out of
    their index; returns their ready keys, in claim order."""
    taken = list(itertools.islice(found, wanted))
    _remove_taken(tx, [(db, key) for _, db, key in taken])
    return [ready for ready, _, _ in taken]


def _remove_taken(tx: Tx, taken: list[tuple[bytes, bytes]]) -> None:
    """Delete claimed entries and count them out of their queues and lanes."""
    removed: dict[str, int] = {}
    emptied: dict[bytes, int] = {}
    for db, key in taken:
        tx.delete(db, key)
        if db == keys.DB_QUEUED:
            queue = keys.split_queued_key(key)[0][:-1].decode("ascii")
        elif db == keys.DB_LANED:
            prefix = keys.lane_of_laned(key)
            emptied[prefix] = emptied.get(prefix, 0) + 1
            queue = keys.split_lane_prefix(prefix)[0]
        else:
            continue
        if queue != DEFAULT_QUEUE:
            removed[queue] = removed.get(queue, 0) + 1
    for queue, number in removed.items():
        count(tx, queue, -number)
    for prefix, number in emptied.items():
        lanes.count(tx, prefix, -number)


def take_limited(
    tx: Tx, queue: str | None, wanted: int, now_ms: int
) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """``take`` where lanes hold jobs: the plain entries of ``queue`` (None: of every
    queue) merged with the lanes that have room now, each lane read no further than
    its room, in priority and FIFO order; a lane job whose limit filled in this
    claim stays. Returns (ready key, the limits it takes a slot of), in claim order."""
    plain = merged(tx) if queue is None else scan(tx, queue)
    free = {key: state.room(now_ms) for key, state in lanes.stored_limits(tx).items()}
    opened = lanes.open_lanes(tx, queue, wanted, free)
    if not opened:  # every lane at its limit: the plain claim, no merge
        return [(ready, ()) for ready in take(tx, plain, wanted)]
    untagged: Iterator[lanes.Found] = ((*item, ()) for item in plain)
    sources = [untagged, *opened]
    picked: list[lanes.Found] = []
    for item in heapq.merge(*sources):
        limits = item[3]
        if any(free[key] <= 0 for key in limits):
            continue
        for key in limits:
            free[key] -= 1
        picked.append(item)
        if len(picked) >= wanted:
            break
    _remove_taken(tx, [(db, key) for _, db, key, _ in picked])
    return [(ready, limits) for ready, _, _, limits in picked]


def file(tx: Tx, db: bytes, key: bytes, queue: str) -> None:
    """Put a ready job's entry (``db``: ready, queued, laned or paused) and count it."""
    tx.put(db, key, b"")
    if queue != DEFAULT_QUEUE:
        count(tx, queue, 1)
    if db == keys.DB_LANED:
        lanes.count(tx, keys.lane_of_laned(key), 1)


def unfile(tx: Tx, name: str, queue: str, ready_key: bytes) -> bool:
    """Take a ready job of task ``name`` out of its queue's index, or out of ``paused``
    where its task is paused; False if it was in neither."""
    db, key = filed(tx, name, queue, ready_key)
    gone = tx.delete(db, key)
    if gone and db == keys.DB_LANED:
        lanes.count(tx, keys.lane_of_laned(key), -1)
    if not gone and tx.has_entries(keys.DB_PAUSED):
        gone = tx.delete(keys.DB_PAUSED, keys.held_key(name, ready_key, queue))
    if gone and queue != DEFAULT_QUEUE:
        count(tx, queue, -1)
    return gone


def forget(tx: Tx, job_id: str) -> None:
    """Remove a job whose record cannot be read from ``queued`` and ``laned``, by
    scanning them."""
    jid = job_id.encode("ascii")
    stale = [
        (db, key)
        for db in (keys.DB_QUEUED, keys.DB_LANED)
        for key, _ in tx.scan(db, values=False)
        if key.endswith(jid)
    ]
    _remove_taken(tx, stale)  # counted out as a claim's are


def heads(tx: Tx, queue: str, budget: int) -> Iterator[bytes]:
    """The first ready key of each priority of ``queue``, highest first, at most
    ``budget`` of them: one seek each."""
    return heads_in(tx, *_index_of(queue), budget)


def lane_heads(tx: Tx, budget: int) -> Iterator[bytes]:
    """``heads`` of every lane (none where no limit is in use: one empty check)."""
    if not tx.has_entries(keys.DB_LANES):
        return
    for prefix, _ in tx.scan(keys.DB_LANES, values=False):
        for ready in heads_in(tx, keys.DB_LANED, prefix, budget):
            budget -= 1
            yield ready


def heads_in(tx: Tx, db: bytes, prefix: bytes, budget: int) -> Iterator[bytes]:
    start = prefix
    for _ in range(budget):
        key = tx.first_key_from(db, start)
        if key is None or not key.startswith(prefix):
            return
        ready = key[len(prefix) :]
        yield ready
        priority = keys.decode_ready_key(ready)[0]
        if priority <= keys.PRIORITY_MIN:
            return
        start = prefix + keys.ready_priority_start(priority - 1)
