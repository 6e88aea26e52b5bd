"""``serve``: the coordinator loop.

One process per server. Each cycle it commits the outcomes that came back, promotes
due jobs and claims as many ready jobs as its children have room for, all in one
write transaction, then hands the job ids to its children. Between cycles it sleeps
until a child reports, a producer wakes it, a scheduled job falls due, a timer fires
or a signal arrives.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import Any

from ..errors import ProtocolError, StoreCorrupt, StoreError
from ..identity import current
from ..location import redact
from ..records import ErrorInfo, JobRecord, JobState, Outcome, now_ms
from ..store import open_store
from . import protocol, recovery
from .pool import Pool, Slot
from .progress import Progress
from .protocol import Done, Failed, Handed, InitError, Ready, Released, Report, Took
from .settings import DEFAULT_POLL_INTERVAL_S, PREFETCH_WINDOW_S, ServeSettings

log = logging.getLogger("mpqueue.serve")

RECLAIM_EVERY_S = 0.5  # how often dead coordinators' jobs are looked for
HEARTBEAT_EVERY_S = 2.0
MAINTENANCE_EVERY_S = 5.0  # stale LMDB reader slots
EXPIRE_EVERY_S = 60.0  # finished-job retention
EXIT_OK, EXIT_JOBS_DIED = 0, 1
COMMIT_DELAY_S = 0.02  # longest an outcome waits to share a commit with others
STORE_BACKOFF_MIN_S = 0.05  # first retry after a store failure; doubles up to the max
STORE_BACKOFF_MAX_S = 5.0
STORE_QUIET_S = 2 * STORE_BACKOFF_MAX_S  # this long without a failure resets the backoff
STORE_FAILING_LOG_S = 60.0  # at the top backoff step, a reminder this often
PIPE_EOF_GRACE_S = 0.5  # a child whose pipe ended has this long to be seen exiting
RESTART_BACKOFF_MAX_S = 30.0  # longest wait before retrying a child that cannot start
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # a second one stops at once
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class RunStats:
    """What happened to the jobs this server ran."""

    def __init__(self) -> None:
        self.done = self.retried = self.dead = self.released = 0
        self.started_at = time.monotonic()


class Coordinator:
    def __init__(self, settings: ServeSettings, result_ttl_s: float | None = None):
        self.settings = settings.validate()
        self.identity = current()
        self.server_id = self.identity.server_id
        self.store = open_store(settings.path, mode=settings.mode)
        self.result_ttl_s = result_ttl_s
        pacing = self.store.pacing
        self.poll_s = settings.poll_interval_s or pacing.poll_interval_s or DEFAULT_POLL_INTERVAL_S
        self.polling = pacing.polls_only or settings.poll_only
        self.listener = None if self.polling else self._listen()
        # Hand-off (stores that have it, servers that are woken): while a child of ours
        # is idle, a producer may claim a new job for it and wake it directly.
        self.handoff = self.store.hands_off and not self.polling
        self.pool = Pool(
            settings.path,
            settings.mode,
            settings.imports,
            measure_rss=settings.max_memory_per_child_mb is not None,
            server_id=self.server_id,
            hand_off=self.handoff,
        )
        self.outcomes: list[Outcome] = []
        self.claimed: dict[str, JobRecord] = {}
        self.retrying: set[str] = set()
        self.stats = RunStats()
        self.signals = 0
        self.stop_deadline: float | None = None
        self.avg_job_s = 0.001
        # --until-empty shows progress (a bar on a terminal, lines otherwise) unless it
        # was switched off; the run's summary is logged either way.
        show = settings.until_empty and settings.progress is not False
        self.progress = Progress(settings.progress) if show else None
        self.timers: dict[str, float] = {}
        self.more_ready = True
        self.next_due_ms: int | None = None
        self.store_retry_at = 0.0
        self.outcomes_since: float | None = None
        self.store_backoff_s = STORE_BACKOFF_MIN_S
        self.store_failed_at = 0.0  # monotonic time of the last store failure; 0: none
        self.store_logged_s = self.store_logged_at = 0.0  # the backoff last logged, when
        self.reconcile = False
        self.start_failures = 0  # children in a row that died before they were ready
        self.start_at: list[float] = []  # when to start replacements held back by those

    def _listen(self) -> Any:
        """The wake-up listener; without one (its socket cannot be made) the server
        still serves, polling every poll_s like --poll-only."""
        try:
            return self.store.listen()
        except OSError as exc:
            log.warning("no wake-up socket (%s): polling every %.2f s instead", exc, self.poll_s)
            self.polling = True
            return None

    # ---- lifecycle ------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped (or, with until_empty, until nothing is left)."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old = self._install_signals(wake_w)
        try:
            recovery.reclaim_dead(self.store, self.server_id, lease_s=self.settings.lease_s)
            self.pool.start(self.settings.workers)
            self._heartbeat()
            log.info(
                "serving %s with %d workers as %s",
                redact(self.settings.path),
                self.settings.workers,
                self.server_id,
            )
            self._loop(wake_r)
        finally:
            self._shutdown()
            for signum, handler in old.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(-1)
            wake_r.close()
            wake_w.close()
        return EXIT_JOBS_DIED if self.settings.until_empty and self.stats.dead else EXIT_OK

    def _install_signals(self, wake_w: socket.socket) -> dict[int, Any]:
        """SIGTERM, SIGINT and SIGHUP (the ssh session or terminal went away) stop the
        server gracefully; SIGUSR1/SIGUSR2 change nothing. Returns the old handlers."""

        def on_stop(signum: int, frame: object) -> None:
            self.signals += 1

        def on_other(signum: int, frame: object) -> None:
            pass  # not SIG_IGN: that would pass on to the forkserver and its children

        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        handlers = {
            **dict.fromkeys(STOP_SIGNALS, on_stop),
            **dict.fromkeys(IGNORED_SIGNALS, on_other),
        }
        return {s: signal.signal(s, handler) for s, handler in handlers.items()}

    def _loop(self, wake_r: socket.socket) -> None:
        while True:
            if self.signals and self._stopping_done():
                return
            self._guarded(self._cycle, commits=True)
            if self._guarded(self._finished):
                return
            self._wait(wake_r)
            self._enforce_deadlines()
            self._guarded(self._periodic)

    # ---- the store going away (a database restart, a lost connection) -------------------
    def _guarded(self, step: Callable[[], Any], commits: bool = False) -> Any:
        """Run a step that talks to the store; while the store fails, back off and keep
        the children's outcomes in memory until they can be committed.

        The backoff doubles up to its maximum and is reset only by a commit that
        changed something (``commits``: the step returns whether it did) or after a
        quiet spell: reads succeed on a full disk, and must not keep it at its minimum.
        A corrupt store is not retried: StoreCorrupt ends the server."""
        if time.monotonic() < self.store_retry_at:
            return None
        try:
            result = step()
        except StoreCorrupt:
            raise
        except StoreError as exc:
            self._store_failed(exc)
            return None
        quiet = time.monotonic() - self.store_failed_at >= STORE_QUIET_S
        if self.store_failed_at and ((commits and result) or quiet):
            if self.store_logged_s:
                log.info("store available again; backoff reset")
            self.store_failed_at, self.store_logged_s = 0.0, 0.0
        return result

    def _store_failed(self, exc: StoreError) -> None:
        now = time.monotonic()
        failing = self.store_failed_at > 0
        self.store_backoff_s = (
            min(STORE_BACKOFF_MAX_S, self.store_backoff_s * 2) if failing else STORE_BACKOFF_MIN_S
        )
        self.store_failed_at = now
        self.store_retry_at = now + self.store_backoff_s
        self.reconcile = True
        # Once per backoff step (and once a minute at the top one), not per retry.
        if (
            self.store_backoff_s != self.store_logged_s
            or now - self.store_logged_at >= STORE_FAILING_LOG_S
        ):
            self.store_logged_s, self.store_logged_at = self.store_backoff_s, now
            log.warning(
                "store unavailable (%s); %d outcome(s) held, retrying in %.2f s",
                exc,
                len(self.outcomes),
                self.store_backoff_s,
            )

    def _reconcile(self) -> None:
        """After a failed call whose commit may still have happened (the reply was lost),
        put back claims of ours that no child holds, so they are not stranded."""
        held = {job_id for slot in self.pool.slots for job_id in slot.inflight}
        live = {slot.pid for slot in self.pool.slots if slot.pid}
        # a job handed to a live child that has not taken it yet is not stray
        stray = [
            c.job_id
            for c in self.store.claims(self.server_id)
            if c.job_id not in held and c.child_pid not in live
        ]
        pending = {o.job_id for o in self.outcomes}
        self.outcomes += [Outcome.released(j, self.server_id) for j in stray if j not in pending]
        self.reconcile = False
        if stray:
            log.warning("put back %d claim(s) no worker holds after a store failure", len(stray))

    # ---- one cycle ------------------------------------------------------------------
    def _cycle(self) -> bool:
        """One commit of outcomes and claims; True if it changed something."""
        room = 0 if self.signals else self._room()
        if self.polling:
            per_poll = self.store.pacing.claims_per_poll
            room = (min(room, per_poll) if per_poll else room) if self._poll_due() else 0
        if self.reconcile:
            self._reconcile()
        if not self._cycle_wanted(room):
            return False
        outcomes = self.outcomes
        now = now_ms()
        limit = min(room, self.settings.batch)
        idle = (
            [s.pid for s in self._idle_slots() if s.hand_off]
            if self.handoff and not self.signals
            else []
        )
        _, claimed = self.store.finish_and_claim(
            outcomes, self.server_id, limit, now, idle_children=idle
        )
        self.outcomes = []  # only once committed: on a store error they are kept
        self.outcomes_since = None
        self._account(outcomes)
        if limit > 0:
            self.more_ready = len(claimed) >= limit
        else:
            # Nothing was claimed, so nothing was learned about the ready queue, except
            # that jobs put back just now are in it: forgetting them would strand them
            # (no producer will send a wake-up for them).
            self.more_ready = self.more_ready or any(o.kind == "released" for o in outcomes)
        self._dispatch(claimed)  # first: the children start while we read on
        self.next_due_ms = self.store.next_run_at_ms()
        return bool(outcomes or claimed)

    def _cycle_wanted(self, room: int) -> bool:
        """Whether a durable commit is worth paying for now.

        Claim when a child runs low (half its prefetch left), commit outcomes when one
        has waited COMMIT_DELAY_S, or at once when stopping or a child is low anyway.
        With short jobs both happen every few ms; with ~10 ms jobs several outcomes
        share one commit instead of each paying for its own (fsync and CPU that the
        workers on a small machine would otherwise lose).
        """
        if self.outcomes and self.outcomes_since is None:
            self.outcomes_since = time.monotonic()
        if self.polling:
            return bool(self.outcomes) or (room > 0 and self._maybe_ready())
        per_child = self._per_child()
        low = any(len(s.inflight) <= per_child // 2 for s in self._usable())
        if room and low and self._maybe_ready():
            return True
        if not self.outcomes:
            return False
        return bool(
            self.signals
            or low
            or len(self.outcomes) >= self.settings.batch
            or time.monotonic() - (self.outcomes_since or 0.0) >= COMMIT_DELAY_S
        )

    def _maybe_ready(self) -> bool:
        """Whether a claim could find work: skip empty claim transactions while idle."""
        if self.polling or self.more_ready:
            return True
        return self.next_due_ms is not None and self.next_due_ms <= now_ms()

    def _poll_due(self) -> bool:
        """Legacy mode and --poll-only claim on a fixed interval only (legacy: one job
        per poll), as queues without wake-ups do."""
        now = time.monotonic()
        due = self.timers.get("poll", 0.0)
        if now < due:
            return False
        # Ticks on a fixed grid, so a late wake-up does not stretch every interval;
        # after a long stall, start a new grid rather than firing a burst of polls.
        late = now - due >= self.poll_s
        self.timers["poll"] = (now if late else due) + self.poll_s
        return True

    def _room(self) -> int:
        per_child = self._per_child()
        return sum(self._slot_room(s, per_child) for s in self._usable())

    def _per_child(self) -> int:
        """Jobs a child may hold: the running one plus about PREFETCH_WINDOW_S of work
        queued (at least one, so it never waits for the server between jobs)."""
        queued = math.ceil(PREFETCH_WINDOW_S / max(self.avg_job_s, 1e-6))
        return 1 + min(self.settings.prefetch_max, max(1, queued))

    def _slot_room(self, slot: Slot, per_child: int) -> int:
        room = per_child - len(slot.inflight)
        limit = self.settings.max_tasks_per_child
        if limit is not None:
            # A child runs everything it was sent before it reads "stop": never send
            # more than it may still run, or prefetch would carry it past the limit.
            room = min(room, limit - slot.jobs_run - len(slot.inflight))
        return max(0, room)

    def _usable(self) -> list[Slot]:
        return [s for s in self.pool.slots if s.ready and not s.retiring]

    def _idle_slots(self) -> list[Slot]:
        per_child = self._per_child()
        return [s for s in self._usable() if not s.inflight and self._slot_room(s, per_child) > 0]

    def _on_took(self, slot: Slot, job_id: str, now: float) -> None:
        """A child started a job a producer handed to it: it is ours to account for."""
        rec = self.claimed.get(job_id)
        if rec is None:
            try:
                rec = self.store.get(job_id)  # for its timeout and retry limit
            except StoreError:
                rec = None  # then it runs without the hard timeout; the soft one holds
        if rec is not None:
            self.claimed[job_id] = rec
        self.retrying.discard(job_id)
        slot.took(job_id, now)

    def _recall(self, slot: Slot) -> None:
        """A child is gone: withdraw its offer, and put back the jobs handed to it that
        it never took (uncharged; the next claim hands them out again)."""
        if not self.handoff or not slot.pid:
            return
        try:
            lost = self.store.recall(self.server_id, slot.pid, self.claimed)
        except StoreError:
            self.reconcile = True  # _reconcile puts back claims no live child holds
            return
        self.outcomes += [Outcome.released(rec.id, self.server_id) for rec in lost]
        if lost:
            log.warning(
                "put back %d job(s) handed to worker %d before it could take them",
                len(lost),
                slot.pid,
            )

    def _resend_handed(self) -> None:
        """The safety net for a lost hand-off datagram: tell each idle-looking child the
        jobs handed to it that it has not reported taking (it skips those it ran)."""
        by_pid = {s.pid: s for s in self._usable()}
        # recalled ones wait for their put-back to commit (a new child may reuse a pid)
        settling = {o.job_id for o in self.outcomes}
        missed: dict[int, list[str]] = {}
        for claim in self.store.claims(self.server_id):
            if (
                claim.child_pid in by_pid
                and claim.job_id not in self.claimed
                and claim.job_id not in settling
            ):
                missed.setdefault(claim.child_pid, []).append(claim.job_id)
        for pid, job_ids in missed.items():
            try:
                protocol.send_command(by_pid[pid].conn, Handed(job_ids))
            except OSError:
                pass  # it just died: its exit recalls these

    def _dispatch(self, claimed: list[JobRecord]) -> None:
        """Hand jobs out in claim (priority) order, each to the least loaded child."""
        batches: dict[int, tuple[Slot, list[str]]] = {}
        per_child = self._per_child()
        slots = self._usable()
        room = {id(s): self._slot_room(s, per_child) for s in slots}
        now = time.monotonic()
        for rec in claimed:
            self.claimed[rec.id] = rec
            self.retrying.discard(rec.id)
            # Claims never exceed the summed room, so some slot always has room left.
            open_slots = [s for s in slots if room[id(s)] > 0] or slots
            slot = min(
                open_slots, key=lambda s: len(s.inflight) + len(batches.get(id(s), (s, []))[1])
            )
            room[id(slot)] -= 1
            batches.setdefault(id(slot), (slot, []))[1].append(rec.id)
        for slot, ids in batches.values():
            try:
                slot.send_jobs(ids, now)
            except OSError:
                pass  # the child just died; its exit handler deals with these ids

    def _account(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            rec = self.claimed.pop(outcome.job_id, None)
            if outcome.kind == "done":
                self.stats.done += 1
            elif outcome.kind == "released":
                self.stats.released += 1
            elif rec is not None and (not outcome.retryable or rec.attempts > rec.max_retries):
                self.stats.dead += 1
                log.warning(
                    "job %s (%s) is dead after %d attempt(s): %s",
                    rec.id,
                    rec.name,
                    rec.attempts,
                    outcome.error,
                )
            else:
                self.stats.retried += 1
                self.retrying.add(outcome.job_id)

    # ---- waiting and messages ----------------------------------------------------------
    def _wait(self, wake_r: socket.socket) -> None:
        waitables: list[Any] = [wake_r]
        timeout = self._wait_timeout()
        per_child = self._per_child()
        for slot in self.pool.slots:
            waitables.append(slot.sentinel)
            unneeded_s = self._unneeded_for(slot, per_child)
            if slot.eof_at is not None or slot.fault is not None:
                timeout = min(timeout, PIPE_EOF_GRACE_S)  # nothing to read: only its exit
            elif unneeded_s > 0:
                timeout = min(timeout, unneeded_s)
            else:
                waitables.append(slot.conn)
        if self.listener is not None:
            waitables.append(self.listener)
        ready: list[Any] = wait(waitables, timeout=timeout)
        listener = self.listener
        for obj in ready:
            if obj is wake_r:
                _drain_socket(wake_r)
            elif listener is not None and obj is listener:
                # A wake-up means "jobs are ready": the next cycle claims and refreshes
                # next_due_ms.
                self._guarded(listener.drain)
                self.more_ready = True
        for slot in list(self.pool.slots):
            self._read_messages(slot)  # cheap when nothing came: one poll, no read
            if slot.sentinel in ready:
                self._on_child_exit(slot)

    def _unneeded_for(self, slot: Slot, per_child: int) -> float:
        """How long this child surely needs nothing from the server (0: listen to it now).

        A child with a deep queue runs for a while before it runs low. Not waking for
        each of its reports in that time lets several outcomes share one wake-up and
        one commit; its death still wakes the server at once (the sentinel).
        """
        if (
            not slot.ready
            or slot.retiring
            or slot.killed
            or self.signals
            or self.polling
            or self._head_deadline(slot) is not None
        ):
            return 0.0
        spare = len(slot.inflight) - 1 - per_child // 2  # completions before it is low
        return max(0.0, spare * self.avg_job_s * 0.5)

    def _wait_timeout(self) -> float:
        store_wait = self.store_retry_at - time.monotonic()
        if store_wait > 0:  # the store is failing: wait for children or the retry time
            return min(store_wait, RECLAIM_EVERY_S)
        room = 0 if self.signals else self._room()
        if self.polling and time.monotonic() < self.timers.get("poll", 0.0):
            room = 0  # between poll ticks a polling server claims nothing: sleep
        if self._cycle_wanted(room):
            return 0.0
        now_s = time.time()
        timeout = self.poll_s
        if self.outcomes_since is not None and not self.polling:
            timeout = min(
                timeout, max(0.0, self.outcomes_since + COMMIT_DELAY_S - time.monotonic())
            )
        if self.next_due_ms is not None and room:  # with no room a due job has to wait
            timeout = min(timeout, max(0.0, self.next_due_ms / 1000 - now_s))
        deadline = self._next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        if self.polling:
            timeout = min(timeout, max(0.0, self.timers.get("poll", 0.0) - time.monotonic()))
        return min(timeout, RECLAIM_EVERY_S)

    def _read_messages(self, slot: Slot) -> None:
        """Act on what a child sent. Bytes that are not a well-formed message, or a
        message that contradicts what the server knows, are that child's crash."""
        try:
            try:
                messages = slot.read_messages()
            except ProtocolError as exc:
                messages = exc.messages
                slot.fail(f"worker sent a malformed message: {exc}")
            for message in messages:
                self._on_message(slot, message)
        except OSError:
            return  # the child is gone; its sentinel says so and _on_child_exit cleans up
        except ProtocolError as exc:
            slot.fail(f"worker sent an unexpected message: {exc}")

    def _check_pipes(self, now: float) -> None:
        """A child whose pipe ended but which lives on (a job closed the fd) can never
        report again: give up on it. A child that is exiting gets a moment for its
        sentinel to say how it died, which names the cause better."""
        for slot in self.pool.slots:
            if (
                slot.eof_at is not None
                and slot.fault is None
                and now - slot.eof_at >= PIPE_EOF_GRACE_S
            ):
                slot.fail("worker closed its pipe to the server")

    def _on_message(self, slot: Slot, message: Report) -> None:
        if slot.killed:
            # Sent just before a timeout kill landed: its head job is charged already
            # (and popped, so the outcome would not match the queue); the rest is
            # released when the exit is seen.
            return
        now = time.monotonic()
        if slot.ready == isinstance(message, (Ready, InitError)):
            raise ProtocolError(
                f"{protocol.tag(message)!r} from a worker that is "
                f"{'' if slot.ready else 'not '}ready"
            )
        if isinstance(message, Done):
            self._observe(slot, now)
            slot.pop_head(message.job_id, now)
            self.outcomes.append(Outcome.done(message.job_id, self.server_id, message.result))
            self._check_memory(slot, message.job_id, message.rss)
        elif isinstance(message, Failed):
            self._observe(slot, now)
            slot.pop_head(message.job_id, now)
            self.outcomes.append(
                Outcome.failed(
                    message.job_id,
                    self.server_id,
                    message.error,
                    retryable=message.retryable,
                    retry_delay_s=message.retry_delay_s,
                )
            )
            self._check_memory(slot, message.job_id, message.rss)
        elif isinstance(message, Took):
            self._on_took(slot, message.job_id, now)
        elif isinstance(message, Released):
            if not set(message.job_ids) <= set(slot.inflight):
                raise ProtocolError(f"released jobs it was never sent: {tuple(message.job_ids)!r}")
            for job_id in message.job_ids:
                slot.inflight.remove(job_id)
                self.outcomes.append(Outcome.released(job_id, self.server_id))
        elif isinstance(message, InitError):
            # A replacement child that cannot start (a module gone from disk, no memory):
            # the server keeps serving with the others and retries with a backoff.
            log.error("a worker process failed to start: %s", message.text)
            slot.fault = "worker failed to start"
        else:
            self.pool.on_ready(slot, message)
            self.start_failures = 0
            self._heartbeat()
        limit = self.settings.max_tasks_per_child
        if limit is not None and slot.jobs_run >= limit:
            slot.retire()

    def _observe(self, slot: Slot, now: float) -> None:
        self.avg_job_s = 0.8 * self.avg_job_s + 0.2 * max(0.0, now - slot.head_since)

    def _check_memory(self, slot: Slot, job_id: str, rss: int) -> None:
        limit_mb = self.settings.max_memory_per_child_mb
        if limit_mb is not None and rss > limit_mb * 1024 * 1024 and not slot.retiring:
            log.warning(
                "job %s pushed worker %d to %.1f MB RSS (limit %.1f MB): replacing that worker",
                job_id,
                slot.pid,
                rss / 2**20,
                limit_mb,
            )
            slot.retire()

    def _on_child_exit(self, slot: Slot) -> None:
        self._read_messages(slot)  # outcomes it sent before dying still count
        slot.process.join(timeout=1)
        code = slot.process.exitcode
        if slot.inflight and not slot.killed and not self.signals:
            head = slot.inflight.popleft()
            reason = slot.fault or (
                f"worker killed by signal {-code}"
                if code is not None and code < 0
                else f"worker exited with code {code}"
            )
            self._charge(
                head,
                ErrorInfo(
                    "WorkerCrashed",
                    reason,
                    attempt=self._attempt(head),
                    at_ms=now_ms(),
                    kind="crash",
                ),
            )
            if not slot.retiring:
                log.warning("job %s: %s", head, reason)
        self._release_all(slot)
        self.pool.remove(slot)
        self._recall(slot)
        if not self.signals:
            self._replace(slot)

    def _replace(self, slot: Slot) -> None:
        """Start a child in place of one that exited; if children keep dying before
        they are ready, wait longer between tries instead of spinning."""
        if slot.ready:
            self.pool.start_slot()
            return
        self.start_failures += 1
        delay = min(RESTART_BACKOFF_MAX_S, 0.1 * 2 ** min(self.start_failures, 16))
        log.warning(
            "worker process died before it was ready (%d in a row); starting another in %.1f s",
            self.start_failures,
            delay,
        )
        self.start_at.append(time.monotonic() + delay)

    def _start_held_back(self, now: float) -> None:
        due = [t for t in self.start_at if t <= now]
        if due and not self.signals:
            self.start_at = [t for t in self.start_at if t > now]
            for _ in due:
                self.pool.start_slot()

    def _charge(self, job_id: str, error: ErrorInfo) -> None:
        # A crash says nothing about the job's own logic timing: retry it at once.
        delay = 0.0 if error.kind == "crash" else None
        self.outcomes.append(Outcome.failed(job_id, self.server_id, error, retry_delay_s=delay))

    def _release_all(self, slot: Slot) -> None:
        while slot.inflight:
            self.outcomes.append(Outcome.released(slot.inflight.popleft(), self.server_id))

    def _attempt(self, job_id: str) -> int:
        rec = self.claimed.get(job_id)
        return rec.attempts if rec is not None else 0

    # ---- deadlines ----------------------------------------------------------------------
    def _head_deadline(self, slot: Slot) -> float | None:
        # A killed slot's head was charged already; what is left behind it never ran
        # (head_since is the dead job's start) and is released when the exit is seen.
        if not slot.inflight or slot.killed:
            return None
        rec = self.claimed.get(slot.inflight[0])
        if rec is None or not rec.timeout_s:
            return None
        return slot.head_since + rec.timeout_s + self.settings.timeout_grace_s

    def _next_deadline(self) -> float | None:
        deadlines = [d for s in self.pool.slots if (d := self._head_deadline(s)) is not None]
        if self.stop_deadline is not None:
            deadlines.append(self.stop_deadline)
        deadlines += self.start_at
        return min(deadlines, default=None)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        self._check_pipes(now)
        self._start_held_back(now)
        for slot in list(self.pool.slots):
            deadline = self._head_deadline(slot)
            if deadline is not None and now >= deadline:
                head = slot.inflight.popleft()
                rec = self.claimed[head]
                log.warning(
                    "job %s ran past its %s s timeout: killing worker %d",
                    head,
                    rec.timeout_s,
                    slot.pid,
                )
                slot.killed = True
                slot.kill()
                self._charge(
                    head,
                    ErrorInfo(
                        "JobTimeout",
                        f"job exceeded its timeout of {rec.timeout_s} s and was killed",
                        attempt=rec.attempts,
                        at_ms=now_ms(),
                        kind="timeout",
                    ),
                )

    # ---- periodic work ------------------------------------------------------------------
    def _every(self, name: str, period_s: float) -> bool:
        now = time.monotonic()
        if now < self.timers.get(name, 0.0):
            return False
        self.timers[name] = now + period_s
        return True

    def _periodic(self) -> None:
        if not self.store.pacing.polls_only and self._every("safety-poll", self.poll_s):
            self.more_ready = True  # the safety net for a lost wake-up or a missed put-back
            if self.handoff and not self.signals:
                self._resend_handed()
        if self._every("reclaim", RECLAIM_EVERY_S):
            if recovery.reclaim_dead(self.store, self.server_id, lease_s=self.settings.lease_s):
                self.more_ready = True
            self.next_due_ms = self.store.next_run_at_ms()  # others may have scheduled
        # Beat several times per lease, so one slow cycle never looks like a death.
        if self._every("heartbeat", min(HEARTBEAT_EVERY_S, self.settings.lease_s / 4)):
            self._heartbeat()
        if self._every("maintenance", MAINTENANCE_EVERY_S):
            self.store.maintenance()
        if self.result_ttl_s is not None and self._every("expire", EXPIRE_EVERY_S):
            self.store.expire_finished(now_ms() - int(self.result_ttl_s * 1000))
        if self.progress is not None:
            self.progress.update(self.stats, self.store.stats)

    def _heartbeat(self) -> None:
        self.store.register_server(
            self.server_id,
            recovery.heartbeat_info(self.identity, self.pool.children(), self.settings.lease_s),
        )

    # ---- ending -------------------------------------------------------------------------
    def _finished(self) -> bool:
        """--until-empty: nothing ready, due or running, and no retry of ours pending."""
        if not self.settings.until_empty or self.outcomes or self.more_ready:
            return False
        if any(s.inflight for s in self.pool.slots):
            return False
        counts = self.store.stats()
        if counts["ready"] or counts["processing"]:
            return False
        if self.next_due_ms is not None and self.next_due_ms <= now_ms():
            return False
        pending = [
            r
            for j in self.retrying
            if (r := self.store.get(j)) is not None and r.state is JobState.SCHEDULED
        ]
        return not pending

    def _stopping_done(self) -> bool:
        """Shutdown in progress: True once every child is gone."""
        if self.stop_deadline is None:
            log.info("stopping: no new jobs; running jobs get %.1f s", self.settings.grace_s)
            self.stop_deadline = time.monotonic() + self.settings.grace_s
            for slot in self.pool.slots:
                slot.retire()
        if self.signals > 1 or time.monotonic() >= self.stop_deadline:
            self.pool.kill_all()
        return not self.pool.slots

    def _shutdown(self) -> None:
        """Put back whatever is still ours, without charging anyone; leave nothing."""
        self.pool.kill_all()
        for slot in list(self.pool.slots):
            slot.process.join(timeout=5)
            self._read_messages(slot)  # never raises for what a child sent
            self._release_all(slot)
            self.pool.remove(slot)
        outcomes, self.outcomes = self.outcomes, []
        try:
            self.store.finish(outcomes, now_ms())
            self._account(outcomes)
            self.store.requeue_server(self.server_id)
            self.store.unregister_server(self.server_id)
        finally:
            if self.listener is not None:
                self.listener.close()
            if self.progress is not None:
                self.progress.close(self.stats)
            stats = self.stats
            log.info(
                "stopped: %d done, %d dead, %d retried, %d put back",
                stats.done,
                stats.dead,
                stats.retried,
                stats.released,
            )
            self.store.close()


def _drain_socket(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def serve(settings: ServeSettings, result_ttl_s: float | None = None) -> int:
    """Run a server in this process; returns its exit code."""
    return Coordinator(settings, result_ttl_s).run()
