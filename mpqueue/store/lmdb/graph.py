"""The LMDB store's side of workflows: dependency edges, waiting counts and unique keys
(the ``waiting``, ``deps``, ``cancelled`` and ``unique`` databases of ``keys.py``, and
``expired``, where a waiting job past its deadline goes when it is released).

``LmdbGraph`` is ``dependencies.Graph`` over one write transaction; ``Linker`` writes
new jobs that have dependencies or a unique key. The rules are in
``mpqueue/dependencies.py``; only where things are kept is here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ...dependencies import Admission, admit, on_holders, settle
from ...errors import ConfigError
from ...records import FAILED_STATES, FINISHED_STATES, JobRecord, JobState
from . import keys
from .env import Tx


class RecordFiler(Protocol):
    """What the graph needs of the store: reading and filing records in a transaction."""

    def _load(self, tx: Tx, job_id: str) -> JobRecord | None: ...
    def _save(self, tx: Tx, rec: JobRecord) -> bytes: ...
    def _requeue(self, tx: Tx, rec: JobRecord) -> None: ...
    def _enqueue_index(self, tx: Tx, rec: JobRecord) -> None: ...


class LmdbGraph:
    """``dependencies.Graph`` over the write transaction ``tx``.

    It keeps the waiting counts it read, and writes those it lowered at ``flush``: the
    ends of one commit (a chord's members finished in one cycle) read and write their
    callback's count once, not once each. Every settle of a transaction between the
    graph's first read and its flush must go through the graph (``settle_ends``)."""

    def __init__(self, store: RecordFiler, tx: Tx):
        self.store, self.tx = store, tx
        self.counts: dict[str, tuple[int, bool] | None] = {}  # None: stopped waiting
        self.lowered: set[str] = set()  # counts to write at flush

    def open_edges(self, job_id: str) -> list[str]:
        return [
            keys.edge_dependent(key)
            for key, value in self.tx.prefix_items(keys.DB_DEPS, keys.edge_prefix(job_id))
            if value == keys.EDGE_OPEN
        ]

    def open_count(self, job_id: str) -> tuple[int, bool] | None:
        if job_id in self.counts:
            return self.counts[job_id]
        raw = self.tx.get(keys.DB_WAITING, keys.job_key(job_id))
        if raw is None:
            return None
        try:
            entry = keys.decode_waiting(raw)
        except ValueError:
            entry = (1, False)  # bytes no store wrote: released (or cancelled) by this end
        self.counts[job_id] = entry
        return entry

    def count_down(self, job_id: str, open_deps: int) -> None:
        entry = self.open_count(job_id)
        self.counts[job_id] = (open_deps, entry is not None and entry[1])
        self.lowered.add(job_id)

    def flush(self) -> None:
        for job_id in sorted(self.lowered):
            entry = self.counts[job_id]
            assert entry is not None  # a job that stopped waiting left ``lowered``
            value = keys.encode_waiting(*entry)
            self.tx.put(keys.DB_WAITING, keys.job_key(job_id), value)
        self.lowered.clear()

    def _forget(self, job_id: str) -> None:
        """A job that stops waiting: its count goes, and is neither read nor written."""
        self.counts[job_id] = None
        self.lowered.discard(job_id)
        self.tx.delete(keys.DB_WAITING, keys.job_key(job_id))

    def load(self, job_id: str) -> JobRecord:
        rec = self.store._load(self.tx, job_id)
        if rec is None:  # a waiting entry without its job: check reports it
            raise ConfigError(f"job {job_id} waits but has no record")
        return rec

    def file_released(self, rec: JobRecord) -> None:
        self._forget(rec.id)
        self.store._requeue(self.tx, rec)  # a new FIFO number: behind the jobs waiting

    def file_cancelled(self, rec: JobRecord, reason: str) -> None:
        self._forget(rec.id)
        self.store._save(self.tx, rec)
        file_cancelled_entry(self.tx, rec, reason)

    def file_expired(self, rec: JobRecord) -> None:
        self._forget(rec.id)
        self.store._save(self.tx, rec)
        file_expired_entry(self.tx, rec)


def file_expired_entry(tx: Tx, rec: JobRecord) -> None:
    """File a job that ended expired (its record is saved by the caller)."""
    tx.put(keys.DB_EXPIRED, keys.done_key(rec.finished_at_ms or 0, rec.id), b"")


def file_cancelled_entry(tx: Tx, rec: JobRecord, reason: str) -> None:
    key = keys.done_key(rec.finished_at_ms or 0, rec.id)
    tx.put(keys.DB_CANCELLED, key, reason.encode("utf-8", "replace"))


def settle_end(store: RecordFiler, tx: Tx, rec: JobRecord, end: JobState | None, now: int) -> None:
    """``dependencies.settle`` for the end of ``rec``; free while no job has dependents."""
    settle_ends(store, tx, [(rec, end)], now)


def settle_ends(
    store: RecordFiler, tx: Tx, ends: list[tuple[JobRecord, JobState | None]], now: int
) -> None:
    """``dependencies.settle`` for each (job, end) of a transaction, through one graph."""
    if ends and tx.has_entries(keys.DB_DEPS):
        graph = LmdbGraph(store, tx)
        for rec, end in ends:
            settle(graph, rec.id, rec.name, end, now)
        graph.flush()


def unlink(store: RecordFiler, tx: Tx, rec: JobRecord, now: int) -> None:
    """Take a job being deleted out of the graph: the jobs waiting for it are settled as
    for a job deleted before it ended, and its edges, count and key entry go."""
    if tx.has_entries(keys.DB_DEPS):
        if rec.state not in FINISHED_STATES:
            settle_end(store, tx, rec, None, now)
        out = [key for key, _ in tx.scan_prefix(keys.DB_DEPS, keys.edge_prefix(rec.id), False)]
        for key in out:
            tx.delete(keys.DB_DEPS, key)
        for dep in rec.depends_on:
            tx.delete(keys.DB_DEPS, keys.edge_key(dep, rec.id))
    tx.delete(keys.DB_WAITING, keys.job_key(rec.id))
    if rec.state is JobState.CANCELLED:
        tx.delete(keys.DB_CANCELLED, keys.done_key(rec.finished_at_ms or 0, rec.id))
    if rec.key is not None:
        unique = keys.unique_key(rec.name, rec.key)
        if tx.get(keys.DB_UNIQUE, unique) == keys.job_key(rec.id):
            tx.delete(keys.DB_UNIQUE, unique)


def close_edges(tx: Tx, job_id: str) -> None:
    """Close the edges from a dead job being taken back (requeued): they were counted
    when it died, and its next end must count nothing."""
    prefix = keys.edge_prefix(job_id)
    opened = [
        key for key, value in tx.prefix_items(keys.DB_DEPS, prefix) if value == keys.EDGE_OPEN
    ]
    for key in opened:  # after the scan: its cursor stays where it was
        tx.put(keys.DB_DEPS, key, keys.EDGE_CLOSED)


def key_holder(store: RecordFiler, tx: Tx, name: str, key: str) -> JobRecord | None:
    """The job that holds (task ``name``, ``key``): one that exists and is neither
    dead nor cancelled. One lookup, plus the record's."""
    held = tx.get(keys.DB_UNIQUE, keys.unique_key(name, key))
    if held is None:
        return None
    rec = store._load(tx, keys.decode_job_key(held))
    return rec if rec is not None and rec.state not in FAILED_STATES else None


def dependents(tx: Tx, job_id: str) -> list[str]:
    """The jobs that depend on ``job_id``, in id order (closed edges too)."""
    prefix = keys.edge_prefix(job_id)
    return [keys.edge_dependent(key) for key, _ in tx.scan_prefix(keys.DB_DEPS, prefix, False)]


class Linker:
    """Writes the new jobs of one ``add`` that have dependencies or a unique key, in
    order, after the batch's plain jobs; ``written`` holds the records this add wrote,
    so a job depending on one of them reads no record."""

    def __init__(
        self,
        store: RecordFiler,
        tx: Tx,
        now: int,
        write_plain: Callable[[Tx, list[JobRecord]], None],
    ):
        self.store, self.tx, self.now = store, tx, now
        self.write_plain = write_plain
        self.written: dict[str, JobRecord] = {}
        self.replaced: dict[str, str] = {}  # id of a job whose key was held -> holder's

    def add(self, records: list[JobRecord]) -> list[JobRecord]:
        """Write ``records`` (FIFO numbers set); returns each one's record as stored: a
        key's holder in place of a job whose key was held."""
        plain = [r for r in records if not r.depends_on and r.key is None]
        if plain:
            self.write_plain(self.tx, plain)
            self.written.update((r.id, r) for r in plain)
        return [self._add(rec) if rec.depends_on or rec.key is not None else rec for rec in records]

    def _add(self, rec: JobRecord) -> JobRecord:
        if rec.key is not None:
            holder = key_holder(self.store, self.tx, rec.name, rec.key)
            if holder is not None:
                self.written[holder.id] = holder
                self.replaced[rec.id] = holder.id
                return holder
        rec = on_holders(rec, self.replaced)
        if rec.depends_on:
            rec = self._link(admit(rec, [self._dependency(d) for d in rec.depends_on], self.now))
        self.store._save(self.tx, rec)
        self.store._enqueue_index(self.tx, rec)  # ready or scheduled: its queue index
        if rec.key is not None:
            self.tx.put(keys.DB_UNIQUE, keys.unique_key(rec.name, rec.key), keys.job_key(rec.id))
        self.written[rec.id] = rec
        return rec

    def _dependency(self, job_id: str) -> JobRecord | None:
        found = self.written.get(job_id)
        return found if found is not None else self.store._load(self.tx, job_id)

    def _link(self, admission: Admission) -> JobRecord:
        rec = admission.record
        edges = keys.edge_entries(rec.id, rec.depends_on, admission.open_edges)
        self.tx.put_many(keys.DB_DEPS, edges)
        if rec.state is JobState.WAITING:
            value = keys.encode_waiting(admission.open_deps, rec.allow_failures)
            self.tx.put(keys.DB_WAITING, keys.job_key(rec.id), value)
        elif rec.state is JobState.CANCELLED:
            file_cancelled_entry(self.tx, rec, admission.reason)
        return rec
