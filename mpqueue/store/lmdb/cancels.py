"""The LMDB store's side of cancelling (the rules are in ``mpqueue/cancellation.py``).

A queued job is cancelled in place: out of its queue index (or its waiting count),
its record ``cancelled``, an entry in the ``cancelled`` index. A running job gets a
cancel request: the ``cancels`` database maps its processing key to the cancel's text,
which its server reads (``requests_of``) and ``finish`` takes (``take_request``) when
the job's outcome comes, whatever it is.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Protocol

from ...cancellation import CancelReport, cancel_entry
from ...dependencies import cancelled
from ...errors import CorruptRecord
from ...records import QUEUED_STATES, JobRecord, JobState
from ..codec import Row
from . import keys
from .env import Tx
from .graph import RecordFiler, file_cancelled_entry, settle_ends
from .keys import Queued


class CancelFiler(RecordFiler, Protocol):
    """What cancelling needs of the store, beyond the graph's needs."""

    def _unqueue_index(self, tx: Tx, rec: Queued) -> None: ...
    def _state_sources(self, state: JobState) -> list[bytes]: ...
    def _index_value(self, raw: bytes) -> bytes: ...


class Cancel:
    """One cancel's transaction: the jobs it ends and the requests it makes."""

    def __init__(self, store: CancelFiler, tx: Tx, text: str, now: int):
        self.store, self.tx, self.text, self.now = store, tx, text, now
        self.report = CancelReport()
        self.ends: list[tuple[JobRecord, JobState | None]] = []
        self._claims: dict[str, list[bytes]] | None = None

    def job(self, job_id: str, rec: JobRecord | None) -> None:
        """Cancel one job (its record as read in this transaction), in the report."""
        if rec is None:
            self.report.missing.append(job_id)
        elif rec.state in QUEUED_STATES and not rec.is_corrupt:
            self._end_queued(rec)
            self.report.cancelled.append(job_id)
        elif rec.state is JobState.PROCESSING and (claim_keys := self._claims_of(job_id)):
            self._request(claim_keys)
            self.report.requested.append(job_id)
        else:
            self.report.finished.append(job_id)

    def _request(self, claim_keys: list[bytes]) -> None:
        """Ask the holder of a running job to stop it (the first request's text stays)."""
        for key in claim_keys:
            if self.tx.get(keys.DB_CANCELS, key) is None:
                self.tx.put(keys.DB_CANCELS, key, self.text.encode("utf-8", "replace"))

    def asked_before(self, job_id: str) -> bool:
        """Whether every claim of a running job has a cancel request already."""
        claim_keys = self._claims_of(job_id)
        return all(self.tx.get(keys.DB_CANCELS, k) is not None for k in claim_keys)

    def _end_queued(self, rec: JobRecord) -> None:
        if rec.state is JobState.WAITING:
            self.tx.delete(keys.DB_WAITING, keys.job_key(rec.id))
        else:
            self.store._unqueue_index(self.tx, rec)
        ended = cancelled(rec, self.text, self.now)
        self.store._save(self.tx, ended)
        file_cancelled_entry(self.tx, ended, self.text)
        self.ends.append((ended, JobState.CANCELLED))

    def _claims_of(self, job_id: str) -> list[bytes]:
        """The processing keys of ``job_id``: the claims are read once per cancel (they
        are keyed by server, and there are about as many as running jobs)."""
        if self._claims is None:
            self._claims = {}
            for key, _ in self.tx.scan(keys.DB_PROCESSING, values=False):
                self._claims.setdefault(key[-keys.JOB_ID_BYTES :].decode(), []).append(key)
        return self._claims.get(job_id, [])

    def settle(self) -> CancelReport:
        """Settle the dependents of the jobs this cancel ended; the report."""
        settle_ends(self.store, self.tx, self.ends, self.now)
        return self.report


def cancel_ids(
    store: CancelFiler, tx: Tx, job_ids: Sequence[str], text: str, now: int
) -> CancelReport:
    cancel = Cancel(store, tx, text, now)
    for job_id in dict.fromkeys(job_ids):  # an id given twice counts once
        cancel.job(job_id, store._load(tx, job_id))
    return cancel.settle()


def cancel_matching(
    store: CancelFiler,
    tx: Tx,
    name: str | None,
    states: Collection[JobState],
    text: str,
    now: int,
    limit: int,
    after: str,
) -> tuple[CancelReport, str | None]:
    """Up to ``limit`` jobs of ``name`` in ``states``: the task's name index when a name
    is given, else the states' own indexes, walked from ``after``.

    While no job has dependencies (nothing to settle), queued jobs are cancelled from
    their encoded fields (``codec.Row``), written with one sorted multi-put per index:
    a bulk cancel of a large backlog pays for no record objects."""
    if name is not None:
        sources = [(keys.DB_BY_NAME, keys.by_name_prefix(name))]
    else:
        sources = [(db, b"") for state in states for db in store._state_sources(state)]
        sources = list(dict.fromkeys(sources))  # legacy: ready and scheduled share one
    cancel = Cancel(store, tx, text, now)
    plain = not tx.has_entries(keys.DB_DEPS)
    rows: list[Row] = []  # queued, cancelled from their fields
    records: list[JobRecord] = []  # the others, through ``Cancel.job``
    resume: str | None = None
    for position, key, value in _walk(tx, sources, after):
        job_key = key[-keys.JOB_ID_BYTES :]
        # The name index holds whole records (optimized layout); the other indexes,
        # and the legacy layout's name index, hold none.
        raw = value if name is not None and value else tx.get(keys.DB_JOBS, job_key)
        if raw is None:
            continue
        row = _row(raw) if plain else None
        found = row if row is not None else store._load(tx, job_key.decode())
        if found is None or found.state not in states or (name is not None and found.name != name):
            continue
        if row is not None and row.state in QUEUED_STATES:
            rows.append(row)
        else:
            rec = found if isinstance(found, JobRecord) else store._load(tx, found.id)
            if rec is None or (rec.state is JobState.PROCESSING and cancel.asked_before(rec.id)):
                continue  # a later batch would count it again
            records.append(rec)
        if len(rows) + len(records) >= limit:
            resume = position
            break
    for rec in records:  # after the walk: its cursors stay where they were
        cancel.job(rec.id, rec)
    if rows:
        _cancel_rows(store, tx, rows, cancel)
    return cancel.settle(), resume


def _row(raw: bytes) -> Row | None:
    try:
        return Row(raw)
    except CorruptRecord:
        return None  # ``Cancel.job`` reads it as the stand-in its store shows


def _cancel_rows(store: CancelFiler, tx: Tx, rows: list[Row], cancel: Cancel) -> None:
    """Cancel queued jobs (none of them with dependents: no job has any) from their
    fields, with one sorted multi-put per index."""
    entry = cancel_entry(cancel.text, 0, cancel.now)
    reason = cancel.text.encode("utf-8", "replace")
    jobs, names, ended = [], [], []
    for row in rows:
        store._unqueue_index(tx, row)
        raw = row.cancelled(entry)
        jobs.append((keys.job_key(row.id), raw))
        names.append((keys.by_name_key(row.name, row.id), store._index_value(raw)))
        ended.append((keys.done_key(cancel.now, row.id), reason))
        cancel.report.cancelled.append(row.id)
    for db, items in ((keys.DB_JOBS, jobs), (keys.DB_BY_NAME, names), (keys.DB_CANCELLED, ended)):
        items.sort()
        tx.put_many(db, items)


def _walk(
    tx: Tx, sources: list[tuple[bytes, bytes]], after: str
) -> Iterator[tuple[str, bytes, bytes]]:
    """(position, key, value) of each entry of ``sources`` ((db, key prefix) pairs,
    walked in that order) after the position ``after`` ("" from the start). A position
    is "source number:key in hex"."""
    first, start = 0, b""
    if after:
        source, _, hex_key = after.partition(":")
        first, start = int(source), bytes.fromhex(hex_key)
    for number in range(first, len(sources)):
        db, prefix = sources[number]
        begin = start if number == first and start else prefix
        for key, value in tx.scan(db, begin):
            if not key.startswith(prefix):
                break
            if number == first and key == start:
                continue  # the last entry the previous call visited
            yield f"{number}:{key.hex()}", key, value


def requests_of(tx: Tx, server_id: str) -> list[str]:
    """The jobs of ``server_id`` whose cancel was requested."""
    prefix = keys.processing_prefix(server_id)
    entries = tx.scan_prefix(keys.DB_CANCELS, prefix, values=False)
    return [keys.decode_processing_key(key)[1] for key, _ in entries]


def take_request(tx: Tx, processing_key: bytes) -> str | None:
    """The text of the cancel requested for a claim that is ending, taken out."""
    raw = tx.get(keys.DB_CANCELS, processing_key)
    if raw is None:
        return None
    tx.delete(keys.DB_CANCELS, processing_key)
    return raw.decode("utf-8", "replace")
