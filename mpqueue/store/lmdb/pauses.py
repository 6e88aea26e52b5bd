"""Pausing on LMDB: the ``pauses`` database says what is paused (task names, and
``PAUSE_ALL`` for the whole queue); a paused task's ready jobs sit in ``paused``
(``keys.held_key``) instead of ``ready``, so claims never step over them. The whole-queue
flag leaves ``ready`` as it is: the claim reads the flag (one get) and takes nothing.

When nothing is paused, ``pauses`` is empty and the write paths pay one cursor check."""

from __future__ import annotations

from ...errors import CorruptRecord
from ...pausing import PauseChange, Paused
from ...queues import DEFAULT_QUEUE
from ...records import JobState
from ..codec import Row
from . import keys, lanes
from . import queues as queue_index
from .env import Tx


def held_names(tx: Tx) -> frozenset[bytes]:
    """The pauses keys (empty when nothing is paused: one cursor check)."""
    if not tx.has_entries(keys.DB_PAUSES):
        return frozenset()
    return frozenset(key for key, _ in tx.scan(keys.DB_PAUSES, values=False))


def held_entry(
    tx: Tx, name: str, entry: tuple[bytes, bytes], queue: str = DEFAULT_QUEUE
) -> tuple[bytes, bytes]:
    """Where a job of task ``name`` in ``queue`` filed under ``entry`` goes: ``paused``
    for a ready job of a paused task."""
    if entry[0] not in queue_index.READY_DBS or not tx.has_entries(keys.DB_PAUSES):
        return entry
    if tx.get(keys.DB_PAUSES, keys.pause_key(name)) is None:
        return entry
    ready = keys.ready_of_held(entry[1])  # ready keys are fixed-width, at the end
    return keys.DB_PAUSED, keys.held_key(name, ready, queue)


def takes_nothing(tx: Tx) -> bool:
    """Whether the whole queue is paused (claims and hand-offs take nothing). Asked
    once per claim: the empty check first, as it costs half a get (measured)."""
    return tx.has_entries(keys.DB_PAUSES) and tx.get(keys.DB_PAUSES, keys.PAUSE_ALL) is not None


def hands_off(tx: Tx, name: str) -> bool:
    """Whether a new ready job of task ``name`` may go straight to an idle child."""
    if not tx.has_entries(keys.DB_PAUSES):
        return True
    return all(tx.get(keys.DB_PAUSES, k) is None for k in (keys.PAUSE_ALL, keys.pause_key(name)))


def mark(tx: Tx, name: str | None) -> bool:
    """Record that ``name`` (None: the whole queue) is paused; False if it was already."""
    key = keys.PAUSE_ALL if name is None else keys.pause_key(name)
    if tx.get(keys.DB_PAUSES, key) is not None:
        return False
    tx.put(keys.DB_PAUSES, key, b"")
    return True


def unmark(tx: Tx, name: str | None) -> bool:
    """Undo ``mark``; False if ``name`` was not paused."""
    return tx.delete(keys.DB_PAUSES, keys.PAUSE_ALL if name is None else keys.pause_key(name))


def pause(tx: Tx, name: str | None) -> PauseChange:
    if not mark(tx, name):
        return PauseChange(name, True, False)
    if name is not None:
        held = [
            keys.held_key(name, ready, queue)
            for queue, ready in _ready_keys(tx, name)
            if _take_out(tx, queue_index.filed(tx, name, queue, ready))
        ]
        held.sort()
        tx.put_many(keys.DB_PAUSED, [(key, b"") for key in held])  # counted as they were
    return PauseChange(name, True, True)


def _take_out(tx: Tx, entry: tuple[bytes, bytes]) -> bool:
    """Delete a ready job's entry, counted out of its lane if it has one."""
    gone = tx.delete(*entry)
    if gone and entry[0] == keys.DB_LANED:
        lanes.count(tx, keys.lane_of_laned(entry[1]), -1)
    return gone


def _ready_keys(tx: Tx, name: str) -> list[tuple[str, bytes]]:
    """(queue, ready key) of task ``name``'s ready jobs, read from the fields of the
    records its name index holds (no record objects), sorted."""
    found = []
    for _, raw in tx.scan_prefix(keys.DB_BY_NAME, keys.by_name_prefix(name)):
        try:
            row = Row(raw)
        except CorruptRecord:
            continue  # never filed as ready: the claim parks it, nothing to hold
        if row.state is JobState.READY:
            found.append((row.queue, keys.ready_key(row.priority, row.seq, row.id)))
    found.sort()
    return found


def resume(tx: Tx, name: str | None) -> PauseChange:
    if not unmark(tx, name):
        return PauseChange(name, False, False)
    if name is not None:
        prefix = keys.by_name_prefix(name)
        held = [key for key, _ in tx.scan_prefix(keys.DB_PAUSED, prefix, values=False)]
        back: dict[bytes, list[tuple[bytes, bytes]]] = {}
        for key in held:
            tx.delete(keys.DB_PAUSED, key)
            queue = keys.queue_of_held(key, name)
            db, ready = queue_index.filed(tx, name, queue, keys.ready_of_held(key))
            back.setdefault(db, []).append((ready, b""))
            if db == keys.DB_LANED:
                lanes.count(tx, keys.lane_of_laned(ready), 1)
        for db, items in back.items():  # counted while held: the counts stay
            items.sort()
            tx.put_many(db, items)
    return PauseChange(name, False, True)


def paused(tx: Tx) -> Paused:
    found = held_names(tx)
    tasks = frozenset(k.decode("utf-8") for k in found if k != keys.PAUSE_ALL)
    return Paused(keys.PAUSE_ALL in found, tasks)
