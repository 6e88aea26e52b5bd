"""Stateful property test: random operations on a real LMDB store (both layouts, with
migrations between them), checked against a model and against the raw indexes; and
the same operations on the in-memory store, checked against the model, its tables and
its own ``check()``. The operations include workflows: jobs that depend on others
(waiting, released, cancelled down the graph) and jobs with unique keys; the model of
those is ``tests/support/graph_model.py``. Jobs may have a deadline to start
(``expires_at_ms``) while the clock moves on: no job is ever claimed past its deadline,
one its server reaches past its deadline after the claim is ended (``Outcome.expired``),
and one that expires ends as the model says.

``MPQUEUE_STATE_MACHINE_EXAMPLES=N`` runs N examples per machine instead of the usual
number (a longer search, by hand)."""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from collections import Counter

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mpqueue.cancellation import CANCELLABLE
from mpqueue.concurrency import TASK, UNBOUNDED, Limit
from mpqueue.errors import ConfigError
from mpqueue.history import SIZE, TIERS
from mpqueue.pausing import PauseChange, Paused
from mpqueue.periodic import Periodic, fire_due
from mpqueue.periodic_slots import Spec
from mpqueue.queues import Selection, depths_by_queue
from mpqueue.rates import Rate
from mpqueue.records import ErrorInfo, JobRecord, JobState, Outcome, Progress, new_job_id, now_ms
from mpqueue.schedules import ScheduleSpec
from mpqueue.store import open_store
from mpqueue.store.base import offered_children
from mpqueue.store.codec import decode_record
from mpqueue.store.lmdb import keys
from mpqueue.store.lmdb.claims import decode_claim

from ..support.graph_model import ENDED, FAILED, GraphModel

NAMES = ("t.a", "t.ab", "t.b")
LIMITED = "t.b"  # the task with a concurrency limit (the rule set_limit changes it)
QUEUES = ("default", "qa", "qb")  # named queues: the default and two others
KEYS = ("k1", "k2")  # few: jobs of one task often share a key
WORKERS = ("w1", "w2")
# Child pids a server may offer: live ones (a producer hands off only to a live child
# of a server whose heartbeat is fresh, and the servers below register such a heartbeat).
CHILDREN = tuple(sorted({1, os.getpid(), os.getppid()}))
START_MS = 4_000_000_000_000  # ahead of the real clock: legacy reads use it
# Periodic schedules: what the code of each server defines (name -> interval ms); s2
# defines p.x at another interval (a changed spec when it declares) and no p.y.
SCHEDULE_SERVERS = {"s1": {"p.x": 1000, "p.y": 3000}, "s2": {"p.x": 2000}}
CANCEL_TEXT = "cancelled by the machine"
QUEUED = (JobState.WAITING, JobState.SCHEDULED, JobState.READY)
QUEUE_INDEXES = {
    "optimized": {
        keys.DB_READY: {JobState.READY},
        keys.DB_QUEUED: {JobState.READY},
        keys.DB_LANED: {JobState.READY},
        keys.DB_PAUSED: {JobState.READY},
        keys.DB_SCHEDULED: {JobState.SCHEDULED},
    },
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
        self.graph = GraphModel(self.jobs)  # dependencies and keys
        self.requested: set[str] = set()  # running jobs whose cancel was requested
        self.names: dict[str, str] = {}  # job -> its task's name
        self.queue_of: dict[str, str] = {}  # job -> its named queue
        self.progress: dict[str, Progress] = {}  # job -> its last progress report
        self.paused_names: set[str] = set()  # paused tasks: their ready jobs are held
        self.paused_all = False  # the whole queue paused: claims take nothing
        self.history: dict[tuple[int, int], tuple[int, dict]] = {}  # (tier, slot) -> point
        self.sampled_at = START_MS  # the history's own clock: samples move it on
        # Periodic schedules: name -> [every_ms, last slot, next due, paused, retired,
        # declarers]; the servers whose code defines some (SCHEDULE_SERVERS) that are
        # alive; how often each (name, slot) was enqueued.
        self.schedules: dict[str, list] = {}
        self.alive: set[str] = set()
        self.slots_fired: Counter[tuple[str, int]] = Counter()
        self.limit: int | None = 2  # LIMITED's concurrency (None: none)
        self.rate: Rate | None = None  # LIMITED's rate (None: none)
        # The rate's log as the model keeps it: each start of LIMITED's jobs at its time
        # rounded up to the rate's step (what rates.py promises a start counts for).
        self.starts: list[int] = []
        assert self.store.set_limit(TASK, LIMITED, self.limit)

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
            self.store.register_server(worker, _beat_info())

    def _records(self) -> dict[str, JobRecord]:
        return {r.id: r for r in self.store.list()}

    def _record(self, priority: int, name: str, retries: int, run_at: int, **flow) -> JobRecord:
        """A new job; ``flow``: its workflow fields (depends_on, allow_failures, key)."""
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
            **flow,
        )

    def _set(self, job: str, state: JobState, worker: str | None, attempts: int) -> None:
        self.jobs[job][:3] = [state, worker, attempts]
        self.child.pop(job, None)  # a new claim or none: no longer a hand-off

    def _cancelled_instead(self, job: str, clock_ms: int | None = None) -> bool:
        """A held job whose outcome was just committed: if its cancel was requested, it
        ended cancelled, whatever the outcome was (the model says so; True)."""
        if job not in self.requested:
            return False
        self.requested.discard(job)
        self._set(job, JobState.CANCELLED, None, self.jobs[job][2])
        self.graph.end(job, JobState.CANCELLED, self.now if clock_ms is None else clock_ms)
        return True

    def _held(self, worker: str | None = None) -> list[str]:
        return sorted(
            j
            for j, m in self.jobs.items()
            if m[0] is JobState.PROCESSING and (worker is None or m[1] == worker)
        )

    def _in(self, state: JobState) -> list[str]:
        return sorted(j for j, m in self.jobs.items() if m[0] is state)

    def _running_limited(self) -> int:
        return sum(1 for j in self._held() if self.names[j] == LIMITED)

    @property
    def _limited(self) -> bool:
        """Whether LIMITED has a limit entry (a concurrency, a rate or both)."""
        return self.limit is not None or self.rate is not None

    def _room(self) -> int:
        """How many of LIMITED's jobs may start now."""
        free = UNBOUNDED if self.limit is None else self.limit - self._running_limited()
        if self.rate is not None:
            recent = sum(1 for at in self.starts if at > self.now - self.rate.window_ms)
            free = min(free, self.rate.count - recent)
        return max(free, 0)

    def _within_limit(self, candidates: list[JobRecord]) -> list[JobRecord]:
        """``candidates`` (in claim order) but the jobs of LIMITED a claim passes over:
        those beyond its free slots."""
        if not self._limited:
            return candidates
        free = self._room()
        kept = []
        for rec in candidates:
            if rec.name == LIMITED:
                if free <= 0:
                    continue
                free -= 1
            kept.append(rec)
        return kept

    def _unheld_ready(self) -> list[str]:
        """Ready jobs in the claim index: not those of a paused task."""
        return [j for j in self._in(JobState.READY) if self.names[j] not in self.paused_names]

    def _add(self, recs: list[JobRecord]) -> None:
        # A single plain ready job goes to the first child the first offering server
        # offers (optimized only), unless older ready jobs wait.
        taker = None
        if (
            self.store.hand_off is not None
            and len(recs) == 1
            and recs[0].state is JobState.READY
            and not recs[0].depends_on
            and recs[0].key is None
            and self.offers
            and not self.paused_all
            and recs[0].name not in self.paused_names
            and (not self._limited or recs[0].name != LIMITED)
            and not [
                j for j in self._unheld_ready() if not self._limited or self.names[j] != LIMITED
            ]
        ):
            taker = min(self.offers)
            pid = self.offers[taker].pop(0)
        given = [(r.id, r.state, r.depends_on, r.max_retries) for r in recs]
        queues = [r.queue for r in recs]
        self.store.add(recs)
        self.pending_ids.clear()
        self.ever += [job_id for job_id, *_ in given]
        replaced: dict[str, str] = {}  # a job whose key was held -> the holder
        for rec, queue, (job_id, state, depends_on, retries) in zip(recs, queues, given):
            holder = None if rec.key is None else self.graph.holder(rec.name, rec.key)
            if holder is not None:  # not added: the caller's record reads the holder's
                assert rec.id == holder and rec.state is self.jobs[holder][0], (rec, holder)
                replaced[job_id] = holder
                continue
            depends_on = tuple(replaced.get(dep, dep) for dep in depends_on)
            assert rec.id == job_id and rec.depends_on == depends_on
            key = None if rec.key is None else (rec.name, rec.key)
            args = (state, depends_on, rec.allow_failures, rec.run_at_ms, key)
            state = self.graph.enter(job_id, *args)
            assert rec.state is (JobState.PROCESSING if taker else state), (rec, state)
            self.jobs[job_id] = [state, None, 0, retries]
            self.names[job_id] = rec.name
            self.queue_of[job_id] = queue
            assert rec.queue == queue
            if rec.expires_at_ms is not None:
                self.graph.deadline[job_id] = rec.expires_at_ms
        if taker is not None:
            assert recs[0].state is JobState.PROCESSING and recs[0].attempts == 1
            self.jobs[recs[0].id][:3] = [JobState.PROCESSING, taker, 1]
            self.child[recs[0].id] = pid
            if not self.offers[taker]:
                del self.offers[taker]

    # ---- rules ------------------------------------------------------------------
    @rule(
        n=st.integers(1, 3),
        priority=st.integers(-2, 2),
        name=st.sampled_from(NAMES),
        retries=st.integers(0, 2),
        queue=st.sampled_from(QUEUES),
    )
    def add(self, n, priority, name, retries, queue):
        recs = [self._record(priority, name, retries, self.now, queue=queue) for _ in range(n)]
        self._add(recs)

    @rule(data=st.data(), n=st.integers(1, 3), priority=st.integers(-2, 2))
    def add_workflow(self, data, n, priority):
        """Jobs that depend on jobs in the store or earlier in the batch, or have a key."""
        recs: list[JobRecord] = []
        for _ in range(n):
            stored = self._some(data, sorted(self.jobs))
            depends_on = stored + self._some(data, [r.id for r in recs])  # earlier in the batch
            run_at = self.now + data.draw(st.sampled_from((0, 0, 2000)))
            ttl = data.draw(st.one_of(st.none(), st.integers(1, 3000)))
            rec = self._record(
                priority,
                data.draw(st.sampled_from(NAMES[::2])),  # two tasks: keys often collide
                data.draw(st.integers(0, 2)),
                run_at,
                depends_on=tuple(depends_on),
                allow_failures=data.draw(st.booleans()),
                key=data.draw(st.one_of(st.none(), st.sampled_from(KEYS))),
                expires_at_ms=None if ttl is None else run_at + ttl,
                queue=data.draw(st.sampled_from(QUEUES)),
            )
            recs.append(rec)
        self._add(recs)

    @rule(
        n=st.integers(1, 3),
        priority=st.integers(-2, 2),
        name=st.sampled_from(NAMES),
        delay=st.sampled_from((0, 0, 500)),
        ttl=st.integers(1, 3000),
        advance=st.integers(0, 3000),
    )
    def add_expiring(self, n, priority, name, delay, ttl, advance):
        """Jobs with a deadline ``ttl`` ms after their run time, then time passes."""
        run_at = self.now + delay
        recs = [
            self._record(priority, name, 1, run_at, expires_at_ms=run_at + ttl) for _ in range(n)
        ]
        self._add(recs)
        self.now += advance

    @staticmethod
    def _some(data, ids: list[str]) -> list[str]:
        return data.draw(st.lists(st.sampled_from(ids), unique=True, max_size=2)) if ids else []

    @rule(data=st.data(), at=st.integers(0, 2))
    def add_on_a_missing_job(self, data, at):
        """A batch naming a job that is not in the store (deleted, or never added) is
        refused whole: ConfigError, nothing added."""
        gone = [j for j in self.ever if j not in self.jobs] + [f"{10**9:032x}"]
        recs = [self._record(0, NAMES[0], 0, self.now) for _ in range(3)]
        missing = data.draw(st.sampled_from(gone))
        recs[at] = recs[at].evolve(depends_on=(*[r.id for r in recs[:at]], missing))
        before = self._records(), self.store.stats()
        try:
            self.store.add(recs)
        except ConfigError as exc:
            assert missing in str(exc)
        else:
            raise AssertionError(f"added a job that depends on a missing job {missing}")
        self.ever += self.pending_ids  # ids spent: never reused
        self.pending_ids.clear()
        assert (self._records(), self.store.stats()) == before

    @rule(
        delay=st.integers(1, 5000),
        priority=st.integers(-2, 2),
        name=st.sampled_from(NAMES),
        retries=st.integers(0, 2),
        queue=st.sampled_from(QUEUES),
    )
    def schedule(self, delay, priority, name, retries, queue):
        self._add([self._record(priority, name, retries, self.now + delay, queue=queue)])

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
            lapsed = sorted(j for j in due if self.graph.lapsed(j, self.now))
            for j in due:
                self.jobs[j][0] = JobState.EXPIRED if j in lapsed else JobState.READY
            for j in lapsed:  # ended at its promotion, never queued
                self.graph.end(j, JobState.EXPIRED, self.now)
        else:
            assert count == 0  # legacy checks due-ness job by job at each poll

    @rule(advance=st.integers(0, 3000))
    def promote(self, advance):
        self.now += advance
        self._promote()

    def _claimable(self, served: list[str] | None = None) -> list[JobRecord]:
        """The jobs a claim (of ``served`` queues, None: all) takes, in its order."""
        self._promote()
        recs = self._records()
        claimable = [
            recs[j]
            for j, m in self.jobs.items()
            if (
                m[0] is JobState.READY
                or (m[0] is JobState.SCHEDULED and recs[j].run_at_ms <= self.now)
            )
            and self.names[j] not in self.paused_names
            and not self.paused_all
            and (served is None or self.queue_of[j] in served)
        ]
        if served is None:
            claimable.sort(key=lambda r: (-r.priority, r.seq))
        else:
            claimable.sort(key=lambda r: (served.index(r.queue), -r.priority, r.seq))
        return self._within_limit(claimable)

    @rule(worker=st.sampled_from(WORKERS), limit=st.integers(1, 4))
    def claim(self, worker, limit):
        claimable = self._claimable()
        expect = min(limit, 1 if self.mode == "legacy" else limit, len(claimable))
        got = self.store.claim(worker, limit, self.now)
        self._claimed(worker, limit, got, [r.id for r in claimable[:expect]])

    @rule(
        worker=st.sampled_from(WORKERS),
        limit=st.integers(1, 4),
        served=st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True),
    )
    def claim_queues(self, worker, limit, served):
        """A claim of some queues, in order of preference: each queue's jobs in
        priority and FIFO order, a later queue's only once the earlier ones have none."""
        claimable = self._claimable(served)
        expect = min(limit, 1 if self.mode == "legacy" else limit, len(claimable))
        got = self.store.claim(worker, limit, self.now, Selection(tuple(served)))
        assert all(r.queue in served for r in got), got
        self._claimed(worker, limit, got, [r.id for r in claimable[:expect]], served)

    def _claimed(
        self,
        worker: str,
        limit: int,
        got: list[JobRecord],
        predicted: list[str] | None,
        served: list[str] | None = None,
    ) -> None:
        """Apply a claim of up to ``limit`` jobs to the model. While no job expired on
        the way, the store took ``predicted`` (None: not predicted); a job that did
        expire (past its deadline, never started) was ended instead of claimed, so the
        claim only had to take what was left, in order."""
        recs = self._records()
        ended = sorted(
            j
            for j, m in self.jobs.items()
            if m[0] in (JobState.READY, JobState.SCHEDULED) and recs[j].state is JobState.EXPIRED
        )
        for job in ended:
            assert self.graph.lapsed(job, self.now), f"{job} expired before its deadline"
            self.jobs[job][0] = JobState.EXPIRED
        for job in ended:
            self.graph.end(job, JobState.EXPIRED, self.now)
        for rec in got:
            model = self.jobs[rec.id]
            assert model[0] in (JobState.READY, JobState.SCHEDULED), (rec, model)
            assert not self.graph.lapsed(rec.id, self.now), f"claimed {rec.id} past its deadline"
            assert rec.attempts == model[2] + 1 and rec.state is JobState.PROCESSING
            self._set(rec.id, JobState.PROCESSING, worker, rec.attempts)
            if rec.name == LIMITED and self.rate is not None:
                step = self.rate.step_ms
                self.starts.append(-(-self.now // step) * step)
        if not ended and predicted is not None:
            assert [r.id for r in got] == predicted
        if self.paused_all or limit <= 0:
            assert got == [] and ended == []
            return
        queued = [
            j
            for j in self._unheld_ready() + self._in(JobState.SCHEDULED)
            if self.names[j] not in self.paused_names
            and (self.jobs[j][0] is JobState.READY or recs[j].run_at_ms <= self.now)
            and (served is None or self.queue_of[j] in served)
            and (not self._limited or self.names[j] != LIMITED or self._room() > 0)
        ]
        if self.mode == "legacy":  # one job per poll, which reads every job: none lapsed
            assert len(got) <= 1 and not [j for j in queued if self.graph.lapsed(j, self.now)]
        if len(got) < min(limit, 1 if self.mode == "legacy" else limit):
            assert queued == [], f"a claim left {queued} though it took fewer than asked"

    @rule(
        worker=st.sampled_from(WORKERS),
        limit=st.integers(0, 3),
        idle=st.lists(st.sampled_from(CHILDREN), unique=True, max_size=3),
    )
    def cycle_offering(self, worker, limit, idle):
        """The server's cycle: claim, and offer the children left idle for hand-off."""
        self._promote()
        ready = None
        if self.mode == "optimized":
            recs = self._records()
            ready = len(self._within_limit([recs[j] for j in self._unheld_ready()]))
        if self.paused_all:
            ready = 0
        hand_off = self.store.hand_off
        if hand_off is not None:
            _, got = hand_off.finish_and_claim([], worker, limit, self.now, idle_children=idle)
        else:  # a store without hand-off takes no idle children
            _, got = self.store.finish_and_claim([], worker, limit, self.now)
        before = len(self._in(JobState.EXPIRED))
        self._claimed(worker, limit, got, None)
        if ready is not None and len(self._in(JobState.EXPIRED)) == before:
            assert len(got) == min(limit, ready)
        if hand_off is not None:
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
        hand_off = self.store.hand_off  # without hand-off, nothing was handed
        recalled = [] if hand_off is None else hand_off.recall(worker, pid, known)
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
        hand_off = self.store.hand_off
        if hand_off is None:
            return  # the legacy layout has none to ask; its claims keep their child pids
        rec = hand_off.handed_job(worker, job, pid)
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
        if self._cancelled_instead(job):
            return
        self._set(job, JobState.DONE, None, self.jobs[job][2])
        self.graph.end(job, JobState.DONE, self.now)

    @precondition(lambda self: len(self._held()) >= 2)
    @rule(data=st.data())
    def end_together(self, data):
        """Several held jobs end in one finish, done or dead (no retry): the store settles
        their dependents together, the model one end after another."""
        held = self._held()
        jobs = data.draw(st.lists(st.sampled_from(held), min_size=2, max_size=4, unique=True))
        dead = data.draw(st.lists(st.booleans(), min_size=len(jobs), max_size=len(jobs)))
        outcomes = [
            Outcome.failed(job, self.jobs[job][1], ErrorInfo("E", "x"), retryable=False)
            if is_dead
            else Outcome.done(job, self.jobs[job][1], b"\x01r")
            for job, is_dead in zip(jobs, dead)
        ]
        assert self.store.finish(outcomes, self.now) == [True] * len(jobs)
        for job, is_dead in zip(jobs, dead):
            if self._cancelled_instead(job):
                continue
            end = JobState.DEAD if is_dead else JobState.DONE
            self._set(job, end, None, self.jobs[job][2])
            self.graph.end(job, end, self.now)

    @precondition(lambda self: self._held())
    @rule(data=st.data(), retryable=st.booleans(), delay=st.one_of(st.none(), st.floats(0, 3)))
    def fail(self, data, retryable, delay):
        job = data.draw(st.sampled_from(self._held()))
        model = self.jobs[job]
        error = ErrorInfo("E", f"attempt {model[2]}", attempt=model[2])
        outcome = Outcome.failed(job, model[1], error, retryable=retryable, retry_delay_s=delay)
        assert self.store.finish([outcome], self.now) == [True]
        rec = self.store.get(job)
        if self._cancelled_instead(job):
            assert rec.errors[-1].message == CANCEL_TEXT and rec.result is None
            return
        if retryable and model[2] <= model[3]:
            self._set(job, JobState.SCHEDULED, None, model[2])
            assert rec.run_at_ms >= self.now
        else:
            self._set(job, JobState.DEAD, None, model[2])
            self.graph.end(job, JobState.DEAD, self.now)
        assert rec.errors[-1] == error

    @precondition(lambda self: self._held())
    @rule(data=st.data())
    def release(self, data):
        job = data.draw(st.sampled_from(self._held()))
        model = self.jobs[job]
        assert self.store.finish([Outcome.released(job, model[1])], self.now) == [True]
        if not self._cancelled_instead(job):
            self._set(job, JobState.READY, None, model[2] - 1)

    def _first_runs_with_deadline(self) -> list[str]:
        """Held jobs on their first attempt that have a deadline: a server may reach
        their start only after it."""
        return [j for j in self._held() if self.jobs[j][2] == 1 and j in self.graph.deadline]

    @precondition(lambda self: self._first_runs_with_deadline())
    @rule(data=st.data(), late_ms=st.integers(0, 2000))
    def expire_at_start(self, data, late_ms):
        """A claimed job waited (in a prefetch) past its deadline: its server reports
        ``expired`` instead of running it, and the store ends it as a claim would have:
        expired, uncharged, its dependents settled as for a failed job."""
        job = data.draw(st.sampled_from(self._first_runs_with_deadline()))
        self.now = max(self.now, self.graph.deadline[job] + late_ms)
        outcome = Outcome.expired(job, self.jobs[job][1])
        assert self.store.finish([outcome], self.now) == [True]
        if self._cancelled_instead(job):  # its cancel was committed first
            return
        self._set(job, JobState.EXPIRED, None, 0)
        self.graph.end(job, JobState.EXPIRED, self.now)
        rec = self.store.get(job)
        assert rec.finished_at_ms == self.now and rec.errors[-1].at_ms == self.now

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
        clock = now_ms()  # a put-back that ends a job settles by the wall clock
        for job in held:
            if not self._cancelled_instead(job, clock):
                self._set(job, JobState.READY, None, self.jobs[job][2] - 1)

    @precondition(lambda self: self._in(JobState.DEAD))
    @rule(data=st.data())
    def requeue_dead(self, data):
        job = data.draw(st.sampled_from(self._in(JobState.DEAD)))
        # now, or a scheduled re-drive (due later, or at a time already past: now)
        delay = data.draw(st.sampled_from([None, None, -5, 1500]))
        run_at = None if delay is None else self.now + delay
        key = self.graph.key_of.get(job)
        holder = None if key is None else self.graph.holder(*key)
        try:
            rec = self.store.requeue_dead(job, self.now, run_at)
        except ConfigError as exc:  # its key is another live job's now
            assert holder is not None and holder in str(exc), (job, holder, exc)
            return
        assert holder is None, f"requeued {job} though {holder} holds its key"
        later = run_at is not None and run_at > self.now
        state = JobState.SCHEDULED if later else JobState.READY
        assert rec.state is state and rec.attempts == 0
        assert rec.run_at_ms == (run_at if later else self.now)
        self.jobs[job][:3] = [state, None, 0]
        self.graph.take_back(job)

    @precondition(lambda self: self.ever)
    @rule(data=st.data())
    def delete(self, data):
        job = data.draw(st.sampled_from(self.ever))
        clock = now_ms()  # a delete settles what waits for the job by the wall clock
        assert self.store.delete(job) == (job in self.jobs)
        self._forget(job, clock)

    def _forget(self, job: str, clock_ms: int) -> None:
        """A job deleted: the jobs waiting for it are settled if it had not ended."""
        model = self.jobs.get(job)
        if model is None:
            return
        if model[0] not in ENDED:
            self.graph.end(job, None, clock_ms)
        self.graph.forget(job)
        del self.jobs[job]
        self.child.pop(job, None)
        self.requested.discard(job)
        self.progress.pop(job, None)

    @precondition(lambda self: self.ever)
    @rule(data=st.data())
    def cancel(self, data):
        """Cancel some jobs by id (ended, deleted or never added ones too): queued ones
        end cancelled, running ones get a request, and their dependents are settled
        once all of them are (as every store does)."""
        ids = data.draw(st.lists(st.sampled_from(self.ever), min_size=1, max_size=4))
        ids.append(data.draw(st.sampled_from((f"{10**9:032x}", ids[0]))))  # missing, repeat
        report = self.store.cancel(ids, CANCEL_TEXT, self.now)
        expect: dict[str, list[str]] = {k: [] for k in report.as_dict()}
        ended = []
        for job in dict.fromkeys(ids):
            state = self.jobs[job][0] if job in self.jobs else None
            if state is None:
                expect["missing"].append(job)
            elif state in QUEUED:
                expect["cancelled"].append(job)
                self.graph.waiting.pop(job, None)
                self.jobs[job][:2] = [JobState.CANCELLED, None]
                ended.append(job)
            elif state is JobState.PROCESSING:
                expect["requested"].append(job)
                self.requested.add(job)
            else:
                expect["finished"].append(job)
        assert report.as_dict() == expect
        for job in ended:
            self.graph.end(job, JobState.CANCELLED, self.now)

    @rule(
        data=st.data(),
        name=st.one_of(st.none(), st.sampled_from(NAMES)),
        states=st.lists(st.sampled_from(CANCELLABLE), min_size=1, max_size=4, unique=True),
        limit=st.integers(1, 3),
    )
    def cancel_matching(self, data, name, states, limit):
        """A bulk cancel, batch by batch: each batch cancels only jobs that match, and
        when the walk ends no queued job that matched at its start is left and every
        matching running one has a request."""

        def matches(job: str) -> bool:
            state = self.jobs[job][0]
            named = name is None or self.names[job] == name
            return named and state in states and job not in self.requested

        before = {job: model[0] for job, model in self.jobs.items()}
        after = ""
        while True:
            report, resume = self.store.cancel_matching(
                name, states, CANCEL_TEXT, self.now, limit, after
            )
            assert report.finished == report.missing == []
            assert len(report.cancelled) + len(report.requested) <= limit
            for job in report.cancelled + report.requested:
                assert matches(job), (job, self.jobs[job], name, states)
            for job in report.cancelled:
                assert self.jobs[job][0] in QUEUED
                self.graph.waiting.pop(job, None)
                self.jobs[job][:2] = [JobState.CANCELLED, None]
            for job in report.requested:
                assert self.jobs[job][0] is JobState.PROCESSING
                self.requested.add(job)
            for job in report.cancelled:
                self.graph.end(job, JobState.CANCELLED, self.now)
            if resume is None:
                break
            after = resume
        # (A job the cancel itself released, a tolerant dependent, entered the walk late.)
        left = [j for j in self.jobs if matches(j) and self.jobs[j][0] is before[j]]
        assert not left, "a matching job was left"

    @precondition(lambda self: self.ever)
    @rule(data=st.data(), done=st.integers(0, 5), in_cycle=st.booleans())
    def report_progress(self, data, done, in_cycle):
        """Progress for some jobs (deleted ones too: dropped), alone or with a cycle."""
        jobs = data.draw(st.lists(st.sampled_from(self.ever), min_size=1, max_size=3))
        report = Progress(float(done), None, f"at {done}", self.now)
        updates = dict.fromkeys(jobs, report)
        if in_cycle:
            self.store.finish_and_claim([], WORKERS[0], 0, self.now, progress=updates)
        else:
            self.store.record_progress(updates)
        self.progress.update((job, report) for job in jobs if job in self.jobs)

    @rule(advance=st.integers(0, 3000), ttl=st.integers(0, 4000))
    def expire(self, advance, ttl):
        self.now += advance
        cutoff = self.now - ttl
        recs = self._records()
        ended = self._in(JobState.DONE) + self._in(JobState.CANCELLED) + self._in(JobState.EXPIRED)
        gone = {j for j in ended if recs[j].finished_at_ms < cutoff}
        assert self.store.expire_finished(cutoff) == len(gone)
        for job in gone:
            self._forget(job, self.now)

    @rule()
    def purge_dead(self):
        dead = self._in(JobState.DEAD)
        assert self.store.purge_dead() == len(dead)
        for job in dead:
            self._forget(job, self.now)

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
        self.mode = "legacy" if self.mode == "optimized" else "optimized"  # pauses carry over
        self.store = self._open()
        self._register()

    @rule(name=st.one_of(st.none(), st.sampled_from(NAMES)), resume=st.booleans())
    def pause_or_resume(self, name, resume):
        was = self.paused_all if name is None else name in self.paused_names
        if resume:
            change = self.store.resume(name)
        else:
            change = self.store.pause(name)
        assert change == PauseChange(name, not resume, was == resume)
        if name is None:
            self.paused_all = not resume
        elif resume:
            self.paused_names.discard(name)
        else:
            self.paused_names.add(name)

    @rule(limit=st.sampled_from([None, 1, 2, 3]))
    def set_limit(self, limit):
        """Change LIMITED's concurrency: its ready jobs move into or out of their lanes,
        its running ones are counted when a limit is set."""
        assert self.store.set_limit(TASK, LIMITED, limit, self.rate) == (limit != self.limit)
        self.limit = limit

    @initialize(
        rate=st.sampled_from([Rate(1, 1000), Rate(2, 5000), None]),
        limit=st.sampled_from([None, 2]),
    )
    def limits_at_start(self, rate, limit):
        """Begin with a rate on LIMITED in most runs: a rule that sets one later comes
        too late in a run for its jobs to meet it."""
        self.set_rate(rate, limit)

    @rule(
        rate=st.sampled_from([None, Rate(1, 1000), Rate(2, 5000)]),
        limit=st.sampled_from([None, None, 3]),
    )
    def set_rate(self, rate, limit):
        """Change LIMITED's rate (and concurrency: mostly none, so the rate binds):
        with neither, the limit goes (and its lanes); a rate removed takes its log."""
        changed = (rate, limit) != (self.rate, self.limit)
        assert self.store.set_limit(TASK, LIMITED, limit, rate) == changed
        self.rate, self.limit = rate, limit
        if rate is None:
            self.starts = []

    @invariant()
    def next_run_at_counts_the_reopening_rate(self):
        """The server's wake-up time: the first scheduled job's run-at, or when an
        exhausted rate next lets one of LIMITED's jobs start, if earlier."""
        recs = self._records()
        due = [recs[j].run_at_ms for j in self._in(JobState.SCHEDULED)]
        expected = min(due, default=None)
        rate = self.rate
        if self.mode != "optimized":
            return  # legacy reads every pending record for it (its own test covers it)
        if rate is not None:
            live = sorted(at for at in self.starts if at > self.now - rate.window_ms)
            if len(live) >= rate.count:  # reopens when all but count - 1 have left
                reopen = live[len(live) - rate.count] + rate.window_ms
                expected = reopen if expected is None else min(expected, reopen)
        assert self.store.next_run_at_ms(self.now) == expected

    @invariant()
    def running_count_matches(self):
        """The limit's running count is always the number of LIMITED's running jobs."""
        running = self._running_limited()
        limit = Limit(TASK, LIMITED, self.limit, running, self.rate)
        expected = [limit] if self._limited else []
        assert self.store.limits() == expected

    @rule(worker=st.sampled_from(WORKERS), gap_s=st.sampled_from([0, 4, 10, 290, 3600, 86400]))
    def heartbeat_with_a_sample(self, worker, gap_s):
        self.sampled_at += gap_s * 1000
        self.store.heartbeat(worker, _beat_info(), self.sampled_at)
        point = (self.sampled_at, self.store.stats())  # records_match_model checks them
        for tier in TIERS:
            self.history[(tier.number, tier.slot(self.sampled_at))] = point

    # ---- periodic schedules -----------------------------------------------------------
    def _definitions(self, server: str) -> dict[str, Periodic]:
        def make(name: str, slots, now: int) -> list[JobRecord]:
            return [
                JobRecord(
                    new_job_id(),
                    name,
                    JobState.READY,
                    b"\x01",
                    run_at_ms=slot,
                    created_at_ms=now,
                    max_retries=1,
                )
                for slot in slots
            ]

        return {
            name: Periodic(
                ScheduleSpec.of(name, Spec(None, every_ms, "UTC", "latest")),
                None,  # type: ignore[arg-type]  # the fire never reads the task
                lambda slots, now, name=name: make(name, slots, now),
            )
            for name, every_ms in SCHEDULE_SERVERS[server].items()
        }

    def _live(self, server_id: str) -> bool:
        return server_id in self.alive

    @rule(server=st.sampled_from(sorted(SCHEDULE_SERVERS)))
    def start_a_server_with_schedules(self, server):
        """A server starts: it declares the schedules its code defines."""
        self.alive.add(server)
        specs = [p.spec for p in self._definitions(server).values()]
        rows = self.store.declare_schedules(specs, server, self.now, self._live)
        for name, every_ms in SCHEDULE_SERVERS[server].items():
            spec = Spec(None, every_ms, "UTC", "latest")
            model = self.schedules.get(name)
            if model is None or model[0] != every_ms:  # new, or a changed spec: afresh
                paused = model is not None and model[3]
                declarers = set() if model is None else model[5]
                model = [every_ms, self.now, spec.next_after(self.now), paused, False, declarers]
            elif model[4]:  # retired: back, its missed slots caught up
                model[2], model[4] = spec.next_after(model[1]), False
            model[5] = {d for d in model[5] if d in self.alive} | {server}
            self.schedules[name] = model
        assert [r.name for r in rows] == sorted(SCHEDULE_SERVERS[server])

    @rule(server=st.sampled_from(sorted(SCHEDULE_SERVERS)))
    def stop_a_server_with_schedules(self, server):
        self.alive.discard(server)

    @rule(server=st.sampled_from(sorted(SCHEDULE_SERVERS)), advance=st.integers(0, 4000))
    def fire_schedules(self, server, advance):
        """A live server fires what is due: each due schedule its code defines gets its
        latest slot (catch_up "latest"); a due one no live server declares is retired.
        A server that is not running starts first (so fires come often enough)."""
        if server not in self.alive:
            self.start_a_server_with_schedules(server)
        self.now += advance
        mine = SCHEDULE_SERVERS[server]
        expected, retiring = [], set()
        for name, model in sorted(self.schedules.items(), key=lambda kv: (kv[1][2], kv[0])):
            every_ms, last, due, paused, retired, declarers = model
            if paused or retired or due > self.now:
                continue
            if name in mine:
                slot = self.now // every_ms * every_ms
                expected.append((name, slot))
                model[1], model[2] = slot, slot + every_ms
            elif not declarers & self.alive:
                retiring.add(name)
        fired = fire_due(self.store, self._definitions(server), self.now, lambda: self._live)
        assert [(j.name, j.run_at_ms) for j in fired.jobs] == expected
        for name in retiring:
            self.schedules[name][4], self.schedules[name][5] = True, set()
        for rec in fired.jobs:
            self.slots_fired[(rec.name, rec.run_at_ms)] += 1
            self.ever.append(rec.id)
            self.graph.enter(rec.id, JobState.READY, (), False, rec.run_at_ms, None)
            self.jobs[rec.id] = [JobState.READY, None, 0, rec.max_retries]
            self.names[rec.id] = rec.name
            self.queue_of[rec.id] = rec.queue

    @rule(name=st.sampled_from(["p.x", "p.y"]), resume=st.booleans())
    def pause_or_resume_a_schedule(self, name, resume):
        model = self.schedules.get(name)
        if model is None:
            with pytest.raises(ConfigError):
                self.store.resume_schedule(name, self.now) if resume else self.store.pause_schedule(
                    name
                )
            return
        if resume:
            assert self.store.resume_schedule(name, self.now) is model[3]
            if model[3]:
                model[1], model[2] = self.now, (self.now // model[0] + 1) * model[0]
        else:
            assert self.store.pause_schedule(name) is not model[3]
        model[3] = not resume

    @invariant()
    def schedules_match_model(self):
        """The rows are the model's, the next due is the earliest active one, and no
        slot of any schedule was ever enqueued twice."""
        rows = {r.name: r for r in self.store.schedules()}
        assert sorted(rows) == sorted(self.schedules)
        for name, (every_ms, last, due, paused, retired, declarers) in self.schedules.items():
            row = rows[name]
            got = (row.every_ms, row.last_slot_ms, row.next_due_ms, row.paused, row.retired)
            assert got == (every_ms, last, due, paused, retired), (name, row)
            assert set(row.declarers) == declarers, (name, row)
        active = [m[2] for m in self.schedules.values() if not m[3] and not m[4]]
        assert self.store.next_schedule_due_ms() == min(active, default=None)
        assert all(n == 1 for n in self.slots_fired.values()), self.slots_fired

    # ---- invariants ---------------------------------------------------------------
    @invariant()
    def pages_match_model(self):
        """``browse`` walks every job newest first, by cursor, whatever the filter."""

        def walk(**filters) -> list[str]:
            seen: list[str] = []
            before = None
            while True:
                page = self.store.browse(before=before, limit=3, **filters)
                seen += [r.id for r in page.jobs]
                if page.next is None:
                    return seen
                before = page.next

        assert walk() == sorted(self.jobs, reverse=True)
        for state in (JobState.READY, JobState.DEAD, JobState.SCHEDULED, JobState.PROCESSING):
            assert walk(state=state) == sorted(self._in(state), reverse=True), state

    @invariant()
    def history_matches(self):
        """Each tier's read of its whole span is the model's points of that span."""
        for tier in TIERS:
            since = self.sampled_at - tier.span_ms + 1
            model = sorted(
                p for (t, _), p in self.history.items() if t == tier.number and p[0] >= since
            )
            assert self.store.history(since, self.sampled_at) == model
        assert len(self.history) <= SIZE

    @invariant()
    def pauses_match(self):
        assert self.store.paused() == Paused(self.paused_all, frozenset(self.paused_names))

    @invariant()
    def gauges_match(self):
        """``gauges()`` is ``stats()``, ``paused()`` and the earliest run-at among the
        first ready job (by seq) of each priority, a paused task's jobs left out."""
        gauges = self.store.gauges()
        assert gauges.counts == self.store.stats() and gauges.paused == self.store.paused()
        heads: dict[int, JobRecord] = {}
        for rec in self._records().values():
            if rec.state is JobState.READY and rec.name not in self.paused_names:
                head = heads.get(rec.priority)
                if head is None or rec.seq < head.seq:
                    heads[rec.priority] = rec
        expected = min((rec.run_at_ms for rec in heads.values()), default=None)
        assert gauges.oldest_ready_ms == expected, (gauges, heads)

    @invariant()
    def queue_depths_match(self):
        """``gauges().queues``: each queue's ready jobs (a paused task's too) and its
        running ones, as the model has them."""
        ready = Counter(self.queue_of[j] for j in self._in(JobState.READY))
        running = Counter(self.queue_of[j] for j in self._held())
        if self.mode == "legacy":  # legacy reads run-at, not promotions: due is ready
            recs = self._records()
            ready.update(
                self.queue_of[j]
                for j in self._in(JobState.SCHEDULED)
                if recs[j].state is JobState.READY
            )
        assert self.store.gauges().queues == depths_by_queue(ready, running)

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
                ready = keys.ready_key(rec.priority, rec.seq, job)
                held = keys.held_key(rec.name, ready, rec.queue)
                laned = self._limited and rec.name == LIMITED
                if db == keys.DB_READY:
                    assert keys.decode_ready_key(key) == (rec.priority, rec.seq, job)
                    assert rec.name not in self.paused_names and rec.queue == "default", rec
                    assert not laned, rec
                elif db == keys.DB_QUEUED:
                    assert key == keys.queued_key(rec.queue, ready) and rec.queue != "default"
                    assert rec.name not in self.paused_names and not laned, rec
                elif db == keys.DB_LANED:
                    assert key == keys.lane_prefix(rec.queue, rec.name) + ready and laned, rec
                    assert rec.name not in self.paused_names, rec
                elif db == keys.DB_PAUSED:
                    assert key == held and rec.name in self.paused_names, rec
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
        for db, state in (
            (keys.DB_DONE, JobState.DONE),
            (keys.DB_CANCELLED, JobState.CANCELLED),
            (keys.DB_EXPIRED, JobState.EXPIRED),
        ):
            for key, value in raw[db]:
                finished, job = keys.decode_done_key(key)
                assert records[job].state is state, (db, records[job])
                assert records[job].finished_at_ms == finished
                if state is JobState.CANCELLED:  # the reason, as the record's error says
                    assert value.decode() == records[job].errors[-1].message
                else:
                    assert value == b""
                homes[job] += 1
        for key, _ in raw[keys.DB_WAITING]:
            job = keys.decode_job_key(key)
            assert records[job].state is JobState.WAITING
            homes[job] += 1
        assert {keys.decode_job_key(k) for k, _ in raw[keys.DB_PROGRESS]} == set(self.progress)
        requests = {keys.decode_processing_key(k) for k, _ in raw[keys.DB_CANCELS]}
        assert requests == {(self.jobs[j][1], j) for j in self.requested}
        assert {v for _, v in raw[keys.DB_CANCELS]} <= {CANCEL_TEXT.encode()}
        assert set(homes) == set(records) and set(homes.values()) <= {1}, homes
        self._graph_matches_raw(raw)
        counts = {k.decode(): keys.decode_count(v) for k, v in raw[keys.DB_QUEUES]}
        if mode == "legacy":
            assert counts == {}, "the legacy layout keeps no queue counts"
        else:
            named = Counter(
                r.queue
                for r in records.values()
                if r.state is JobState.READY and r.queue != "default"
            )
            assert counts == dict(named), (counts, named)

        lanes = {k: keys.decode_count(v) for k, v in raw[keys.DB_LANES]}
        assert lanes == dict(Counter(keys.lane_of_laned(k) for k, _ in raw[keys.DB_LANED]))
        counted = {k for k, _ in raw[keys.DB_COUNTED]}
        limited = {
            keys.processing_key(self.jobs[j][1], j)
            for j in self._held()
            if self.names[j] == LIMITED and self._limited
        }
        assert counted == limited, (counted, limited)

        offers = {
            keys.decode_worker_key(k): keys.decode_offer(v)[2] for k, v in raw[keys.DB_OFFERS]
        }
        assert offers == self.offers and all(offers.values())

        seqs = [r.seq for r in records.values() if r.state in (JobState.READY, JobState.SCHEDULED)]
        assert len(seqs) == len(set(seqs)), "queue order needs unique seqs"

    def _graph_matches_raw(self, raw: dict[bytes, list[tuple[bytes, bytes]]]) -> None:
        """LMDB's workflow databases hold exactly the model's edges, counts and keys,
        and every count is its job's open edges in ``deps``."""
        edges = {keys.decode_edge_key(k): v == keys.EDGE_OPEN for k, v in raw[keys.DB_DEPS]}
        assert set(v for _, v in raw[keys.DB_DEPS]) <= {keys.EDGE_OPEN, keys.EDGE_CLOSED}
        assert edges == self.graph.open_edges()
        open_into = Counter(
            dependent
            for (dep, dependent), is_open in edges.items()
            if is_open and not self.graph.ended(dep)
        )
        waiting = {}
        for key, value in raw[keys.DB_WAITING]:
            job = keys.decode_job_key(key)
            count, allow = keys.decode_waiting(value)
            assert count == open_into[job] >= 1, (job, count, open_into[job])
            assert allow == self.graph.allow[job]
            waiting[job] = count
        assert waiting == self.graph.waiting
        holders = {key: keys.decode_job_key(value) for key, value in raw[keys.DB_UNIQUE]}
        expect = {keys.unique_key(*key): job for key, job in self.graph.holders.items()}
        assert holders == expect

    def _graph_matches_tables(self) -> None:
        """The memory store's tables hold exactly the model's edges, counts and keys."""
        db = self.store._db
        edges = {(dep, d): o for dep, out in db.edges.items() for d, o in out.items()}
        assert edges == self.graph.open_edges()
        assert all(db.edges.values()), "an empty edge table is dropped"
        assert {j: count for j, (count, _) in db.waiting.items()} == self.graph.waiting
        assert all(allow == self.graph.allow[j] for j, (_, allow) in db.waiting.items())
        assert db.unique == self.graph.holders

    @invariant()
    def graph_matches_model(self):
        """Every record's workflow fields, ``dependents()`` and the key holders agree
        with the model; at most one live job holds a key, and it is the holder."""
        if self.memory:
            self._graph_matches_tables()
        records = self._records()
        live_keys: Counter = Counter()
        for job, rec in records.items():
            assert rec.depends_on == self.graph.depends_on[job]
            assert rec.allow_failures == self.graph.allow[job]
            if rec.key is not None and rec.state not in FAILED:
                live_keys[(rec.name, rec.key)] += 1
                assert self.graph.holder(rec.name, rec.key) == job, (job, rec.key)
            if rec.state is JobState.CANCELLED:  # naming the dependency that ended, or a cancel
                error = rec.errors[-1]
                assert error.kind == "cancelled" and rec.finished_at_ms is not None
                cause = [f"dependency {d} " for d in rec.depends_on]
                assert error.message == CANCEL_TEXT or any(map(error.message.startswith, cause))
        assert set(live_keys.values()) <= {1}, live_keys
        for dep in self.graph.edges:
            assert self.store.dependents(dep) == self.graph.dependents(dep), dep

    @invariant()
    def expired_jobs_never_started(self):
        """An expired job was never claimed, ended at or after its deadline, and says so."""
        for rec in self.store.list(state=JobState.EXPIRED):
            assert rec.attempts == 0 and rec.expires_at_ms is not None, rec
            assert rec.finished_at_ms is not None and rec.finished_at_ms >= rec.expires_at_ms
            assert rec.errors[-1].kind == "expired", rec
        for job, deadline in self.graph.deadline.items():
            assert self._records()[job].expires_at_ms == deadline

    @invariant()
    def records_match_model(self):
        records = self._records()
        for job, (state, _, attempts, _) in self.jobs.items():
            rec = records[job]
            assert rec.state is state, (job, rec.state, state)
            assert rec.attempts == attempts >= 0
        for worker in WORKERS:
            mine = sorted(j for j in self.requested if self.jobs[j][1] == worker)
            assert self.store.cancel_requests(worker) == mine
        jobs = sorted(self.jobs)
        assert dict(zip(jobs, self.store.progress(jobs))) == {
            job: self.progress.get(job) for job in jobs
        }
        stats = self.store.stats()
        assert stats["total"] == len(self.jobs)
        assert stats["processing"] == len(self._held())
        assert stats["dead"] == len(self._in(JobState.DEAD))
        assert stats["done"] == len(self._in(JobState.DONE))
        assert stats["waiting"] == len(self._in(JobState.WAITING)) == len(self.graph.waiting)
        assert stats["cancelled"] == len(self._in(JobState.CANCELLED))
        assert stats["expired"] == len(self._in(JobState.EXPIRED))
        assert stats["ready"] + stats["scheduled"] == len(self._in(JobState.READY)) + len(
            self._in(JobState.SCHEDULED)
        )


PROPERTY_SETTINGS = settings(
    max_examples=int(os.environ.get("MPQUEUE_STATE_MACHINE_EXAMPLES", "75")),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _beat_info() -> dict:
    return {
        "pid": 0,
        "host": "model",
        "children": [],
        "heartbeat_ms": now_ms(),
        "monotonic": 0.0,
        "lease_s": 86400.0,
    }


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
