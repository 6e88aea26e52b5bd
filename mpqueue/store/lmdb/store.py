"""``LmdbStore``: the embedded, durable job store (optimized layout).

Ready jobs sit in priority-then-FIFO order, scheduled jobs in run-at order, so a poll
reads only what it hands out, and ``by_name`` holds whole records so listing is one
cursor pass. See ``keys.py`` for the layout.
"""

from __future__ import annotations

import builtins
import heapq
import itertools
import random
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from ...cancellation import CancelReport, requested
from ...concurrency import TASK, Limit, check_kind
from ...dependencies import check_add_order
from ...errors import ConfigError, CorruptRecord, JobNotFound
from ...expiry import expired, is_expired
from ...history import Point
from ...identity import DEFAULT_LEASE_S, pid_exists, server_dead
from ...limits import check_key_part, key_held, stored_problem
from ...location import DEFAULT_MAP_SIZE
from ...outcomes import Destination, apply_outcome
from ...pausing import PauseChange, Paused
from ...queues import (
    DEFAULT_QUEUE,
    Selection,
    check_queue_name,
    check_queues,
    claim_selected,
    depths_by_queue,
)
from ...rates import Rate, earliest
from ...records import (
    Claim,
    Ending,
    ErrorInfo,
    JobRecord,
    JobState,
    Outcome,
    Progress,
    is_job_id,
    now_ms,
)
from ...schedules import Live, ScheduleRow, ScheduleSpec
from ..base import (
    HEADS_READ_MAX,
    CheckReport,
    Fired,
    FirePlan,
    Gauges,
    HandOff,
    HolderGone,
    OpCounter,
    Page,
    Requeued,
    Store,
    check_browse,
    check_run_at,
    offered_children,
    redrive_state,
)
from ..codec import (
    RECORD_V1,
    RECORD_V2,
    decode_ending,
    decode_listing,
    decode_progress,
    decode_record,
    decode_server_info,
    encode_progress,
    encode_record,
    encode_server_info,
)
from . import browse as pages
from . import cancels, keys, lanes, limit_changes, pauses
from . import history as depth_history
from . import queues as queue_index
from . import schedules as lmdb_schedules
from .check import Layout, check_store
from .claims import decode_claim, encode_claim
from .env import EnvHandle, Tx
from .graph import (
    Linker,
    close_edges,
    dependents,
    file_cancelled_entry,
    file_expired_entry,
    key_holder,
    settle_end,
    settle_ends,
    unlink,
)
from .wakeup import HandOffInbox, WakeListener, WakeSender

LAYOUT_OPTIMIZED = b"optimized"
LAYOUT_LEGACY = b"legacy"
_CLAIM_CACHE_MAX = 100_000


_seq_lock = threading.Lock()
_last_seq = 0


def next_seqs(count: int) -> int:
    """Reserve ``count`` FIFO sequence numbers; returns the first.

    Microseconds of wall time, kept strictly increasing within the process. A shared
    counter in the store would order jobs just as well, but costs a read and a write of
    one more B-tree in every enqueue transaction (measured: the one-by-one enqueue rate
    is bound by how many pages a commit writes).
    """
    global _last_seq
    with _seq_lock:
        first = max(_last_seq + 1, time.time_ns() // 1000)
        _last_seq = first + count - 1
        return first


class LmdbStore(Store, HandOff):
    """Job store in one LMDB environment directory. One instance per process and
    thread; instances in one process share the environment handle. It has hand-off:
    offers, hand-off claims and the children's wake-up sockets."""

    mode = "optimized"
    layout = LAYOUT_OPTIMIZED

    def __init__(self, path: str, *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True):
        self.path = path
        self.counter = OpCounter()
        self.rng = random.Random()
        self._claimed: dict[str, tuple[bytes, JobRecord]] = {}
        self.env = EnvHandle(path, map_size, sync, self.counter)
        try:
            if self.env.read_only:
                self.env.read(self._check_layout)
            else:
                self.env.write(self._adopt_layout)
        except BaseException:
            self.env.close()  # refused (another mode's server): release the handle
            raise
        self.waker = WakeSender(path)

    # ---- layout -------------------------------------------------------------------
    def _adopt_layout(self, tx: Tx) -> None:
        """Migrate the store into this mode's layout, unless a live server of the other
        mode serves it: migrated under it, that server would find no jobs and idle."""
        layout = tx.get(keys.DB_META, keys.META_LAYOUT)
        if layout is not None and layout != self.layout:
            self._refuse_if_served(tx, layout.decode("ascii", "replace"))
        self._migrate(tx)

    def _refuse_if_served(self, tx: Tx, other_mode: str) -> None:

        now = now_ms()
        for key, raw in tx.scan(keys.DB_WORKERS):
            server_id = keys.decode_worker_key(key)
            # an unreadable entry has no heartbeat: not a server shown to be alive
            info = decode_server_info(raw)
            info["heartbeat_age_ms"] = now - _beat_ms_of(info)
            if not server_dead(server_id, info, now, _lease_ms_of(info) / 1000):
                raise ConfigError(
                    f"store {self.path!r} is served in {other_mode} mode by a running "
                    f"server ({server_id}); opening it in {self.mode} mode would migrate "
                    f"it under that server: stop it first, or open it in {other_mode} mode"
                )

    def _migrate(self, tx: Tx) -> None:
        """Bring a store written in the other mode's layout, or in the pickle-era record
        encoding, into this one's."""
        if tx.get(keys.DB_META, keys.META_CODEC) != RECORD_V2:
            self._migrate_codec(tx)
        layout = tx.get(keys.DB_META, keys.META_LAYOUT)
        if layout == self.layout:
            return
        if layout == LAYOUT_LEGACY or tx.first_key(keys.DB_PENDING) is not None:
            for key, _ in list(tx.scan(keys.DB_PENDING, values=False)):
                tx.delete(keys.DB_PENDING, key)
                rec = self._load(tx, keys.decode_job_key(key))
                if rec is not None:
                    self._enqueue_index(tx, rec)
            for rec in self._all_records(tx):
                tx.put(keys.DB_BY_NAME, keys.by_name_key(rec.name, rec.id), encode_record(rec))
        tx.put(keys.DB_META, keys.META_LAYOUT, self.layout)

    def _migrate_codec(self, tx: Tx) -> None:
        """Rewrite version 1 records (pickles, read without globals) as version 2."""
        old = [raw for _, raw in tx.scan(keys.DB_JOBS) if raw[:1] == RECORD_V1]
        for raw in old:
            try:
                self._save(tx, decode_record(raw))
            except CorruptRecord:
                continue  # left as it is: readers show it as a corrupt stand-in
        tx.put(keys.DB_META, keys.META_CODEC, RECORD_V2)

    def _check_layout(self, tx: Tx) -> None:
        """A store opened read-only cannot be migrated: it must be in this mode's layout."""
        layout = tx.get(keys.DB_META, keys.META_LAYOUT)
        if layout != self.layout:
            found = "no" if layout is None else f"the {layout.decode(errors='replace')}"
            raise ConfigError(
                f"store {self.path!r} is read-only for this user and has "
                f"{found} layout, not {self.layout.decode()}; open it with "
                f"--mode matching its layout, or once with write access"
            )

    def _all_records(self, tx: Tx) -> list[JobRecord]:
        out = []
        for _key, raw in tx.scan(keys.DB_JOBS):
            try:
                out.append(decode_record(raw))
            except CorruptRecord:
                continue
        return out

    # ---- record helpers -------------------------------------------------------------
    def _load(self, tx: Tx, job_id: str) -> JobRecord | None:
        raw = tx.get(keys.DB_JOBS, keys.job_key(job_id))
        if raw is None:
            return None
        try:
            return decode_record(raw)
        except CorruptRecord as exc:
            return JobRecord.corrupt(job_id, "?", f"record cannot be decoded: {exc}")

    def _save(self, tx: Tx, rec: JobRecord) -> bytes:
        raw = encode_record(rec)
        tx.put(keys.DB_JOBS, keys.job_key(rec.id), raw)
        tx.put(keys.DB_BY_NAME, keys.by_name_key(rec.name, rec.id), self._index_value(raw))
        return raw

    def _load_claimed(self, tx: Tx, job_id: str) -> JobRecord | None:
        """``_load`` for a job this store object claimed: when the stored bytes are still
        the ones it wrote, reuse the record it already has instead of decoding again."""
        cached = self._claimed.pop(job_id, None)
        if cached is not None:
            raw = tx.get(keys.DB_JOBS, keys.job_key(job_id))
            if raw == cached[0]:
                return cached[1]  # checked when this object claimed it
        rec = self._load(tx, job_id)
        problem = None if rec is None or rec.is_corrupt else stored_problem(rec)
        if rec is not None and problem is not None:
            self._bury_bad(tx, job_id, rec, problem)
            return None
        return rec

    def _index_value(self, raw: bytes) -> bytes:
        return raw  # optimized: the index holds the whole record (listing needs no lookups)

    def _queue_entry(self, rec: keys.Queued) -> tuple[bytes, bytes] | None:
        """The queue index (db, key) a ready or scheduled job is filed under."""
        if rec.state is JobState.READY:
            return queue_index.entry(rec.queue, keys.ready_key(rec.priority, rec.seq, rec.id))
        if rec.state is JobState.SCHEDULED:
            return keys.DB_SCHEDULED, keys.scheduled_key(
                rec.run_at_ms, rec.priority, rec.seq, rec.id
            )
        return None

    def _new_entries(self, rec: JobRecord) -> tuple[bytes, bytes, bytes, bytes]:
        """(jobs key, by_name key, queue db, queue key) of a new ready or scheduled job."""
        run_at = rec.run_at_ms if rec.state is JobState.SCHEDULED else None
        entries = keys.enqueue_keys(rec.name, rec.id, rec.priority, rec.seq, run_at)
        if rec.queue == DEFAULT_QUEUE or run_at is not None:
            return entries
        return (*entries[:2], *queue_index.entry(rec.queue, entries[3]))

    def _enqueue_index(self, tx: Tx, rec: JobRecord) -> None:
        entry = self._queue_entry(rec)
        if entry is None:
            return
        entry = queue_index.laned(tx, rec.name, rec.queue, entry)
        db, key = pauses.held_entry(tx, rec.name, entry, rec.queue)
        if entry[0] in queue_index.READY_DBS:
            queue_index.file(tx, db, key, rec.queue)
        else:
            tx.put(db, key, b"")

    def _unqueue_index(self, tx: Tx, rec: keys.Queued) -> None:
        entry = self._queue_entry(rec)
        if entry is None:
            return
        if entry[0] in queue_index.READY_DBS:
            ready = keys.ready_key(rec.priority, rec.seq, rec.id)
            queue_index.unfile(tx, rec.name, rec.queue, ready)
        else:
            tx.delete(entry[0], entry[1])

    # ---- adding -------------------------------------------------------------------
    def add(self, records: Sequence[JobRecord]) -> None:
        for name in {rec.name for rec in records}:
            keys.check_name_key(name)
        check_queues(records)
        if any(rec.depends_on or rec.key is not None for rec in records):
            self._add_linked(records)
        elif len(records) == 1:
            rec = records[0]
            child_pid, added = self.env.write(lambda tx: self._add_one(tx, rec))
            if child_pid:
                rec.__dict__.update(added.__dict__)  # handed off: the caller sees the claim
                self.waker.hint(child_pid, rec.id)
                return
        elif records:
            self.env.write(lambda tx: self._add(tx, records))
        else:
            return
        self.waker.notify()

    def _add_one(self, tx: Tx, rec: JobRecord) -> tuple[int, JobRecord]:
        """``_add`` for one job (``task.delay``): three plain puts. The one-by-one rate
        is bound by the commit, and every line run between two fsyncs runs on caches
        the fsync wait left cold (measured: ~3x its warm time), so this path builds no
        lists.

        A ready job goes straight to an idle child that its server offers (see
        ``finish_and_claim``): claimed for that server and child here, so its start waits
        neither for a second durable commit (the server's claim) nor for the server.
        Returns (that child's pid or 0, the record as written)."""
        rec.seq = next_seqs(1)
        lapsed = rec.expires_at_ms is not None and is_expired(rec, now_ms())  # claims end it
        # A job of a limited task or queue is never handed off: only a claim counts it.
        laned = self._laned_entry(tx, rec) if lanes.in_use(tx) else None
        if (
            rec.state is JobState.READY
            and not lapsed
            and laned is None
            and pauses.hands_off(tx, rec.name)
        ):
            offer = self._take_offer(tx, rec.queue)
            if offer is not None:
                self.waker.get_ready(offer[1])
                return offer[1], self._hand_off(tx, rec, *offer)
        raw = encode_record(rec)
        job_key, name_key, queue_db, queue_key = self._new_entries(rec)
        claimable = queue_db in queue_index.READY_DBS  # ready, in this layout
        if laned is not None:
            queue_db, queue_key = laned
        queue_db, queue_key = pauses.held_entry(tx, rec.name, (queue_db, queue_key), rec.queue)
        tx.put(keys.DB_JOBS, job_key, raw)
        tx.put(keys.DB_BY_NAME, name_key, self._index_value(raw))
        if claimable:
            queue_index.file(tx, queue_db, queue_key, rec.queue)
        else:
            tx.put(queue_db, queue_key, b"")
        return 0, rec

    def _laned_entry(self, tx: Tx, rec: JobRecord) -> tuple[bytes, bytes] | None:
        """The lane entry of a new ready job of a limited task or queue; None else."""
        entry = self._new_entries(rec)[2:]
        found = queue_index.laned(tx, rec.name, rec.queue, entry)
        return found if found[0] == keys.DB_LANED else None

    def _take_offer(self, tx: Tx, queue: str) -> tuple[str, int] | None:
        """The first offered idle child that is alive, of a server whose heartbeat is
        fresh and that serves ``queue``, as (server, child pid), taken out of the offer;
        None if no server offers one, or if ready jobs of its queues wait (a server that
        offered just before they came claims them next: a new job must not start ahead
        of them).

        An offer of a dead or frozen server (SIGKILL, SIGSTOP), or one no server wrote
        (malformed bytes), is withdrawn here, so the job goes to the ready queue for a
        live server instead: never a poison pill. The offer carries its server's last
        heartbeat and lease (see ``register_worker``), so the check reads nothing more;
        it costs one kill(pid, 0) per delay()."""
        withdrawn = []
        try:
            for key, value in tx.scan(keys.DB_OFFERS):
                server_id, offer = _server_of(key), keys.decode_offer(value)
                if offer is not None and offer.queues is not None and queue not in offer.queues:
                    continue  # not a server for this job: its offer stays
                if queue_index.any_ready(tx, None if offer is None else offer.queues):
                    return None
                fresh = offer is not None and now_ms() - offer[0] <= offer[1]
                pids = offer[2] if offer is not None and fresh else []
                alive = next((i for i, pid in enumerate(pids) if pid_exists(pid)), None)
                if server_id is None or offer is None or alive is None:
                    withdrawn.append(key)
                    continue
                rest = pids[alive + 1 :]  # the dead ones before it go too
                if rest:
                    tx.put(keys.DB_OFFERS, key, keys.encode_offer(*offer[:2], rest, offer.queues))
                else:
                    tx.delete(keys.DB_OFFERS, key)
                return server_id, pids[alive]
            return None
        finally:
            for key in withdrawn:  # after the scan: its cursor stays where it was
                tx.delete(keys.DB_OFFERS, key)

    def _hand_off(self, tx: Tx, rec: JobRecord, server_id: str, child_pid: int) -> JobRecord:
        """Write a new job as already claimed by ``server_id`` (as ``_take`` would), for
        its child ``child_pid`` to run."""
        rec = rec.evolve(state=JobState.PROCESSING, attempts=rec.attempts + 1)
        self._save(tx, rec)
        now = now_ms()
        deadline = None if rec.timeout_s is None else now + int(rec.timeout_s * 1000)
        claim = Claim(rec.id, server_id, now, deadline, child_pid)
        tx.put(keys.DB_PROCESSING, keys.processing_key(server_id, rec.id), encode_claim(claim))
        return rec

    def _set_offer(
        self,
        tx: Tx,
        server_id: str,
        child_pids: Sequence[int],
        queues: Sequence[str] | None = None,
    ) -> None:
        """Record which idle children ``server_id`` offers (none: no entry), for jobs of
        ``queues`` (None: any); written only when they change, so a busy server's cycles
        do not rewrite the offers page. The stamp is the server's last heartbeat, as in
        its registry entry (which each heartbeat restamps), so an offer is never fresher
        than the registry says."""
        key = keys.server_key(server_id)
        current = tx.get(keys.DB_OFFERS, key)
        if not child_pids:
            if current is not None:
                tx.delete(keys.DB_OFFERS, key)
            return
        offer = None if current is None else keys.decode_offer(current)
        wanted = None if queues is None else tuple(queues)
        if offer is not None and offer.pids == list(child_pids) and offer.queues == wanted:
            return
        beat_ms, lease_ms = offer[:2] if offer is not None else self._beat(tx, key)
        tx.put(keys.DB_OFFERS, key, keys.encode_offer(beat_ms, lease_ms, child_pids, wanted))

    def _beat(self, tx: Tx, server_key: bytes) -> tuple[int, int]:
        """A server's last heartbeat and lease (ms), from its registry entry; one that
        has none (or an unreadable one) is stamped stale: it offers nothing."""
        raw = tx.get(keys.DB_WORKERS, server_key)
        info = {} if raw is None else decode_server_info(raw)
        return _beat_ms_of(info), _lease_ms_of(info)

    def _add_linked(self, records: Sequence[JobRecord]) -> None:
        """``add`` of a batch in which some jobs have dependencies or a unique key (see
        ``graph.Linker``); a job whose key is held comes back as the holder."""
        now = now_ms()
        check_add_order(records)

        def body(tx: Tx) -> list[JobRecord]:
            _number(records)
            return Linker(self, tx, now, self._put_new).add(list(records))

        for rec, stored in zip(records, self.env.write(body)):
            if stored is not rec:
                rec.__dict__.update(stored.__dict__)
        self.waker.notify()

    def _add(self, tx: Tx, records: Sequence[JobRecord]) -> None:
        _number(records)
        self._put_new(tx, records)

    def _put_new(self, tx: Tx, records: Sequence[JobRecord]) -> None:
        """Write a batch with one sorted multi-put per index: neighbouring keys go to
        neighbouring pages, and the per-put Python cost is paid in C."""
        job_items, name_items = [], []
        queue_items: dict[bytes, list[tuple[bytes, bytes]]] = {}
        held = tx.has_entries(keys.DB_PAUSES)  # once per batch: nothing paused, no cost
        lane_of: dict[tuple[str, str], bytes | None] | None = {} if lanes.in_use(tx) else None
        named: dict[str, int] = {}  # the named queues' new ready jobs
        laned: dict[bytes, int] = {}  # the lanes' new ready jobs
        for rec in records:
            raw = encode_record(rec)
            job_key, name_key, queue_db, queue_key = self._new_entries(rec)
            if queue_db == keys.DB_QUEUED:
                named[rec.queue] = named.get(rec.queue, 0) + 1
            if lane_of is not None:  # likewise for limits
                queue_db, queue_key = queue_index.laned(
                    tx, rec.name, rec.queue, (queue_db, queue_key), lane_of
                )
            if held:
                queue_db, queue_key = pauses.held_entry(
                    tx, rec.name, (queue_db, queue_key), rec.queue
                )
            if queue_db == keys.DB_LANED:
                lane = keys.lane_of_laned(queue_key)
                laned[lane] = laned.get(lane, 0) + 1
            job_items.append((job_key, raw))
            name_items.append((name_key, self._index_value(raw)))
            queue_items.setdefault(queue_db, []).append((queue_key, b""))
        for db, items in (
            (keys.DB_JOBS, job_items),
            (keys.DB_BY_NAME, name_items),
            *queue_items.items(),
        ):
            items.sort()
            tx.put_many(db, items)
        for queue, added in named.items():
            queue_index.count(tx, queue, added)
        for lane, added in laned.items():
            lanes.count(tx, lane, added)

    # ---- polling ------------------------------------------------------------------
    def promote_due(self, now_ms: int) -> int:
        return self.env.write(lambda tx: self._promote(tx, now_ms))

    def _promote(self, tx: Tx, now_ms: int) -> int:
        due = [
            key
            for key, _ in tx.scan(
                keys.DB_SCHEDULED, b"", keys.scheduled_upper_bound(now_ms), values=False
            )
        ]
        for key in due:
            _, _, _, job_id = keys.decode_scheduled_key(key)
            tx.delete(keys.DB_SCHEDULED, key)
            raw = tx.get(keys.DB_JOBS, keys.job_key(job_id))
            if raw is None:
                continue
            try:
                rec = decode_record(raw)
            except CorruptRecord as exc:
                self._park_corrupt(tx, job_id, str(exc))  # never resurrect it as ready
                continue
            if rec.state is not JobState.SCHEDULED:
                continue  # a stray index entry (its job moved on): dropped above
            if rec.expires_at_ms is not None and is_expired(rec, now_ms):
                self._expire(tx, rec, now_ms)
                continue
            problem = stored_problem(rec)
            if problem is not None:
                self._bury_bad(tx, job_id, rec, problem)
                continue
            rec = rec.evolve(state=JobState.READY)
            self._save(tx, rec)
            self._enqueue_index(tx, rec)
        return len(due)

    def claim(
        self, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> list[JobRecord]:
        check_key_part(server_id, "server id")
        if limit <= 0:
            return []
        return self.env.write(lambda tx: self._claim(tx, server_id, limit, now_ms, queues))

    def _claim(
        self, tx: Tx, server_id: str, limit: int, now_ms: int, queues: Selection | None = None
    ) -> list[JobRecord]:
        if pauses.takes_nothing(tx):
            return []
        if queues is not None:
            return claim_selected(
                queues, limit, self.rng, lambda q, n: self._claim_from(tx, q, server_id, n, now_ms)
            )
        if queue_index.in_use(tx) or tx.has_entries(keys.DB_LANES):
            return self._claim_from(tx, None, server_id, limit, now_ms)[0]
        claimed: list[JobRecord] = []
        while True:
            wanted = limit - len(claimed)
            taken = []
            for key, _ in tx.scan(keys.DB_READY, values=False):
                taken.append(key)
                if len(taken) >= wanted:
                    break
            before = len(claimed)
            for key in taken:
                tx.delete(keys.DB_READY, key)
                rec = self._take(tx, keys.decode_ready_key(key)[2], server_id, now_ms)
                if rec is not None:
                    claimed.append(rec)
            # Again while some taken jobs ended otherwise (expired, bad), which may have
            # released others: each pass takes its keys out of ``ready``, so this ends.
            if len(claimed) - before == len(taken) or len(claimed) >= limit:
                return claimed
            if queue_index.in_use(tx) or tx.has_entries(keys.DB_LANES):  # released there
                more, _ = self._claim_from(tx, None, server_id, limit - len(claimed), now_ms)
                return claimed + more

    def _claim_from(
        self, tx: Tx, queue: str | None, server_id: str, limit: int, now_ms: int
    ) -> tuple[list[JobRecord], bool]:
        """The claim loop above for one queue (None: every queue, in priority and FIFO
        order across them), where named queues are in use; and whether it ended some
        job otherwise (``queues.claim_selected``)."""
        claimed: list[JobRecord] = []
        ended = False
        while len(claimed) < limit:
            taken = queue_index.take(tx, queue, limit - len(claimed), now_ms)
            before = len(claimed)
            slots = []  # the limited ones' slots, taken together: one write per limit
            for ready, limits in taken:
                job_id = keys.decode_ready_key(ready)[2]
                rec = self._take(tx, job_id, server_id, now_ms)
                if rec is not None:
                    claimed.append(rec)
                    if limits:
                        slots.append((keys.processing_key(server_id, job_id), limits))
            if slots:  # before another pass reads the limits again
                lanes.take_slots(tx, slots, now_ms)
            if len(claimed) - before == len(taken):  # none ended otherwise: no more
                break
            ended = True
        return claimed, ended

    def _take(self, tx: Tx, job_id: str, server_id: str, now_ms: int) -> JobRecord | None:
        """Mark one job (already out of its queue index) as processing by ``server_id``."""
        raw = tx.get(keys.DB_JOBS, keys.job_key(job_id))
        if raw is None:
            return None
        try:
            rec = decode_record(raw)
        except CorruptRecord as exc:
            self._park_corrupt(tx, job_id, str(exc))
            return None
        if rec.state is not JobState.READY:
            return None  # a stray index entry (its job moved on): dropped by the caller
        if rec.expires_at_ms is not None and is_expired(rec, now_ms):
            self._expire(tx, rec, now_ms)  # the record at hand: no read more
            return None
        problem = stored_problem(rec)  # the deadline below, the retry policy later
        if problem is not None:
            self._bury_bad(tx, job_id, rec, problem)
            return None
        rec = rec.evolve(state=JobState.PROCESSING, attempts=rec.attempts + 1)
        if len(self._claimed) >= _CLAIM_CACHE_MAX:
            self._claimed.clear()  # entries of jobs finished elsewhere; just a cache
        self._claimed[job_id] = (self._save(tx, rec), rec)
        deadline = None if rec.timeout_s is None else now_ms + int(rec.timeout_s * 1000)
        claim = Claim(job_id, server_id, now_ms, deadline_ms=deadline)
        tx.put(keys.DB_PROCESSING, keys.processing_key(server_id, job_id), encode_claim(claim))
        return rec

    def _expire(self, tx: Tx, rec: JobRecord, now: int) -> None:
        """End a queued job past its deadline (already out of its queue index) expired,
        and settle its dependents (see expiry.py)."""
        ended = expired(rec, now)
        self._file_expired(tx, ended)
        settle_end(self, tx, ended, JobState.EXPIRED, now)

    def _file_expired(self, tx: Tx, ended: JobRecord) -> None:
        """Keep a job that ended expired: its record, and its entry in the index."""
        self._save(tx, ended)
        file_expired_entry(tx, ended)

    def _park_corrupt(self, tx: Tx, job_id: str, reason: str) -> None:
        """A reader must never crash on a bad record: park it in dead, with the reason
        (the jobs waiting for it learn it is dead)."""
        tx.put(keys.DB_DEAD, keys.dead_key(job_id), f"corrupt record: {reason}".encode())
        settle_end(self, tx, JobRecord.corrupt(job_id, "?", reason), JobState.DEAD, now_ms())

    def _bury_bad(self, tx: Tx, job_id: str, rec: JobRecord, problem: str) -> None:
        """A record that decodes but holds a value out of bounds (older code, or written
        by hand) is that job's failure: dead with the reason, never run, never a crash."""
        reason = f"stored value out of bounds: {problem}"
        now = now_ms()
        error = ErrorInfo("OutOfBounds", reason, kind="corrupt", at_ms=now)
        history = rec.errors if isinstance(rec.errors, tuple) else ()
        dead = rec.evolve(errors=history + (error,), finished_at_ms=now)
        dead.state = JobState.DEAD  # from whatever state it claims: its values are wrong
        try:
            if rec.id == job_id:
                self._save(tx, dead)
        except Exception:  # values even the encoder refuses: the dead entry says why
            pass
        tx.put(keys.DB_DEAD, keys.dead_key(job_id), reason.encode("utf-8", "replace"))
        settle_end(self, tx, JobRecord.corrupt(job_id, "?", reason), JobState.DEAD, now)

    def next_run_at_ms(self, now_ms: int | None = None) -> int | None:
        def first(tx: Tx) -> int | None:
            key = tx.first_key(keys.DB_SCHEDULED)
            due = None if key is None else keys.decode_scheduled_key(key)[0]
            if now_ms is None or not lanes.in_use(tx):
                return due
            return earliest(due, lanes.reopens_at(tx, now_ms))

        return self.env.read(first)

    # ---- outcomes -----------------------------------------------------------------
    def finish(self, outcomes: Sequence[Outcome], now_ms: int) -> list[bool]:
        if not outcomes:
            return []
        return self.env.write(lambda tx: self._finish_all(tx, outcomes, now_ms))

    def _finish_all(self, tx: Tx, outcomes: Sequence[Outcome], now_ms: int) -> list[bool]:
        """Apply ``outcomes``, then settle the jobs waiting for those that ended, together
        (one read and write of a count per dependent for the whole batch), and free
        the limited ones' slots together (one read and write per limit)."""
        ends: list[tuple[JobRecord, JobState | None]] = []
        freed: list[bytes] = []
        requests = tx.has_entries(keys.DB_CANCELS)
        acks = [self._finish_one(tx, o, now_ms, ends, requests, freed) for o in outcomes]
        if freed and tx.has_entries(keys.DB_COUNTED):  # once: outcomes add no counted entry
            lanes.release(tx, freed)
        settle_ends(self, tx, ends, now_ms)
        return acks

    def _finish_one(
        self,
        tx: Tx,
        outcome: Outcome,
        now_ms: int,
        ends: list[tuple[JobRecord, JobState | None]] | None = None,
        requests: bool = True,
        freed: list[bytes] | None = None,
    ) -> bool:
        """Apply one outcome; a job that ended is settled at once, or added to ``ends``
        for the caller to settle with the batch's others. ``requests``: whether any
        cancel request may exist (False spares the lookup per job). ``freed``: where
        to leave the claim's processing key for the caller to free its slots with the
        batch's others, if it took any (None: freed here)."""
        pkey = keys.processing_key(outcome.server_id, outcome.job_id)
        if not tx.delete(keys.DB_PROCESSING, pkey):
            return False  # the claim was taken back: a late outcome changes nothing
        if freed is not None:
            freed.append(pkey)
        elif tx.has_entries(keys.DB_COUNTED):  # its slots, in the commit of its outcome
            lanes.release(tx, (pkey,))
        request = cancels.take_request(tx, pkey) if requests else None
        rec = self._load_claimed(tx, outcome.job_id)
        if rec is None or rec.state is not JobState.PROCESSING:
            if rec is not None and rec.is_corrupt:  # unreadable: park it, never lose it
                reason = rec.errors[-1].message if rec.errors else "unreadable record"
                self._park_corrupt(tx, outcome.job_id, reason)
            return False
        if request is not None:
            outcome = requested(outcome, request, rec.attempts, now_ms)
        applied = apply_outcome(rec, outcome, now_ms, self.rng)
        rec = applied.record
        if applied.destination is Destination.DONE:
            self._mark_done(tx, rec)
            self._ended(tx, rec, JobState.DONE, now_ms, ends)
        elif applied.destination is Destination.RELEASED:
            self._save(tx, rec)
            self._enqueue_index(tx, rec)  # at its old seq: ahead of the jobs after it
        elif applied.destination is Destination.DEAD:
            self._bury(tx, rec, applied.dead_reason)
            self._ended(tx, rec, JobState.DEAD, now_ms, ends)
        elif applied.destination is Destination.CANCELLED:
            self._save(tx, rec)
            file_cancelled_entry(tx, rec, applied.error.message if applied.error else "")
            self._ended(tx, rec, JobState.CANCELLED, now_ms, ends)
        elif applied.destination is Destination.EXPIRED:  # filed as a claim expires one
            self._file_expired(tx, rec)
            self._ended(tx, rec, JobState.EXPIRED, now_ms, ends)
        else:
            self._requeue(tx, rec)
        return True

    def _ended(
        self,
        tx: Tx,
        rec: JobRecord,
        end: JobState,
        now_ms: int,
        ends: list[tuple[JobRecord, JobState | None]] | None,
    ) -> None:
        if ends is None:
            settle_end(self, tx, rec, end, now_ms)
        else:
            ends.append((rec, end))

    def _mark_done(self, tx: Tx, rec: JobRecord) -> None:
        self._save(tx, rec)
        tx.put(keys.DB_DONE, keys.done_key(rec.finished_at_ms or 0, rec.id), b"")

    def _bury(self, tx: Tx, rec: JobRecord, reason: str) -> None:
        self._save(tx, rec)
        tx.put(keys.DB_DEAD, keys.dead_key(rec.id), reason.encode("utf-8", "replace"))

    def _requeue(self, tx: Tx, rec: JobRecord) -> None:
        """Back into a queue (ready or scheduled) behind the jobs already waiting."""
        rec.seq = next_seqs(1)
        self._save(tx, rec)
        self._enqueue_index(tx, rec)

    # ---- claims and workers -------------------------------------------------------
    def claims(self, server_id: str | None = None) -> list[Claim]:
        prefix = b"" if server_id is None else keys.processing_prefix(server_id)
        return self.env.read(
            lambda tx: [
                claim
                for key, raw in tx.scan_prefix(keys.DB_PROCESSING, prefix)
                if (claim := _read_claim(key, raw)) is not None
            ]
        )

    def requeue_server(self, server_id: str) -> list[str]:
        return self.env.write(lambda tx: self._requeue_server(tx, server_id))

    def _requeue_server(self, tx: Tx, server_id: str) -> list[str]:
        self._set_offer(tx, server_id, ())  # hand nothing more to a server that is gone
        held = [
            key
            for key, _ in tx.scan_prefix(
                keys.DB_PROCESSING, keys.processing_prefix(server_id), values=False
            )
        ]
        outcomes = [Outcome.released(keys.decode_processing_key(k)[1], server_id) for k in held]
        now = now_ms()  # a job cancelled meanwhile ends now
        return [o.job_id for o in outcomes if self._finish_one(tx, o, now)]

    # ---- reading --------------------------------------------------------------------
    def get(self, job_id: str) -> JobRecord | None:
        return self.env.read(lambda tx: self._load(tx, job_id))

    def get_many(self, job_ids: Sequence[str]) -> builtins.list[JobRecord | None]:
        return self.env.read(lambda tx: [self._load(tx, job_id) for job_id in job_ids])

    def endings(self, job_ids: Sequence[str]) -> builtins.list[Ending | None]:
        def body(tx: Tx) -> builtins.list[Ending | None]:
            raws = [tx.get(keys.DB_JOBS, keys.job_key(job_id)) for job_id in job_ids]
            return [None if raw is None else decode_ending(raw) for raw in raws]

        return self.env.read(body)

    def dependents(self, job_id: str) -> builtins.list[str]:
        return self.env.read(lambda tx: dependents(tx, job_id))

    def list(
        self,
        name: str | None = None,
        state: JobState | None = None,
        limit: int | None = None,
        queue: str | None = None,
    ) -> builtins.list[JobRecord]:
        prefix = None if name is None else keys.by_name_prefix(name)
        return self.env.read(lambda tx: self._list(tx, prefix, state, limit, queue))

    def _list(
        self,
        tx: Tx,
        prefix: bytes | None,
        state: JobState | None,
        limit: int | None,
        queue: str | None = None,
    ) -> builtins.list[JobRecord]:
        """Walk the name index oldest first and stop at ``limit``: a listing reads and
        decodes O(limit) entries (plus one per task name), whatever the store holds."""
        out: builtins.list[JobRecord] = []
        if limit == 0:
            return out
        prefixes = [prefix] if prefix is not None else self._name_prefixes(tx)
        # Each task's keys are in id order, and ids start with their creation time:
        # merging the tasks' runs by id yields every job oldest first, lazily.
        runs = [tx.scan_prefix(keys.DB_BY_NAME, p) for p in prefixes]
        for key, raw in heapq.merge(*runs, key=lambda entry: keys.by_name_id(entry[0])):
            rec = self._index_record(tx, key, raw)
            if (state is None or rec.state is state) and (queue is None or rec.queue == queue):
                out.append(rec)
                if len(out) == limit:
                    break
        return out

    def browse(
        self,
        *,
        state: JobState | None = None,
        name: str | None = None,
        queue: str | None = None,
        before: str | None = None,
        limit: int = 50,
    ) -> Page:
        check_browse(limit, before)
        if name is not None:
            keys.check_name_key(name)
        legacy = self.mode == "legacy"
        return self.env.read(lambda tx: pages.page(tx, state, name, queue, before, limit, legacy))

    def newest_dead(self, limit: int) -> builtins.list[JobRecord]:
        def body(tx: Tx) -> builtins.list[JobRecord]:
            found: builtins.list[JobRecord] = []
            for key in itertools.islice(tx.scan_back(keys.DB_DEAD), max(limit, 0)):
                rec = self._load(tx, keys.decode_job_key(key))
                if rec is not None:
                    found.append(rec.evolve(payload=b"", result=None, func=None))
            return found

        return self.env.read(body)

    def _name_prefixes(self, tx: Tx) -> builtins.list[bytes]:
        """The name prefix of every task with jobs: one seek per task, not per job."""
        found: builtins.list[bytes] = []
        key = tx.first_key(keys.DB_BY_NAME)
        while key is not None:
            found.append(keys.by_name_prefix_of(key))
            key = tx.first_key_from(keys.DB_BY_NAME, keys.after_by_name_prefix(found[-1]))
        return found

    def _index_record(self, tx: Tx, key: bytes, raw: bytes) -> JobRecord:
        """A listed job from its name index entry, without payload, result or callable."""
        name, job_id = keys.decode_by_name_key(key)
        try:
            return decode_listing(raw)
        except CorruptRecord as exc:
            return JobRecord.corrupt(job_id, name, f"record cannot be decoded: {exc}")

    def stats(self) -> dict[str, int]:
        return self.env.read(self._counts)

    def _counts(self, tx: Tx) -> dict[str, int]:
        ready = tx.entries(keys.DB_READY) + tx.entries(keys.DB_PAUSED)
        return {
            "ready": ready + tx.entries(keys.DB_QUEUED) + tx.entries(keys.DB_LANED),
            "scheduled": tx.entries(keys.DB_SCHEDULED),
            "processing": tx.entries(keys.DB_PROCESSING),
            "done": tx.entries(keys.DB_DONE),
            "dead": tx.entries(keys.DB_DEAD),
            "waiting": tx.entries(keys.DB_WAITING),
            "cancelled": tx.entries(keys.DB_CANCELLED),
            "expired": tx.entries(keys.DB_EXPIRED),
            "total": tx.entries(keys.DB_JOBS),
        }

    def gauges(self) -> Gauges:
        def body(tx: Tx) -> Gauges:
            counts = self._counts(tx)
            oldest = self._oldest_ready_ms(tx)
            return Gauges(counts, pauses.paused(tx), oldest, self._queue_depths(tx, counts))

        return self.env.read(body)

    def _oldest_ready_ms(self, tx: Tx) -> int | None:
        """The earliest run-at among the first ready job of each priority (across the
        queues, as a claim of every queue takes them): one seek a priority and queue,
        ``HEADS_READ_MAX`` at most, and one record a priority."""
        first: dict[bytes, bytes] = {}  # inverted priority -> the smallest ready key
        budget = HEADS_READ_MAX
        found = itertools.chain(
            *(queue_index.heads(tx, q, budget) for q in [DEFAULT_QUEUE, *queue_index.names(tx)])
        )
        for ready in itertools.chain(found, queue_index.lane_heads(tx, budget)):
            if budget <= 0:
                break
            budget -= 1
            band = ready[:4]
            if band not in first or ready < first[band]:
                first[band] = ready
        oldest: int | None = None
        for band in sorted(first)[:HEADS_READ_MAX]:
            rec = self._load(tx, keys.decode_ready_key(first[band])[2])
            if rec is not None and not rec.is_corrupt:
                oldest = rec.run_at_ms if oldest is None else min(oldest, rec.run_at_ms)
        return oldest

    def _queue_depths(self, tx: Tx, counts: Mapping[str, int]) -> dict[str, dict[str, int]]:
        """Ready and processing jobs by queue: the named queues' ready counts, the
        default queue's the rest; processing ones by their records (one read per
        running job: a gauge, not a hot path)."""
        named = queue_index.counts(tx)
        ready = {DEFAULT_QUEUE: counts["ready"] - sum(named.values()), **named}
        running: dict[str, int] = {}
        for key, _ in tx.scan(keys.DB_PROCESSING, values=False):
            rec = self._load(tx, keys.decode_processing_key(key)[1])
            queue = DEFAULT_QUEUE if rec is None else rec.queue
            running[queue] = running.get(queue, 0) + 1
        return depths_by_queue(ready, running)

    # ---- history ----------------------------------------------------------------------
    def record_history(self, sample_at_ms: int, counts: Mapping[str, int]) -> None:
        self.env.write(lambda tx: depth_history.record(tx, sample_at_ms, counts))

    def history(self, since_ms: int, until_ms: int) -> builtins.list[Point]:
        return self.env.read(lambda tx: depth_history.read(tx, since_ms, until_ms))

    # ---- periodic schedules (schedules.py) ------------------------------------------
    def declare_schedules(
        self, specs: Sequence[ScheduleSpec], server_id: str, now_ms: int, live: Live
    ) -> builtins.list[ScheduleRow]:
        for spec in specs:
            keys.check_name_key(spec.name)
        return self.env.write(lambda tx: lmdb_schedules.declare(tx, specs, server_id, now_ms, live))

    def fire_schedules(self, now_ms: int, plan: FirePlan, limit: int) -> Fired:
        fired = self.env.write(lambda tx: lmdb_schedules.fire(tx, now_ms, plan, limit, self._add))
        if fired.jobs:
            self.waker.notify()
        return fired

    def retire_schedules(self, expected: Mapping[str, tuple[str, ...]]) -> builtins.list[str]:
        return self.env.write(lambda tx: lmdb_schedules.retire(tx, expected))

    def schedules(self) -> builtins.list[ScheduleRow]:
        return self.env.read(lmdb_schedules.rows)

    def pause_schedule(self, name: str) -> bool:
        return self.env.write(lambda tx: lmdb_schedules.set_paused(tx, name, True, 0))

    def resume_schedule(self, name: str, now_ms: int) -> bool:
        return self.env.write(lambda tx: lmdb_schedules.set_paused(tx, name, False, now_ms))

    def next_schedule_due_ms(self) -> int | None:
        return self.env.read(lmdb_schedules.next_due)

    # ---- concurrency limits -----------------------------------------------------------
    def set_limit(
        self, kind: str, name: str, concurrency: int | None, rate: Rate | None = None
    ) -> bool:
        check_kind(kind)
        if kind == TASK:
            keys.check_name_key(name)
        else:
            check_queue_name(name)
        changed = self.env.write(
            lambda tx: limit_changes.set_limit(tx, kind, name, concurrency, rate)
        )
        if changed:
            self.waker.notify()  # a raised or removed limit may let jobs start
        return changed

    def limits(self) -> builtins.list[Limit]:
        return self.env.read(lanes.listed)

    # ---- pausing ----------------------------------------------------------------------
    def pause(self, name: str | None) -> PauseChange:
        if name is not None:
            keys.check_name_key(name)
        return self.env.write(lambda tx: pauses.pause(tx, name))

    def resume(self, name: str | None) -> PauseChange:
        if name is not None:
            keys.check_name_key(name)
        change = self.env.write(lambda tx: pauses.resume(tx, name))
        if change.changed:
            self.waker.notify()  # as after an enqueue: its jobs are claimable again
        return change

    def paused(self) -> Paused:
        return self.env.read(pauses.paused)

    # ---- removing ---------------------------------------------------------------------
    def delete(self, job_id: str) -> bool:
        return self.env.write(lambda tx: self._delete(tx, job_id))

    def _delete(self, tx: Tx, job_id: str) -> bool:
        raw = tx.get(keys.DB_JOBS, keys.job_key(job_id))
        if raw is None:
            return False
        try:
            rec = decode_record(raw)
        except CorruptRecord:
            self._delete_corrupt(tx, job_id)
            return True
        unlink(self, tx, rec, now_ms())
        self._unqueue_index(tx, rec)
        if rec.state is JobState.PROCESSING:
            for key, _ in list(tx.scan(keys.DB_PROCESSING, values=False)):
                if keys.decode_processing_key(key)[1] == job_id:
                    tx.delete(keys.DB_PROCESSING, key)
                    tx.delete(keys.DB_CANCELS, key)
                    lanes.release(tx, (key,))
        elif rec.state is JobState.DONE:
            tx.delete(keys.DB_DONE, keys.done_key(rec.finished_at_ms or 0, job_id))
        elif rec.state is JobState.DEAD:
            tx.delete(keys.DB_DEAD, keys.dead_key(job_id))
        elif rec.state is JobState.EXPIRED:
            tx.delete(keys.DB_EXPIRED, keys.done_key(rec.finished_at_ms or 0, job_id))
        tx.delete(keys.DB_JOBS, keys.job_key(job_id))
        tx.delete(keys.DB_BY_NAME, keys.by_name_key(rec.name, job_id))
        tx.delete(keys.DB_PROGRESS, keys.job_key(job_id))
        return True

    def _delete_corrupt(self, tx: Tx, job_id: str) -> None:
        """Without a readable record, find the job's index entries by scanning."""
        settle_end(self, tx, JobRecord.corrupt(job_id, "?", "deleted"), None, now_ms())
        tx.delete(keys.DB_JOBS, keys.job_key(job_id))
        tx.delete(keys.DB_DEAD, keys.dead_key(job_id))
        tx.delete(keys.DB_WAITING, keys.job_key(job_id))
        jid = job_id.encode("ascii")
        for key, _ in list(tx.scan(keys.DB_DEPS, values=False)):
            if key.startswith(jid) or key.endswith(jid):
                tx.delete(keys.DB_DEPS, key)
        for key, value in list(tx.scan(keys.DB_UNIQUE)):
            if value == jid:
                tx.delete(keys.DB_UNIQUE, key)
        queue_index.forget(tx, job_id)
        for db in (
            keys.DB_BY_NAME,
            keys.DB_READY,
            keys.DB_PAUSED,
            keys.DB_SCHEDULED,
            keys.DB_PROCESSING,
            keys.DB_DONE,
            keys.DB_PENDING,
            keys.DB_CANCELLED,
            keys.DB_EXPIRED,
            keys.DB_CANCELS,
            keys.DB_PROGRESS,
        ):
            for key, _ in list(tx.scan(db, values=False)):
                if key.endswith(job_id.encode("ascii")):
                    tx.delete(db, key)

    # ---- cancelling -------------------------------------------------------------------
    def cancel(self, job_ids: Sequence[str], text: str, now_ms: int) -> CancelReport:
        report = self.env.write(lambda tx: cancels.cancel_ids(self, tx, job_ids, text, now_ms))
        return self._cancelled(report)

    def cancel_matching(
        self,
        name: str | None,
        states: Collection[JobState],
        text: str,
        now_ms: int,
        limit: int,
        after: str,
    ) -> tuple[CancelReport, str | None]:
        if name is not None:
            keys.check_name_key(name)

        def body(tx: Tx) -> tuple[CancelReport, str | None]:
            return cancels.cancel_matching(self, tx, name, states, text, now_ms, limit, after)

        report, resume = self.env.write(body)
        return self._cancelled(report), resume

    def _cancelled(self, report: CancelReport) -> CancelReport:
        """After a cancel's commit: wake the servers of the running jobs it asked to
        stop, and all of them if it ended jobs (a chord's callback that allows
        failures may have been released)."""
        if report.requested:
            self.waker.cancel()
        elif report.cancelled:
            self.waker.notify()
        return report

    def _state_sources(self, state: JobState) -> builtins.list[bytes]:
        """The index that holds every job in ``state`` (for a bulk cancel)."""
        return {
            JobState.READY: [keys.DB_READY, keys.DB_QUEUED, keys.DB_LANED, keys.DB_PAUSED],
            JobState.SCHEDULED: [keys.DB_SCHEDULED],
            JobState.WAITING: [keys.DB_WAITING],
            JobState.PROCESSING: [keys.DB_PROCESSING],
        }.get(state, [])

    def cancel_requests(self, server_id: str) -> builtins.list[str]:
        check_key_part(server_id, "server id")
        return self.env.read(lambda tx: cancels.requests_of(tx, server_id))

    def requeue_dead(self, job_id: str, now_ms: int, run_at_ms: int | None = None) -> JobRecord:
        check_run_at(run_at_ms)
        rec = self.env.write(lambda tx: self._requeue_dead(tx, job_id, now_ms, run_at_ms))
        self.waker.notify()  # ready now, or due at a time a server must learn of
        return rec

    def requeue_dead_many(
        self, job_ids: Sequence[str], now_ms: int, run_at_ms: int | None = None
    ) -> Requeued:
        check_run_at(run_at_ms)

        def body(tx: Tx) -> Requeued:
            return Requeued.each(
                job_ids, lambda job_id: self._requeue_dead(tx, job_id, now_ms, run_at_ms)
            )

        report = self.env.write(body)
        if report.requeued:
            self.waker.notify()
        return report

    def _requeue_dead(
        self, tx: Tx, job_id: str, now_ms: int, run_at_ms: int | None = None
    ) -> JobRecord:
        if not is_job_id(job_id) or tx.get(keys.DB_JOBS, keys.job_key(job_id)) is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        rec = self._load(tx, job_id)
        if rec is None or rec.state is not JobState.DEAD or rec.is_corrupt:
            state = "unreadable" if rec is None or rec.is_corrupt else rec.state.value
            raise ConfigError(f"job {job_id} is {state}; only dead jobs can be requeued")
        if rec.key is not None:
            holder = key_holder(self, tx, rec.name, rec.key)
            if holder is not None:
                raise key_held(job_id, rec.key, holder.id)
            tx.put(keys.DB_UNIQUE, keys.unique_key(rec.name, rec.key), keys.job_key(job_id))
        tx.delete(keys.DB_DEAD, keys.dead_key(job_id))
        close_edges(tx, job_id)
        state, run_at = redrive_state(now_ms, run_at_ms)
        rec = rec.evolve(state=state, attempts=0, run_at_ms=run_at, finished_at_ms=None)
        self._requeue(tx, rec)
        return rec

    def purge_dead(self) -> int:
        def body(tx: Tx) -> int:
            dead = [keys.decode_job_key(k) for k, _ in tx.scan(keys.DB_DEAD, values=False)]
            return sum(
                self._delete(tx, job_id) or tx.delete(keys.DB_DEAD, keys.dead_key(job_id))
                for job_id in dead
            )

        return self.env.write(body)

    def expire_finished(self, before_ms: int) -> int:
        """Delete done, cancelled and expired jobs that finished before ``before_ms``."""

        def body(tx: Tx) -> int:
            deleted = 0
            for db in (keys.DB_DONE, keys.DB_CANCELLED, keys.DB_EXPIRED):
                bound = keys.done_upper_bound(before_ms)
                old = [k for k, _ in tx.scan(db, b"", bound, values=False)]
                for key in old:
                    self._delete(tx, keys.decode_done_key(key)[1])
                    tx.delete(db, key)
                deleted += len(old)
            return deleted

        return self.env.write(body)

    # ---- the server's cycle and its registry ------------------------------------------
    def finish_and_claim(
        self,
        outcomes: Sequence[Outcome],
        server_id: str,
        limit: int,
        now_ms: int,
        idle_children: Sequence[int] = (),
        *,
        progress: Mapping[str, Progress] | None = None,
        queues: Selection | None = None,
    ) -> tuple[builtins.list[bool], builtins.list[JobRecord]]:
        def body(tx: Tx) -> tuple[builtins.list[bool], builtins.list[JobRecord]]:
            if progress:
                self._write_progress(tx, progress)
            acks = self._finish_all(tx, outcomes, now_ms)
            claimed: builtins.list[JobRecord] = []
            if limit > 0:
                self._promote(tx, now_ms)
                claimed = self._claim(tx, server_id, limit, now_ms, queues)
            if outcomes or limit > 0 or idle_children:  # not a commit of progress alone
                offered = offered_children(idle_children, limit, len(claimed))
                self._set_offer(tx, server_id, offered, None if queues is None else queues.names)
            return acks, claimed

        if not outcomes and limit <= 0 and not idle_children and not progress:
            return [], []
        return self.env.write(body)

    # ---- progress ---------------------------------------------------------------------
    def record_progress(self, updates: Mapping[str, Progress]) -> None:
        if updates:
            self.env.write(lambda tx: self._write_progress(tx, updates))

    def _write_progress(self, tx: Tx, updates: Mapping[str, Progress]) -> None:
        for job_id in sorted(updates):
            key = keys.job_key(job_id)
            if tx.get(keys.DB_JOBS, key) is not None:  # deleted meanwhile: dropped
                tx.put(keys.DB_PROGRESS, key, encode_progress(updates[job_id]))

    def progress(self, job_ids: Sequence[str]) -> builtins.list[Progress | None]:
        def body(tx: Tx) -> builtins.list[Progress | None]:
            raws = [tx.get(keys.DB_PROGRESS, keys.job_key(job_id)) for job_id in job_ids]
            return [None if raw is None else decode_progress(raw) for raw in raws]

        return self.env.read(body)

    def recall(
        self, server_id: str, child_pid: int, known: Collection[str]
    ) -> builtins.list[JobRecord]:
        def body(tx: Tx) -> builtins.list[JobRecord]:
            raw = tx.get(keys.DB_OFFERS, keys.server_key(server_id))
            offer = None if raw is None else keys.decode_offer(raw)
            if raw is not None:
                left = [p for p in (offer.pids if offer else []) if p != child_pid]
                self._set_offer(tx, server_id, left, offer.queues if offer else None)
            found = []
            for key, raw in tx.scan_prefix(keys.DB_PROCESSING, keys.processing_prefix(server_id)):
                claim = _read_claim(key, raw)
                if claim is not None and claim.child_pid == child_pid and claim.job_id not in known:
                    rec = self._load(tx, claim.job_id)
                    if rec is not None and rec.state is JobState.PROCESSING:
                        found.append(rec)
            return found

        return self.env.write(body)

    def inbox(self) -> HandOffInbox:
        return HandOffInbox(self.path)

    def handed_job(self, server_id: str, job_id: str, child_pid: int) -> JobRecord | None:
        def body(tx: Tx) -> JobRecord | None:
            key = keys.processing_key(server_id, job_id)
            raw = tx.get(keys.DB_PROCESSING, key)
            claim = None if raw is None else _read_claim(key, raw)
            if claim is None or claim.child_pid != child_pid:
                return None  # finished, put back or never ours: not to be run by us
            return self._load(tx, job_id)

        return self.env.read(body)

    def register_server(self, server_id: str, info: dict[str, Any]) -> None:
        self.heartbeat(server_id, info)

    def heartbeat(
        self, server_id: str, info: dict[str, Any], sample_at_ms: int | None = None
    ) -> None:
        raw = encode_server_info(info)
        key = keys.server_key(server_id)
        beat_ms = _beat_ms_of(info)

        def body(tx: Tx) -> None:
            if sample_at_ms is not None:  # the counts as of this transaction
                depth_history.record(tx, sample_at_ms, self._counts(tx))
            tx.put(keys.DB_WORKERS, key, raw)
            # The heartbeat also restamps the server's offer: producers judge its
            # freshness from the offer alone (see _take_offer).
            current = tx.get(keys.DB_OFFERS, key)
            offer = None if current is None else keys.decode_offer(current)
            if offer is not None:
                lease_ms = _lease_ms_of(info)
                value = keys.encode_offer(beat_ms, lease_ms, offer.pids, offer.queues)
                tx.put(keys.DB_OFFERS, key, value)

        self.env.write(body)

    def servers(self) -> dict[str, dict[str, Any]]:
        found = self.env.read(
            lambda tx: {
                server_id: decode_server_info(v)
                for k, v in tx.scan(keys.DB_WORKERS)
                if (server_id := _server_of(k)) is not None
            }
        )
        now = now_ms()  # one host, one clock: local wall time is the heartbeat's clock
        for info in found.values():
            info["heartbeat_age_ms"] = now - int(info.get("heartbeat_ms", 0))
        return found

    def unregister_server(self, server_id: str) -> None:
        self.env.write(lambda tx: tx.delete(keys.DB_WORKERS, keys.server_key(server_id)))

    def maintenance(self) -> None:
        self.env.reader_check()

    # ---- checking and copying ---------------------------------------------------------
    def check(self, holder_gone: HolderGone = lambda server_id: False) -> CheckReport:
        layout = Layout(self._queue_entry, self._index_value)
        report = self.env.read(lambda tx: check_store(tx, layout, holder_gone))
        return report.add_registry(self.servers())

    def backup(self, dest: str) -> None:
        self.env.copy_to(dest)

    def listen(self) -> WakeListener:
        return WakeListener(self.path)

    def close(self) -> None:
        self.waker.close()
        self.env.close()


def _number(records: Sequence[JobRecord]) -> None:
    """Give a batch its FIFO numbers, in the order given."""
    seq = next_seqs(len(records))
    for offset, rec in enumerate(records):
        rec.seq = seq + offset


def _beat_ms_of(info: dict[str, Any]) -> int:
    beat_ms = info.get("heartbeat_ms", 0)
    return beat_ms if isinstance(beat_ms, int) and 0 <= beat_ms < 2**63 else 0


def _lease_ms_of(info: dict[str, Any]) -> int:
    lease_s = info.get("lease_s", DEFAULT_LEASE_S)
    if isinstance(lease_s, bool) or not isinstance(lease_s, (int, float)) or not lease_s > 0:
        lease_s = DEFAULT_LEASE_S  # an entry no server wrote: the default, not a crash
    return int(min(lease_s, 86_400.0) * 1000)


def _read_claim(key: bytes, raw: bytes) -> Claim | None:
    """A processing entry as a Claim. One whose value cannot be decoded is still that
    worker's claim on that job (times unknown), so recovery can put the job back; one
    whose key names no job nobody can act on (None)."""
    try:
        return decode_claim(key, raw)
    except (CorruptRecord, ValueError):
        pass
    try:
        server_id, job_id = keys.decode_processing_key(key)
    except ValueError:
        return None
    return Claim(job_id, server_id, 0) if len(job_id) == keys.JOB_ID_BYTES else None


def _server_of(key: bytes) -> str | None:
    """The server id of a registry or offer key; None for bytes no server writes."""
    try:
        return keys.decode_worker_key(key)
    except ValueError:
        return None
