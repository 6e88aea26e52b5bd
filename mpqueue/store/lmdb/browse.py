"""Newest-first pages of jobs in LMDB (``Store.browse``): which index a page walks.

Job ids begin with their creation time, so an index keyed by id, walked backwards from
the cursor, yields jobs newest first: ``jobs`` (no filter), ``by_name`` under a task's
prefix, and ``dead`` and ``waiting``. The other states' indexes are in queue or finish
order, each key ending with the job id: a state with at most ``BROWSE_SCAN_MAX`` jobs
(the running ones, say) is read from its indexes whole and sorted by id. Any other
filter (a larger state, a queue) walks ``jobs`` and stops after ``BROWSE_SCAN_MAX``
entries with a cursor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ...errors import CorruptRecord
from ...records import JobRecord, JobState
from ..base import BROWSE_SCAN_MAX, Page
from ..codec import decode_listing
from . import keys
from .env import Tx

# (job id, a function that reads its record) per entry, newest first
Entries = Iterator[tuple[str, Callable[[], JobRecord | None]]]
_BY_ID = {JobState.DEAD: keys.DB_DEAD, JobState.WAITING: keys.DB_WAITING}
# The indexes that hold every job in a state, each key ending with the job's id.
_INDEXES = {
    JobState.READY: (keys.DB_READY, keys.DB_QUEUED, keys.DB_LANED, keys.DB_PAUSED),
    JobState.SCHEDULED: (keys.DB_SCHEDULED,),
    JobState.PROCESSING: (keys.DB_PROCESSING,),
    JobState.DONE: (keys.DB_DONE,),
    JobState.CANCELLED: (keys.DB_CANCELLED,),
    JobState.EXPIRED: (keys.DB_EXPIRED,),
}


def page(
    tx: Tx,
    state: JobState | None,
    name: str | None,
    queue: str | None,
    before: str | None,
    limit: int,
    legacy: bool = False,
) -> Page:
    def wanted(rec: JobRecord) -> bool:
        state_ok = state is None or rec.state is state
        return state_ok and (queue is None or rec.queue == queue)

    return _collect(_entries(tx, state, name, before, legacy), wanted, limit)


def _entries(
    tx: Tx, state: JobState | None, name: str | None, before: str | None, legacy: bool
) -> Entries:
    if name is not None:
        return _by_name(tx, name, before)
    if state in _BY_ID:
        return _ids_of(tx, _BY_ID[state], before)
    # (the legacy layout files its queued jobs elsewhere: it walks ``jobs``)
    if state in _INDEXES and not legacy and _few(tx, _INDEXES[state]):
        return _in_state(tx, _INDEXES[state], before)
    return _all(tx, before)


def _collect(entries: Entries, wanted: Callable[[JobRecord], bool], limit: int) -> Page:
    """Up to ``limit`` wanted jobs; one more found means a next page, the scan's budget
    spent means a cursor where it stopped."""
    jobs: list[JobRecord] = []
    last: str | None = None
    for read, (job_id, load) in enumerate(entries):
        if read >= BROWSE_SCAN_MAX:
            return Page(jobs, last)
        last = job_id
        rec = load()
        if rec is None or not wanted(rec):
            continue
        if len(jobs) == limit:
            return Page(jobs, jobs[-1].id)
        jobs.append(rec)
    return Page(jobs, None)


def _listed(job_id: str, name: str, raw: bytes) -> JobRecord:
    try:
        return decode_listing(raw)
    except CorruptRecord as exc:
        return JobRecord.corrupt(job_id, name, f"record cannot be decoded: {exc}")


def _record(tx: Tx, job_id: str) -> JobRecord | None:
    raw = tx.get(keys.DB_JOBS, keys.job_key(job_id))
    return None if raw is None else _listed(job_id, "?", raw)


def _stop(prefix: bytes, before: str | None) -> bytes:
    # 0xff sorts after every id character: from the prefix's newest entry
    return prefix + (b"\xff" if before is None else keys.job_key(before))


def _all(tx: Tx, before: str | None) -> Entries:
    stop = None if before is None else keys.job_key(before)
    for key, raw in tx.scan_back_below(keys.DB_JOBS, stop):
        job_id = keys.decode_job_key(key)
        yield job_id, lambda job_id=job_id, raw=raw: _listed(job_id, "?", raw)  # type: ignore[misc]


def _by_name(tx: Tx, name: str, before: str | None) -> Entries:
    prefix = keys.by_name_prefix(name)
    for key, raw in tx.scan_back_below(keys.DB_BY_NAME, _stop(prefix, before)):
        if not key.startswith(prefix):
            return
        job_id = keys.decode_by_name_key(key)[1]
        if raw:  # the optimized layout keeps the record in the index
            yield job_id, lambda job_id=job_id, raw=raw: _listed(job_id, name, raw)  # type: ignore[misc]
        else:  # the legacy layout: its index entries are empty
            yield job_id, lambda job_id=job_id: _record(tx, job_id)  # type: ignore[misc]


def _ids_of(tx: Tx, db: bytes, before: str | None) -> Entries:
    stop = None if before is None else keys.job_key(before)
    for key, _ in tx.scan_back_below(db, stop, values=False):
        job_id = keys.decode_job_key(key)
        yield job_id, lambda job_id=job_id: _record(tx, job_id)  # type: ignore[misc]


def _few(tx: Tx, dbs: tuple[bytes, ...]) -> bool:
    """Whether these indexes hold at most ``BROWSE_SCAN_MAX`` entries (their sizes are
    O(1) to read)."""
    return sum(tx.entries(db) for db in dbs) <= BROWSE_SCAN_MAX


def _in_state(tx: Tx, dbs: tuple[bytes, ...], before: str | None) -> Entries:
    """The jobs of a small state, newest first: its indexes read whole, ids sorted."""
    found = (
        key[-keys.JOB_ID_BYTES :].decode("ascii")
        for db in dbs
        for key, _ in tx.scan(db, values=False)
    )
    ids = sorted((i for i in found if before is None or i < before), reverse=True)
    for job_id in ids:
        yield job_id, lambda job_id=job_id: _record(tx, job_id)  # type: ignore[misc]
