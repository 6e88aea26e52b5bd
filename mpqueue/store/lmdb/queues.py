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
from collections.abc import Iterator
from dataclasses import dataclass

from ...queues import DEFAULT_QUEUE
from . import keys, lanes
from .env import Tx

READY_DBS = (keys.DB_READY, keys.DB_QUEUED, keys.DB_LANED)  # where claimable jobs are filed


def entry(queue: str, ready_key: bytes) -> tuple[bytes, bytes]:
    """The (db, key) a ready job of ``queue`` is filed under."""
    if queue == DEFAULT_QUEUE:
        return keys.DB_READY, ready_key
    return keys.DB_QUEUED, keys.queued_key(queue, ready_key)


def laned(
    tx: Tx,
    name: str,
    queue: str,
    plain: tuple[bytes, bytes],
    memo: dict[tuple[str, str], bytes | None] | None = None,
) -> tuple[bytes, bytes]:
    """Where a ready job of task ``name`` in ``queue`` whose plain entry (``entry``) is
    ``plain`` is filed: in its lane where its task or queue is limited (lanes.py). One
    empty check where no limit exists. ``memo``: a batch's lane of each (task, queue)
    so far, for a caller that knows limits are in use (none changes within a write)."""
    if plain[0] not in (keys.DB_READY, keys.DB_QUEUED):
        return plain
    if memo is None:
        prefix = lanes.lane_of(tx, name, queue) if lanes.in_use(tx) else None
    else:
        if (name, queue) not in memo:
            memo[name, queue] = lanes.lane_of(tx, name, queue)
        prefix = memo[name, queue]
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


@dataclass(slots=True)
class _Source:
    """One key range a claim merges: a queue's plain entries, or a lane (lanes.py)."""

    db: bytes
    prefix: bytes
    queue: str  # the queue whose ready count its taken entries leave
    limits: tuple[bytes, ...] = ()  # the limits each of its jobs takes a slot of
    room: int = 0  # the most entries the claim may take of it
    keys: Iterator[bytes] = iter(())
    taken: int = 0


def take(
    tx: Tx, queue: str | None, wanted: int, now_ms: int
) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """Take up to ``wanted`` claimable entries of ``queue`` (None: of every queue) out
    of their indexes, in priority and FIFO order across them: its plain entries merged
    with the lanes that have room now, each lane read no further than its room; once a
    lane's limit fills in this claim, the rest of that lane is not read. Returns (ready
    key, the limits it takes a slot of), in claim order."""
    queues = [DEFAULT_QUEUE, *names(tx)] if queue is None else [queue]
    sources = [_Source(*_index_of(name), name, room=wanted) for name in queues]
    free: dict[bytes, int] = {}
    if tx.has_entries(keys.DB_LANES):
        free = {key: state.room(now_ms) for key, state in lanes.stored_limits(tx).items()}
        for prefix, lane_queue, room, limits in lanes.open_lanes(tx, queue, wanted, free):
            sources.append(_Source(keys.DB_LANED, prefix, lane_queue, limits, room))
    picked = _merge(tx, sources, wanted, free)
    _count_out(tx, sources)
    return [(key[len(source.prefix) :], source.limits) for key, source in picked]


def _merge(
    tx: Tx, sources: list[_Source], wanted: int, free: dict[bytes, int]
) -> list[tuple[bytes, _Source]]:
    """Up to ``wanted`` entries of ``sources`` in ready-key order, deleted as taken; each
    source's cursor is stepped by its own iterator, one heap for all of them (one per
    claim: no generator per entry, no merge inside a merge)."""
    heap: list[tuple[bytes, int, bytes]] = []
    steps = 0
    for index, source in enumerate(sources):
        source.keys = tx.keys_from(source.db, source.prefix)
        steps += 1
        first = next(source.keys, None)
        if first is not None and first.startswith(source.prefix):
            heap.append((first[len(source.prefix) :], index, first))
    heapq.heapify(heap)
    picked: list[tuple[bytes, _Source]] = []
    while heap and len(picked) < wanted:
        _, index, key = heap[0]
        source = sources[index]
        limits = source.limits
        if limits:
            if any(free[limit] <= 0 for limit in limits):  # filled in this claim
                heapq.heappop(heap)
                continue
            for limit in limits:
                free[limit] -= 1
        picked.append((key, source))
        source.taken += 1
        following = None if source.taken >= source.room else next(source.keys, None)
        steps += following is not None
        if following is None or not following.startswith(source.prefix):
            heapq.heappop(heap)
        else:
            heapq.heapreplace(heap, (following[len(source.prefix) :], index, following))
    tx.counter.cursor_steps += steps
    for key, source in picked:  # after the merge: no cursor steps over a deleted key
        tx.delete(source.db, key)
    return picked


def _count_out(tx: Tx, sources: list[_Source]) -> None:
    """Count the entries taken of each source out of its queue and lane."""
    removed: dict[str, int] = {}
    for source in sources:
        if not source.taken:
            continue
        if source.db == keys.DB_LANED:
            lanes.count(tx, source.prefix, -source.taken)
        if source.queue != DEFAULT_QUEUE:
            removed[source.queue] = removed.get(source.queue, 0) + source.taken
    for queue, number in removed.items():
        count(tx, queue, -number)


def _remove_taken(tx: Tx, taken: list[tuple[bytes, bytes]]) -> None:
    """Delete entries (a stale job's) and count them out of their queues and lanes."""
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
