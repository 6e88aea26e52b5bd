"""Stateful property test: random operations on a real LMDB store (both layouts, with
migrations between them), checked against a model and against the raw indexes; and
the same operations on the in-memory store, checked against the model and its own
``check()``."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections import Counter

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from mpqueue.records import ErrorInfo, JobRecord, JobState, Outcome, now_ms
from mpqueue.store import open_store
from mpqueue.store.base import offered_children
from mpqueue.store.codec import decode_record
from mpqueue.store.lmdb import keys
from mpqueue.store.lmdb.claims import decode_claim

NAMES = ("t.a", "t.ab", "t.b")
WORKERS = ("w1", "w2")
# Child pids a server may offer: live ones (a producer hands off only to a live child
# of a server whose heartbeat is fresh, and the servers below register such a heartbeat).
CHILDREN = tuple(sorted({1, os.getpid(), os.getppid()}))
START_MS = 4_000_000_000_000  # ahead of the real clock: legacy reads use it
QUEUE_INDEXES = {
    "optimized": {keys.DB_READY: {JobState.READY}, keys.DB_SCHEDULED: {JobState.SCHEDULED}},
    "legacy": {keys.DB_PENDING: {JobState.READY, JobState.SCHEDULED}},
}


class StoreMachine(RuleBasedStateMachine):
    start_mode = "optimized"
    memory = False  # the in-memory store (no hand-off, no other mode to migrate to)

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="mpq-prop-")
        self.mode = self.start_mode
        self.store = self._open()
        self._register()
        self.now = START_MS
        # the model: id -> [state, worker or None, attempts, max_retries]
        self.jobs: dict[str, list] = {}
        self.ever: list[str] = []
        self.pending_ids: list[str] = []
        self.offers: dict[str, list[int]] = {}  # worker -> idle children offered
        self.child: dict[str, int] = {}  # job handed off -> the child it was given to

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- helpers ----------------------------------------------------------------
    def _open(self):
        if self.memory:  # named after the directory: a second handle sees the same store
            store = open_store(f"memory://{os.path.basename(self.dir)}")
        else:
            store = open_store(self.dir, mode=self.mode, sync=False)
        store.rng = random.Random(0)  # deterministic jitter: hypothesis replays runs
        return store

    def _register(self) -> None:
        """The servers beat, fresh for the whole run: their offers stand."""
        for worker in WORKERS:
            self.store.register_server(
                worker,
                {
                    "pid": 0,
                    "host": "model",
                    "children": [],
                    "heartbeat_ms": now_ms(),
                    "monotonic": 0.0,
                    "lease_s": 86400.0,
                },
            )

    def _records(self) -> dict[str, JobRecord]:
        return {r.id: r for r in self.store.list()}

    def _record(self, priority: int, name: str, retries: int, run_at: int) -> JobRecord:
        state = JobState.SCHEDULED if run_at > self.now else JobState.READY
        job_id = f"{len(self.ever) + len(self.pending_ids):032x}"  # deterministic ids
        self.pending_ids.append(job_id)
        return JobRecord(
            id=job_id,
            name=name,
            state=state,
            payload=b"\x01",
            priority=priority,
            run_at_ms=run_at,
            created_at_ms=self.now,
            max_retries=retries,
        )

    def _set(self, job: str, state: JobState, worker: str | None, attempts: int) -> None:
        self.jobs[job][:3] = [state, worker, attempts]
        self.child.pop(job, None)  # a new claim or none: no longer a hand-off

    def _held(self, worker: str | None = None) -> list[str]:
        return sorted(
            j
            for j, m in self.jobs.items()
            if m[0] is JobState.PROCESSING and (worker is None or m[1] == worker)
        )

    def _in(self, state: JobState) -> list[str]:
        return sorted(j for j, m in self.jobs.items() if m[0] is state)

    def _add(self, recs: list[JobRecord]) -> None:
        # A single ready job goes to the first child the first offering server offers
        # (optimized only), unless older ready jobs wait.
        taker = None
        if (
            self.store.hands_off
            and len(recs) == 1
            and recs[0].state is JobState.READY
            and self.offers
            and not self._in(JobState.READY)
        ):
            taker = min(self.offers)
            pid = self.offers[taker].pop(0)
        self.store.add(recs)
        self.pending_ids.clear()
        for rec in recs:
            self.jobs[rec.id] = [rec.state, None, 0, rec.max_retries]
            self.ever.append(rec.id)
        if taker is not None:
            assert recs[0].state is JobState.PROCESSING and recs[0].attempts == 1
            self.jobs[recs[0].id][:3] = [JobState.PROCESSING, taker, 1]
            self.child[recs[0].id] = pid
            if not self.offers[taker]:
                del self.offers[taker]
        else:
            assert all(r.state in (JobState.READY, JobState.SCHEDULED) for r in recs)

    # ---- rules ------------------------------------------------------------------
    @rule(
        n=st.integers(1, 3),
        priority=st.integers(-2, 2),
        name=st.sampled_from(NAMES),
        retries=st.integers(0, 2),
    )
    def add(self, n, priority, name, retries):
        self._add([self._record(priority, name, retries, self.now) for _ in range(n)])

    @rule(
        delay=st.integers(1, 5000),
        priority=st.integers(-2, 2),
        name=st.sampled_from(NAMES),
        retries=st.integers(0, 2),
    )
    def schedule(self, delay, priority, name, retries):
        self._add([self._record(priority, name, retries, self.now + delay)])

    def _promote(self) -> None:
        recs = self._records()
        due = {
            j
            for j, m in self.jobs.items()
            if m[0] is JobState.SCHEDULED and recs[j].run_at_ms <= self.now
        }
        count = self.store.promote_due(self.now)
        if self.mode == "optimized":
            assert count == len(due)
            for j in due:
                self.jobs[j][0] = JobState.READY
        else:
            assert count == 0  # legacy checks due-ness job by job at each poll

    @rule(advance=st.integers(0, 3000))
    def promote(self, advance):
        self.now += advance
        self._promote()

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 4))
    def claim(self, worker, limit):
        self._promote()
        recs = self._records()
        claimable = [
            recs[j]
            for j, m in self.jobs.items()
            if m[0] is JobState.READY
            or (m[0] is JobState.SCHEDULED and recs[j].run_at_ms <= self.now)
        ]
        claimable.sort(key=lambda r: (-r.priority, r.seq))
        expect = min(limit, 1 if self.mode == "legacy" else limit, len(claimable))
        got = self.store.claim(worker, limit, self.now)
        assert [r.id for r in got] == [r.id for r in claimable[:expect]]
        for rec in got:
            model = self.jobs[rec.id]
            assert rec.attempts == model[2] + 1 and rec.state is JobState.PROCESSING
            self._set(rec.id, JobState.PROCESSING, worker, rec.attempts)

    @rule(
        worker=st.sampled_from(WORKERS),
        limit=st.integers(0, 3),
        idle=st.lists(st.sampled_from(CHILDREN), unique=True, max_size=3),
    )
    def cycle_offering(self, worker, limit, idle):
        """The server's cycle: claim, and offer the children left idle for hand-off."""
        self._promote()
        ready = len(self._in(JobState.READY)) if self.mode == "optimized" else None
        _, got = self.store.finish_and_claim([], worker, limit, self.now, idle_children=idle)
        for rec in got:
            model = self.jobs[rec.id]
            assert rec.attempts == model[2] + 1 and rec.state is JobState.PROCESSING
            self._set(rec.id, JobState.PROCESSING, worker, rec.attempts)
        if ready is not None:
            assert len(got) == min(limit, ready)
        if self.store.hands_off:
            offered = offered_children(idle, limit, len(got))
            if offered:
                self.offers[worker] = offered
            elif limit > 0 or idle:
                self.offers.pop(worker, None)

    def _handed(self, worker: str, pid: int) -> list[str]:
        return [j for j in self._held(worker) if self.child.get(j) == pid]

    @rule(worker=st.sampled_from(WORKERS), pid=st.sampled_from(CHILDREN))
    def recall(self, worker, pid):
        """A child is gone: its offer is withdrawn, its untaken hand-offs returned."""
        handed = self._handed(worker, pid)
        known = set(handed[:1])  # one the server knows it took
        recalled = self.store.recall(worker, pid, known)
        assert sorted(r.id for r in recalled) == [j for j in handed if j not in known]
        if self.mode == "optimized" and worker in self.offers:
            self.offers[worker] = [p for p in self.offers[worker] if p != pid]
            if not self.offers[worker]:
                del self.offers[worker]

    @precondition(lambda self: self.ever)
    @rule(data=st.data(), worker=st.sampled_from(WORKERS), pid=st.sampled_from(CHILDREN))
    def handed_job(self, data, worker, pid):
        """A child runs a job named in a wake-up only while it is handed to that child."""
        job = data.draw(st.sampled_from(self.ever))
        rec = self.store.handed_job(worker, job, pid)
        if job in self._handed(worker, pid):
            assert rec is not None and rec.id == job
        else:
            assert rec is None

    @precondition(lambda self: self._held())
    @rule(data=st.data())
    def complete(self, data):
        job = data.draw(st.sampled_from(self._held()))
        worker = self.jobs[job][1]
        assert self.store.finish([Outcome.done(job, worker, b"\x01r")], self.now) == [True]
        self._set(job, JobState.DONE, None, self.jobs[job][2])

    @precondition(lambda self: self._held())
    @rule(data=st.data(), retryable=st.booleans(), delay=st.one_of(st.none(), st.floats(0, 3)))
    def fail(self, data, retryable, delay):
        job = data.draw(st.sampled_from(self._held()))
        model = self.jobs[job]
        error = ErrorInfo("E", f"attempt {model[2]}", attempt=model[2])
        outcome = Outcome.failed(job, model[1], error, retryable=retryable, retry_delay_s=delay)
        assert self.store.finish([outcome], self.now) == [True]
        rec = self.store.get(job)
        if retryable and model[2] <= model[3]:
            self._set(job, JobState.SCHEDULED, None, model[2])
            assert rec.run_at_ms >= self.now
        else:
            self._set(job, JobState.DEAD, None, model[2])
        assert rec.errors[-1] == error

    @precondition(lambda self: self._held())
    @rule(data=st.data())
    def release(self, data):
        job = data.draw(st.sampled_from(self._held()))
        model = self.jobs[job]
        assert self.store.finish([Outcome.released(job, model[1])], self.now) == [True]
        self._set(job, JobState.READY, None, model[2] - 1)

    @precondition(lambda self: self.ever)
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def late_ack(self, data, worker):
        job = data.draw(st.sampled_from(self.ever))
        model = self.jobs.get(job)
        if model is not None and model[0] is JobState.PROCESSING and model[1] == worker:
            return  # that would be a real ack
        assert self.store.finish([Outcome.done(job, worker, b"\x01")], self.now) == [False]

    @rule(worker=st.sampled_from(WORKERS))
    def requeue_server(self, worker):
        held = self._held(worker)
        assert sorted(self.store.requeue_server(worker)) == held
        if self.mode == "optimized":
            self.offers.pop(worker, None)  # nothing is handed to a server that is gone
        for job in held:
            self._set(job, JobState.READY, None, self.jobs[job][2] - 1)

    @precondition(lambda self: self._in(JobState.DEAD))
    @rule(data=st.data())
    def requeue_dead(self, data):
        job = data.draw(st.sampled_from(self._in(JobState.DEAD)))
        rec = self.store.requeue_dead(job, self.now)
        assert rec.state is JobState.READY and rec.attempts == 0
        self.jobs[job][:3] = [JobState.READY, None, 0]

    @precondition(lambda self: self.ever)
    @rule(data=st.data())
    def delete(self, data):
        job = data.draw(st.sampled_from(self.ever))
        assert self.store.delete(job) == (job in self.jobs)
        self.jobs.pop(job, None)
        self.child.pop(job, None)

    @rule(advance=st.integers(0, 3000), ttl=st.integers(0, 4000))
    def expire(self, advance, ttl):
        self.now += advance
        cutoff = self.now - ttl
        recs = self._records()
        gone = {j for j in self._in(JobState.DONE) if recs[j].finished_at_ms < cutoff}
        assert self.store.expire_finished(cutoff) == len(gone)
        for job in gone:
            del self.jobs[job]

    @rule()
    def purge_dead(self):
        dead = self._in(JobState.DEAD)
        assert self.store.purge_dead() == len(dead)
        for job in dead:
            del self.jobs[job]

    @rule()
    def reopen_in_the_other_mode(self):
        if self.memory:  # one mode only: a second handle, then the first one closed
            second = self._open()
            self.store.close()
            self.store = second
            return
        for worker in WORKERS:  # a store changes mode only while no server serves it
            self.store.unregister_server(worker)
        self.store.close()
        self.mode = "legacy" if self.mode == "optimized" else "optimized"
        self.store = self._open()
        self._register()

    # ---- invariants ---------------------------------------------------------------
    @invariant()
    def store_check_passes(self):
        """The store's own check (``mpqueue check``) agrees: nothing inconsistent. The
        servers here never beat again, so their claims count as recoverable."""
        report = self.store.check(holder_gone=lambda server_id: True)
        assert report.code == 0, report

    @invariant()
    def indexes_match_records(self):
        if self.memory:
            return  # LMDB's raw indexes; the memory store's are read by its check()
        mode = self.mode

        def read(tx):
            return {db: [(k, v) for k, v in tx.scan(db)] for db in keys.ALL_DBS}

        raw = self.store.env.read(read)
        records = {keys.decode_job_key(k): decode_record(v) for k, v in raw[keys.DB_JOBS]}
        assert set(records) == set(self.jobs)

        by_name = Counter()
        for key, value in raw[keys.DB_BY_NAME]:
            name, job = keys.decode_by_name_key(key)
            by_name[job] += 1
            assert records[job].name == name
            if mode == "optimized":
                assert decode_record(value) == records[job]
            else:
                assert value == b""
        assert set(by_name) == set(records) and set(by_name.values()) <= {1}

        homes: Counter = Counter()
        for db, states in QUEUE_INDEXES[mode].items():
            for key, _ in raw[db]:
                job = key[-keys.JOB_ID_BYTES :].decode()
                rec = records[job]
                assert rec.state in states, (db, rec)
                if db == keys.DB_READY:
                    assert keys.decode_ready_key(key) == (rec.priority, rec.seq, job)
                elif db == keys.DB_SCHEDULED:
                    assert keys.decode_scheduled_key(key) == (
                        rec.run_at_ms,
                        rec.priority,
                        rec.seq,
                        job,
                    )
                homes[job] += 1
        for other in set(QUEUE_INDEXES["optimized"]) | set(QUEUE_INDEXES["legacy"]):
            if other not in QUEUE_INDEXES[mode]:
                assert raw[other] == [], f"{other!r} must be empty in {mode} layout"
        for key, value in raw[keys.DB_PROCESSING]:
            worker, job = keys.decode_processing_key(key)
            assert records[job].state is JobState.PROCESSING
            assert self.jobs[job][1] == worker
            assert decode_claim(key, value).child_pid == self.child.get(job, 0)
            homes[job] += 1
        for key, _ in raw[keys.DB_DEAD]:
            job = keys.decode_job_key(key)
            assert records[job].state is JobState.DEAD
            homes[job] += 1
        for key, _ in raw[keys.DB_DONE]:
            finished, job = keys.decode_done_key(key)
            assert records[job].state is JobState.DONE
            assert records[job].finished_at_ms == finished
            homes[job] += 1
        assert set(homes) == set(records) and set(homes.values()) <= {1}, homes

        offers = {
            keys.decode_worker_key(k): keys.decode_offer(v)[2] for k, v in raw[keys.DB_OFFERS]
        }
        assert offers == self.offers and all(offers.values())

        seqs = [r.seq for r in records.values() if r.state in (JobState.READY, JobState.SCHEDULED)]
        assert len(seqs) == len(set(seqs)), "queue order needs unique seqs"

    @invariant()
    def records_match_model(self):
        records = self._records()
        for job, (state, _, attempts, _) in self.jobs.items():
            rec = records[job]
            assert rec.state is state, (job, rec.state, state)
            assert rec.attempts == attempts >= 0
        stats = self.store.stats()
        assert stats["total"] == len(self.jobs)
        assert stats["processing"] == len(self._held())
        assert stats["dead"] == len(self._in(JobState.DEAD))
        assert stats["done"] == len(self._in(JobState.DONE))
        assert stats["ready"] + stats["scheduled"] == len(self._in(JobState.READY)) + len(
            self._in(JobState.SCHEDULED)
        )


PROPERTY_SETTINGS = settings(
    max_examples=75,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class OptimizedFirst(StoreMachine):
    start_mode = "optimized"


class LegacyFirst(StoreMachine):
    start_mode = "legacy"


class MemoryStoreMachine(StoreMachine):
    memory = True


TestOptimizedStore = OptimizedFirst.TestCase
TestOptimizedStore.settings = PROPERTY_SETTINGS
TestLegacyStore = LegacyFirst.TestCase
TestLegacyStore.settings = PROPERTY_SETTINGS
TestMemoryStore = MemoryStoreMachine.TestCase
TestMemoryStore.settings = PROPERTY_SETTINGS
