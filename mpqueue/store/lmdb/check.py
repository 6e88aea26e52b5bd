"""``LmdbStore.check``: every index against the jobs, in one read transaction.

The rules, for both layouts (the store says where its layout files a job):
- every record, claim and offer decodes (else: corrupt);
- each job is in exactly one home: its queue index (ready/scheduled, or legacy
  pending) with a key made of its own fields, a claim, the dead list, or the done,
  cancelled or expired list under its finish time; and once in ``by_name``, under
  its own name, holding the copy of the record that the layout keeps there;
- no index entry names a job that does not exist;
- a claim is held by a registered server, or by one that recovery will find dead;
  offers belong to registered servers; queued jobs have distinct FIFO numbers;
- workflows: a waiting job's count equals its open dependency edges, every edge joins
  two jobs and is one of the dependent's ``depends_on``, a key entry names a job of
  that task holding that key;
- periodic schedules: every row decodes, and ``schedule_due`` holds exactly the
  active rows under their next due time (``schedules.check``).
Only a digest of each record is kept while the indexes are read, not the records.
"""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import CorruptRecord
from ...records import FINISHED_STATES, JobRecord, JobState
from ..base import CheckReport, HolderGone
from ..codec import decode_record
from . import keys, lanes, pauses
from . import queues as queue_index
from . import schedules as lmdb_schedules
from .claims import decode_claim
from .env import Tx

QUEUE_DBS = (
    keys.DB_READY,
    keys.DB_QUEUED,
    keys.DB_LANED,
    keys.DB_SCHEDULED,
    keys.DB_PENDING,
    keys.DB_PAUSED,
)


@dataclass(frozen=True)
class _Job:
    """What the check remembers of one record."""

    name: str
    state: JobState
    queue_entry: tuple[bytes, bytes] | None
    finished_at_ms: int | None
    seq: int
    index_digest: bytes  # of the value by_name should hold for it
    depends_on: frozenset[str] = frozenset()
    key: str | None = None
    queue: str = "default"


class Layout:
    """Where a store's layout files a job (``LmdbStore`` and ``LegacyLmdbStore``)."""

    def __init__(
        self,
        queue_entry: Callable[[JobRecord], tuple[bytes, bytes] | None],
        index_value: Callable[[bytes], bytes],
    ):
        self.queue_entry, self.index_value = queue_entry, index_value


def _filed_as(tx: Tx, job: _Job, db: bytes) -> tuple[bytes, bytes] | None:
    """The queue entry ``job`` should have, met in ``db``: a held entry is right for a
    ready job of a paused task (``pauses.held_entry``; held although its task is not
    paused: reported by the caller), every other one is its ``queue_entry``."""
    entry = job.queue_entry
    if entry is not None:
        entry = queue_index.laned(tx, job.name, job.queue, entry)  # a limited job's lane
    if entry is None or db != keys.DB_PAUSED:
        return entry
    return pauses.held_entry(tx, job.name, entry, job.queue)


def _digest(value: bytes) -> bytes:
    return hashlib.blake2b(value, digest_size=16).digest()


def check_store(tx: Tx, layout: Layout, holder_gone: HolderGone) -> CheckReport:
    """The check of one read transaction (see the module docstring)."""
    report = CheckReport()
    jobs, unreadable = _read_jobs(tx, layout, report)
    homes: Counter[str] = Counter()
    registered = {
        key.decode("utf-8", "replace") for key, _ in tx.scan(keys.DB_WORKERS, values=False)
    }
    checker = _Checker(report, jobs, unreadable, homes)
    checker.queues(tx)
    checker.claims(tx, lambda w: w in registered or holder_gone(w))
    checker.cancel_requests(tx)
    checker.progress(tx)
    checker.finished(tx)
    checker.by_name(tx)
    checker.offers(tx, lambda w: w in registered or holder_gone(w))
    checker.workflows(tx)
    checker.queue_counts(tx, layout)
    lmdb_schedules.check(tx, report)
    checker.limit_counts(tx)
    for job_id, job in jobs.items():
        if homes[job_id] != 1:
            report.inconsistent.append(
                f"job {job_id} ({job.state.value}) is in {homes[job_id]} state indexes, not 1"
            )
    seqs = Counter(j.seq for j in jobs.values() if j.state in (JobState.READY, JobState.SCHEDULED))
    report.inconsistent += [
        f"{n} queued jobs share the FIFO number {seq}" for seq, n in seqs.items() if n > 1
    ]
    return report


def _read_jobs(tx: Tx, layout: Layout, report: CheckReport) -> tuple[dict[str, _Job], set[str]]:
    jobs: dict[str, _Job] = {}
    unreadable: set[str] = set()
    for key, raw in tx.scan(keys.DB_JOBS):
        report.jobs += 1
        job_id = key.decode("ascii", "replace")
        try:
            rec = decode_record(raw)
        except CorruptRecord as exc:
            unreadable.add(job_id)
            report.corrupt.append(f"job {job_id}: the record cannot be decoded ({exc})")
            continue
        jobs[job_id] = _Job(
            rec.name,
            rec.state,
            layout.queue_entry(rec),
            rec.finished_at_ms,
            rec.seq,
            _digest(layout.index_value(raw)),
            frozenset(rec.depends_on),
            rec.key,
            rec.queue,
        )
    return jobs, unreadable


class _Checker:
    def __init__(
        self, report: CheckReport, jobs: dict[str, _Job], unreadable: set[str], homes: Counter[str]
    ):
        self.report, self.jobs, self.unreadable, self.homes = report, jobs, unreadable, homes

    def _job(self, db: bytes, key: bytes, job_id: str) -> _Job | None:
        """The job an index entry names; None (and a problem if it is missing)."""
        job = self.jobs.get(job_id)
        if job is None and job_id not in self.unreadable:
            self.report.inconsistent.append(
                f"{db.decode()} entry {key!r} names job {job_id}, which does not exist"
            )
        return job

    def queues(self, tx: Tx) -> None:
        for db in QUEUE_DBS:
            for key, _ in tx.scan(db, values=False):
                job_id = key[-keys.JOB_ID_BYTES :].decode("ascii", "replace")
                job = self._job(db, key, job_id)
                if job is None:
                    continue
                if _filed_as(tx, job, db) != (db, key):
                    self.report.inconsistent.append(
                        f"job {job_id} is {job.state.value} but has the {db.decode()} entry "
                        f"{key!r}, not its own"
                    )
                else:
                    self.homes[job_id] += 1

    def limit_counts(self, tx: Tx) -> None:
        """Each lane's count is its number of entries; each limit's running count is the
        number of claims that count against it (see lanes.py)."""
        entries: Counter[bytes] = Counter(
            keys.lane_of_laned(key) for key, _ in tx.scan(keys.DB_LANED, values=False)
        )
        stored = {key: keys.decode_count(raw) for key, raw in tx.scan(keys.DB_LANES)}
        for lane in sorted(set(entries) | set(stored)):
            if entries[lane] != stored.get(lane, 0):
                self.report.inconsistent.append(
                    f"lane {lane!r} counts {stored.get(lane, 0)} jobs, but has {entries[lane]}"
                )
        counted: Counter[bytes] = Counter()
        for pkey, raw in tx.scan(keys.DB_COUNTED):
            if tx.get(keys.DB_PROCESSING, pkey) is None:
                self.report.inconsistent.append(f"a slot is held by {pkey!r}, which is no claim")
            counted.update(raw.split(keys.SEP))
        for key, state in lanes.stored_limits(tx).items():
            running = state.running
            if running != counted[key]:
                kind, name = keys.decode_limit_key(key)
                self.report.inconsistent.append(
                    f"the {kind} limit of {name} counts {running} running, but {counted[key]} are"
                )

    def queue_counts(self, tx: Tx, layout: Layout) -> None:
        """Each named queue's count (``queues``) is its number of ready jobs, in a layout
        that files them by queue (the legacy one keeps no counts)."""
        ready: Counter[str] = Counter(
            job.queue
            for job in self.jobs.values()
            if job.state is JobState.READY
            and job.queue != "default"
            and job.queue_entry is not None
            and job.queue_entry[0] == keys.DB_QUEUED
        )
        stored = queue_index.counts(tx)
        for queue in sorted(set(ready) | set(stored)):
            if ready[queue] != stored.get(queue, 0):
                self.report.inconsistent.append(
                    f"queue {queue} counts {stored.get(queue, 0)} ready jobs, "
                    f"but {ready[queue]} are"
                )

    def claims(self, tx: Tx, accounted_for: HolderGone) -> None:
        for key, raw in tx.scan(keys.DB_PROCESSING):
            try:
                claim = decode_claim(key, raw)
            except (CorruptRecord, ValueError) as exc:
                self.report.corrupt.append(f"the claim {key!r} cannot be decoded ({exc})")
                continue
            job = self._job(keys.DB_PROCESSING, key, claim.job_id)
            if job is None:
                continue
            self.homes[claim.job_id] += 1
            if job.state is not JobState.PROCESSING:
                self.report.inconsistent.append(
                    f"job {claim.job_id} is {job.state.value} but claimed by {claim.server_id}"
                )
            if not accounted_for(claim.server_id):
                self.report.inconsistent.append(
                    f"job {claim.job_id} is claimed by {claim.server_id}, which is neither "
                    f"registered nor dead: nobody will run or put back that job"
                )

    def cancel_requests(self, tx: Tx) -> None:
        """Every cancel request belongs to a claim (the finish of a claim takes it)."""
        for key, _ in tx.scan(keys.DB_CANCELS, values=False):
            if tx.get(keys.DB_PROCESSING, key) is None:
                self.report.inconsistent.append(f"the cancel request {key!r} belongs to no claim")

    def progress(self, tx: Tx) -> None:
        """Every progress report belongs to a job (deleting a job takes its report)."""
        for key, _ in tx.scan(keys.DB_PROGRESS, values=False):
            job_id = key.decode("ascii", "replace")
            if job_id not in self.jobs and job_id not in self.unreadable:
                self.report.inconsistent.append(
                    f"a progress report names job {job_id}, which does not exist"
                )

    def finished(self, tx: Tx) -> None:
        for key, _ in tx.scan(keys.DB_DEAD, values=False):
            job_id = key.decode("ascii", "replace")
            job = self._job(keys.DB_DEAD, key, job_id)
            if job is not None:
                self._home(job_id, job.state is JobState.DEAD, "dead")
        for db, state in (
            (keys.DB_DONE, JobState.DONE),
            (keys.DB_CANCELLED, JobState.CANCELLED),
            (keys.DB_EXPIRED, JobState.EXPIRED),
        ):
            for key, _ in tx.scan(db, values=False):
                try:
                    finished_at_ms, job_id = keys.decode_done_key(key)
                except (ValueError, struct.error) as exc:  # UnicodeDecodeError: ValueError
                    self.report.corrupt.append(
                        f"the {state.value} entry {key!r} cannot be decoded ({exc})"
                    )
                    continue
                job = self._job(db, key, job_id)
                if job is not None:
                    self._home(
                        job_id,
                        job.state is state and job.finished_at_ms == finished_at_ms,
                        state.value,
                    )

    def _home(self, job_id: str, matches: bool, index: str) -> None:
        if matches:
            self.homes[job_id] += 1
        else:
            state = self.jobs[job_id].state.value
            self.report.inconsistent.append(
                f"job {job_id} is {state} but has a {index} entry that does not match it"
            )

    def by_name(self, tx: Tx) -> None:
        named: Counter[str] = Counter()
        for key, value in tx.scan(keys.DB_BY_NAME):
            try:
                name, job_id = keys.decode_by_name_key(key)
            except ValueError as exc:
                self.report.corrupt.append(f"the by_name entry {key!r} cannot be decoded ({exc})")
                continue
            job = self._job(keys.DB_BY_NAME, key, job_id)
            named[job_id] += 1
            if job is None:
                continue
            if job.name != name or job.index_digest != _digest(value):
                self.report.inconsistent.append(
                    f"the by_name entry of job {job_id} does not match its record"
                )
        for job_id in self.jobs:
            if named[job_id] != 1:
                self.report.inconsistent.append(
                    f"job {job_id} has {named[job_id]} by_name entries, not 1"
                )

    def offers(self, tx: Tx, accounted_for: HolderGone) -> None:
        for key, value in tx.scan(keys.DB_OFFERS):
            server_id = key.decode("utf-8", "replace")
            if keys.decode_offer(value) is None:
                self.report.corrupt.append(f"the offer of {server_id} cannot be decoded")
            elif not accounted_for(server_id):
                self.report.inconsistent.append(
                    f"{server_id} offers children for hand-off but is neither registered nor dead"
                )

    def workflows(self, tx: Tx) -> None:
        # An edge counts while it is open and its dependency has not ended.
        open_edges: Counter[str] = Counter()
        for key, value in tx.scan(keys.DB_DEPS):
            dependency, dependent = keys.decode_edge_key(key)
            job = self._job(keys.DB_DEPS, key, dependent)
            if job is not None and dependency not in job.depends_on:
                self.report.inconsistent.append(
                    f"an edge says job {dependent} depends on {dependency}; its record does not"
                )
            ended = self.jobs.get(dependency)
            if value == keys.EDGE_OPEN and (ended is None or ended.state not in FINISHED_STATES):
                open_edges[dependent] += 1
        for key, value in tx.scan(keys.DB_WAITING):
            job_id = key.decode("ascii", "replace")
            job = self._job(keys.DB_WAITING, key, job_id)
            if job is None:
                continue
            self._home(job_id, job.state is JobState.WAITING, "waiting")
            try:
                count = keys.decode_waiting(value)[0]
            except ValueError as exc:
                self.report.corrupt.append(f"the waiting count of job {job_id}: {exc}")
                continue
            if count != open_edges[job_id] or count == 0:
                self.report.inconsistent.append(
                    f"job {job_id} waits for {count} jobs but has {open_edges[job_id]} open edges"
                )
        for key, value in tx.scan(keys.DB_UNIQUE):
            job_id = value.decode("ascii", "replace")
            job = self._job(keys.DB_UNIQUE, key, job_id)
            if job is not None and keys.unique_key(job.name, job.key or "") != key:
                self.report.inconsistent.append(
                    f"the key entry {key!r} names job {job_id}, which has another name or key"
                )
