"""Setting and removing a concurrency or rate limit on LMDB (see lanes.py): the limit, its
running count, and the refiling of the ready jobs it concerns into or out of their
lanes, in one transaction. Rare (a ``Queue.limit`` call, a server's start), so it may
read what it concerns: the task's jobs, or the queue's ready ones, and every claim."""

from __future__ import annotations

from dataclasses import replace

from ...concurrency import QUEUE, TASK, LimitState, check_concurrency, check_kind, kept_starts
from ...errors import CorruptRecord
from ...queues import DEFAULT_QUEUE
from ...rates import Rate
from ..codec import decode_record
from . import keys, lanes, pauses
from . import queues as queue_index
from .env import Tx


def set_limit(
    tx: Tx, kind: str, name: str, concurrency: int | None, rate: Rate | None = None
) -> bool:
    check_kind(kind)
    check_concurrency(concurrency)
    key = keys.limit_key(kind, name)
    raw = tx.get(keys.DB_LIMITS, key)
    old = keys.decode_limit(raw)
    if concurrency is None and rate is None:
        if raw is None:
            return False
        tx.delete(keys.DB_LIMITS, key)
        _uncount(tx, key)
        _refile_out(tx, kind, name)
        return True
    if old is not None:
        new = replace(old, concurrency=concurrency, rate=rate, starts=kept_starts(old, rate))
        if new == old:
            return False
        tx.put(keys.DB_LIMITS, key, keys.encode_limit(new))
        return True  # the lanes stay as they are; so do the running jobs and the log
    running = _running(tx, kind, name)
    tx.put(keys.DB_LIMITS, key, keys.encode_limit(LimitState(concurrency, len(running), rate)))
    for pkey in running:  # a job running now counts against the new limit
        held = tx.get(keys.DB_COUNTED, pkey)
        tx.put(keys.DB_COUNTED, pkey, key if held is None else held + keys.SEP + key)
    _refile_in(tx, kind, name)
    return True


def _running(tx: Tx, kind: str, name: str) -> list[bytes]:
    """The processing keys of the running jobs of that task or queue."""
    found = []
    for pkey, _ in tx.scan(keys.DB_PROCESSING, values=False):
        raw = tx.get(keys.DB_JOBS, keys.job_key(keys.decode_processing_key(pkey)[1]))
        try:
            rec = None if raw is None else decode_record(raw)
        except CorruptRecord:
            continue  # parked when its outcome comes: it counts against nothing
        if rec is not None and (rec.name if kind == TASK else rec.queue) == name:
            found.append(pkey)
    return found


def _uncount(tx: Tx, key: bytes) -> None:
    """Take a removed limit out of every ``counted`` entry."""
    for pkey, raw in list(tx.scan(keys.DB_COUNTED)):
        left = [part for part in raw.split(keys.SEP) if part != key]
        if not left:
            tx.delete(keys.DB_COUNTED, pkey)
        elif len(left) != raw.count(keys.SEP) + 1:
            tx.put(keys.DB_COUNTED, pkey, keys.SEP.join(left))


def _refile_in(tx: Tx, kind: str, name: str) -> None:
    """File the ready jobs of a newly limited task or queue in their lanes."""
    if kind == QUEUE:  # its plain entries go to its lane of unlimited tasks
        found = queue_index.scan(tx, name)
        moved = [(db, key, ready) for ready, db, key in found]
        prefix = keys.lane_prefix(name, "")
        for db, key, ready in moved:
            tx.delete(db, key)
            tx.put(keys.DB_LANED, prefix + ready, b"")
        if moved:
            lanes.count(tx, prefix, len(moved))
        return
    for queue, ready in pauses._ready_keys(tx, name):  # held ones stay held
        target = keys.lane_prefix(queue, name)
        shared = keys.lane_prefix(queue, "")
        if tx.delete(*queue_index.entry(queue, ready)):
            pass
        elif tx.delete(keys.DB_LANED, shared + ready):
            lanes.count(tx, shared, -1)
        else:
            continue
        tx.put(keys.DB_LANED, target + ready, b"")
        lanes.count(tx, target, 1)


def _refile_out(tx: Tx, kind: str, name: str) -> None:
    """File the ready jobs of a task or queue whose limit went back where they go
    now: a task's to its queue's lane if that queue is limited, else to their queue."""
    if kind == QUEUE:
        lanes.move_lane(tx, keys.lane_prefix(name, ""), None, name)
        return
    for prefix, _ in list(tx.scan(keys.DB_LANES, values=False)):
        queue, task = keys.split_lane_prefix(prefix)
        if task != name:
            continue
        limited = tx.get(keys.DB_LIMITS, keys.limit_key(QUEUE, queue)) is not None
        target = (keys.DB_LANED, keys.lane_prefix(queue, "")) if limited else None
        lanes.move_lane(tx, prefix, target, queue if queue else DEFAULT_QUEUE)
