"""``LegacyLmdbStore``: the queue as it was before the three optimizations.

Kept, faithfully, so the benchmark can measure the before/after on the same code:
- one ``pending`` set holds ready and future jobs alike, keyed by job id only;
- a poll scans every pending entry and reads each job to check its run-at time;
- a poll claims one job, whatever the limit;
- the name index holds ids only, so listing N jobs is N index reads + N record reads.
It passes the same behavioural tests as the optimized store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from ...concurrency import LimitState
from ...expiry import is_expired
from ...limits import stored_problem
from ...pausing import PauseChange
from ...queues import DEFAULT_QUEUE, Selection, depths_by_queue
from ...rates import earliest
from ...records import JobRecord, JobState, now_ms
from ..base import HEADS_READ_MAX, HandOff, Pacing
from . import keys, lanes, pauses
from .env import Tx
from .store import LAYOUT_LEGACY, LmdbStore


class LegacyLmdbStore(LmdbStore):
    mode = "legacy"
    layout = LAYOUT_LEGACY
    pacing = Pacing(polls_only=True, claims_per_poll=1, poll_interval_s=0.5)

    @property
    def hand_off(self) -> HandOff | None:
        return None  # the design before the optimizations has no hand-off

    def _migrate(self, tx: Tx) -> None:
        """Fold an optimized layout's ready and scheduled indexes into ``pending``."""
        if tx.get(keys.DB_META, keys.META_LAYOUT) == self.layout:
            return
        for db in (keys.DB_READY, keys.DB_QUEUED, keys.DB_LANED, keys.DB_PAUSED, keys.DB_SCHEDULED):
            for key, _ in list(tx.scan(db, values=False)):
                tx.delete(db, key)
                tx.put(keys.DB_PENDING, keys.pending_key(key[-keys.JOB_ID_BYTES :].decode()), b"")
        for db in (keys.DB_QUEUES, keys.DB_LANES):  # no queue index here: no counts
            for key, _ in list(tx.scan(db, values=False)):
                tx.delete(db, key)
        for key, _ in list(tx.scan(keys.DB_BY_NAME, values=False)):
            tx.put(keys.DB_BY_NAME, key, b"")
        tx.put(keys.DB_META, keys.META_LAYOUT, self.layout)

    # Pausing: the pauses database as in the optimized layout, but no held index: the
    # legacy poll reads every pending job anyway, and passes over a paused task's.
    def pause(self, name: str | None) -> PauseChange:
        if name is not None:
            keys.check_name_key(name)
        return PauseChange(name, True, self.env.write(lambda tx: pauses.mark(tx, name)))

    def resume(self, name: str | None) -> PauseChange:
        if name is not None:
            keys.check_name_key(name)
        return PauseChange(name, False, self.env.write(lambda tx: pauses.unmark(tx, name)))

    def _index_value(self, raw: bytes) -> bytes:
        return b""  # legacy: the name index holds ids only

    def _queue_entry(self, rec: keys.Queued) -> tuple[bytes, bytes] | None:
        if rec.state in (JobState.READY, JobState.SCHEDULED):
            return keys.DB_PENDING, keys.pending_key(rec.id)
        return None

    def _state_sources(self, state: JobState) -> list[bytes]:
        if state in (JobState.READY, JobState.SCHEDULED):
            return [keys.DB_PENDING]
        return super()._state_sources(state)

    def _new_entries(self, rec: JobRecord) -> tuple[bytes, bytes, bytes, bytes]:
        return (
            keys.job_key(rec.id),
            keys.by_name_key(rec.name, rec.id),
            keys.DB_PENDING,
            keys.pending_key(rec.id),
        )

    # No offers, none taken (for the methods it inherits).
    def _take_offer(self, tx: Tx, queue: str) -> tuple[str, int] | None:
        return None

    def _set_offer(
        self,
        tx: Tx,
        server_id: str,
        child_pids: Sequence[int],
        queues: Sequence[str] | None = None,
    ) -> None:
        return None

    def promote_due(self, now_ms: int) -> int:
        return 0  # nothing to promote: due-ness is checked job by job at every poll

    def _promote(self, tx: Tx, now_ms: int) -> int:
        return 0

    def claim(
        self, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> list[JobRecord]:
        return super().claim(server_id, min(limit, 1), now_ms, queues)

    def _claim(
        self, tx: Tx, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> list[JobRecord]:
        if pauses.takes_nothing(tx):
            return []
        # Queues: a job outside the selection is passed over; a job of an earlier queue
        # in it ranks first (weights: the queue drawn first for this poll does).
        order = None if queues is None else [name for name, _ in queues.plan(1, self.rng)]
        held = pauses.held_names(tx)
        # Limits: a job whose task or queue has no free slot is passed over (this poll
        # reads every job anyway; no lanes here).
        stored = lanes.stored_limits(tx) if lanes.in_use(tx) else {}
        best_limits: tuple[bytes, ...] = ()
        best: tuple[int, ...] | None = None
        best_id = ""
        unreadable = []
        out_of_bounds = []
        lapsed = []  # past their deadline: ended here, as this poll reads every job
        for key, _ in tx.scan(keys.DB_PENDING, values=False):
            job_id = keys.decode_job_key(key)
            rec = self._load(tx, job_id)  # the per-job read the legacy poll pays for
            if rec is not None and rec.state not in (JobState.READY, JobState.SCHEDULED):
                unreadable.append(rec)  # a corrupt record's stand-in
                continue
            problem = None if rec is None else stored_problem(rec)
            if rec is not None and problem is not None:
                out_of_bounds.append((job_id, rec, problem))  # never compared below
                continue
            if rec is None or (held and keys.pause_key(rec.name) in held):
                continue  # held: its deadline is checked once it can be claimed again
            if rec.expires_at_ms is not None and is_expired(rec, now_ms):
                lapsed.append(rec)
                continue
            if rec.run_at_ms > now_ms or (order is not None and rec.queue not in order):
                continue
            limits = _limits_of(rec, stored) if stored else ()
            if any(stored[key].room(now_ms) <= 0 for key in limits):
                continue
            rank: tuple[int, ...] = (-rec.priority, rec.seq)
            if order is not None:
                rank = (order.index(rec.queue), *rank)
            if best is None or rank < best:
                best, best_id, best_limits = rank, job_id, limits
        for rec in unreadable:
            tx.delete(keys.DB_PENDING, keys.pending_key(rec.id))
            self._park_corrupt(tx, rec.id, str(rec.errors[-1].message if rec.errors else ""))
        for job_id, rec, problem in out_of_bounds:
            tx.delete(keys.DB_PENDING, keys.pending_key(job_id))
            self._bury_bad(tx, job_id, rec, problem)
        for rec in lapsed:
            tx.delete(keys.DB_PENDING, keys.pending_key(rec.id))
            self._expire(tx, rec, now_ms)
        if best is None and lapsed:  # their ends may have released jobs: look again
            return self._claim(tx, server_id, limit, now_ms, queues)
        if best is None:
            return []
        tx.delete(keys.DB_PENDING, keys.pending_key(best_id))
        rec = self._load(tx, best_id)
        if rec is not None and rec.state is JobState.SCHEDULED:
            self._save(tx, rec.evolve(state=JobState.READY))
        taken = self._take(tx, best_id, server_id, now_ms)
        if taken is not None and best_limits:
            lanes.take_slots(tx, [(keys.processing_key(server_id, best_id), best_limits)], now_ms)
        return [] if taken is None else [taken]

    def next_run_at_ms(self, now_ms: int | None = None) -> int | None:
        def body(tx: Tx) -> int | None:
            times = [
                rec.run_at_ms
                for key, _ in tx.scan(keys.DB_PENDING, values=False)
                if (rec := self._load(tx, keys.decode_job_key(key))) is not None
                and rec.state is JobState.SCHEDULED  # ready jobs are not scheduled
                and stored_problem(rec) is None
            ]  # the next poll buries it
            due = min(times) if times else None
            if now_ms is None or not lanes.in_use(tx):
                return due
            return earliest(due, lanes.reopens_at(tx, now_ms))

        return self.env.read(body)

    def _counts(self, tx: Tx) -> dict[str, int]:
        """Ready and scheduled by reading every pending job (both share ``pending``)."""
        counts = super()._counts(tx)
        now = now_ms()
        counts["ready"] = counts["scheduled"] = 0
        for key, _ in tx.scan(keys.DB_PENDING, values=False):
            rec = self._load(tx, keys.decode_job_key(key))
            if rec is not None:
                counts[_effective(rec, now).state.value] += 1
        return counts

    def _oldest_ready_ms(self, tx: Tx) -> int | None:
        """Every pending job is read anyway here (as ``_counts`` does); the rule is the
        optimized layout's: the first of each priority, FIFO by ``seq``."""
        now = now_ms()
        heads: dict[int, JobRecord] = {}
        held = pauses.paused(tx)
        for key, _ in tx.scan(keys.DB_PENDING, values=False):
            rec = self._load(tx, keys.decode_job_key(key))
            if rec is None or rec.is_corrupt or _effective(rec, now).state is not JobState.READY:
                continue
            if rec.name in held.tasks:  # held out of claims, as the optimized layout does
                continue
            head = heads.get(rec.priority)
            if head is None or rec.seq < head.seq:
                heads[rec.priority] = rec
        top = sorted(heads, reverse=True)[:HEADS_READ_MAX]
        return min((heads[p].run_at_ms for p in top), default=None)

    def _queue_depths(self, tx: Tx, counts: Mapping[str, int]) -> dict[str, dict[str, int]]:
        """By reading every pending and every running job (as ``_counts`` does)."""
        now = now_ms()
        ready: dict[str, int] = {}
        running: dict[str, int] = {}
        for key, _ in tx.scan(keys.DB_PENDING, values=False):
            rec = self._load(tx, keys.decode_job_key(key))
            if rec is not None and _effective(rec, now).state is JobState.READY:
                ready[rec.queue] = ready.get(rec.queue, 0) + 1
        for key, _ in tx.scan(keys.DB_PROCESSING, values=False):
            rec = self._load(tx, keys.decode_processing_key(key)[1])
            queue = DEFAULT_QUEUE if rec is None else rec.queue
            running[queue] = running.get(queue, 0) + 1
        return depths_by_queue(ready, running)

    def get(self, job_id: str) -> JobRecord | None:
        rec = super().get(job_id)
        return None if rec is None else _effective(rec, now_ms())

    def get_many(self, job_ids: Sequence[str]) -> list[JobRecord | None]:
        now = now_ms()
        return [None if r is None else _effective(r, now) for r in super().get_many(job_ids)]

    def _index_record(self, tx: Tx, key: bytes, raw: bytes) -> JobRecord:
        # The index gives the id, the record is a separate read (the legacy 1 + N).
        raw = tx.get(keys.DB_JOBS, keys.job_key(keys.decode_by_name_key(key)[1])) or b""
        # Legacy never promotes, so a due job still says "scheduled" in its record;
        # report it as ready, as the optimized store would after its promotion.
        return _effective(super()._index_record(tx, key, raw), now_ms())


def _limits_of(rec: JobRecord, stored: Mapping[bytes, LimitState]) -> tuple[bytes, ...]:
    """The limits a job counts against: its task's and its queue's, those that exist."""
    wanted = (keys.limit_key("task", rec.name), keys.limit_key("queue", rec.queue))
    return tuple(key for key in wanted if key in stored)


def _effective(rec: JobRecord, now: int) -> JobRecord:
    if rec.state is JobState.SCHEDULED and rec.run_at_ms <= now:
        return replace(rec, state=JobState.READY)
    return rec
