"""``serve``: the coordinator loop, one process per server.

One cycle:

1. ``_cycle``: if a commit is worth paying for now (a child runs low, or an outcome
   has waited ``COMMIT_DELAY_S``), one store call commits the outcomes waiting in the
   ledger, promotes due jobs, offers idle children for hand-off and claims as many
   ready jobs as the children have room for; then ``_dispatch`` sends the claimed ids
   to the least loaded children (``Run``).
2. ``_wait``: sleep until a child reports or exits, a producer wakes the server, a
   scheduled job falls due, a deadline or timer passes, or a signal arrives; then read
   what the children sent (``_on_message``: typed reports into the ledger).
3. ``_enforce_deadlines``: kill the children whose job is past its hard deadline.
4. ``_periodic``: the safety poll, reclaiming dead servers' jobs, the heartbeat,
   store maintenance, result expiry, progress, and firing the periodic schedules that
   are due (``periodic.Scheduler``; none: no cost).

Who owns what:

- ``pacing``: how much to claim and when (room per child, the adaptive prefetch
  window, the poll grid of servers that only poll).
- ``ledger``: outcomes waiting to be committed, the records of claimed jobs, jobs
  waiting for a retry, the run's counts.
- ``deadlines``: job timeouts, the hard kill after the grace.
- ``handoff``: hand-off offers, jobs children report taking, recall after a child
  dies, re-sending missed hand-offs.
- ``backoff``: waiting out a failing store.
- ``pool``: the children and what each holds; ``protocol``: the messages on their
  pipes; ``child``: the child's side; ``recovery``: heartbeats and dead servers.
- Here: the loop, signals and stopping, child exits and replacements, reconciling
  claims after a store failure.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from ..errors import ProtocolError, StoreCorrupt, StoreError
from ..identity import current
from ..location import redact
from ..periodic import Scheduler
from ..records import ErrorInfo, JobRecord, JobState, Outcome, now_ms
from ..store import open_store
from . import protocol, recovery
from .backoff import StoreBackoff
from .cancels import Cancels
from .deadlines import Deadlines
from .handoff import Handoff
from .ledger import Ledger, stray_claims
from .pacing import Pacer, usable
from .pool import Pool, Slot
from .progress import Progress
from .protocol import (
    Done,
    Expired,
    Failed,
    InitError,
    ProgressReport,
    Ready,
    Released,
    Report,
    Took,
)
from .settings import DEFAULT_POLL_INTERVAL_S, ServeSettings

if TYPE_CHECKING:  # only then: metrics.py imports prometheus_client
    from ..metrics import ServerMetrics

log = logging.getLogger("mpqueue.serve")

RECLAIM_EVERY_S = 0.5  # how often dead coordinators' jobs are looked for
HEARTBEAT_EVERY_S = 2.0
MAINTENANCE_EVERY_S = 5.0  # stale LMDB reader slots
EXPIRE_EVERY_S = 60.0  # finished-job retention
EXIT_OK, EXIT_JOBS_DIED = 0, 1
COMMIT_DELAY_S = 0.02  # longest an outcome waits to share a commit with others
PIPE_EOF_GRACE_S = 0.5  # a child whose pipe ended has this long to be seen exiting
RESTART_BACKOFF_MAX_S = 30.0  # longest wait before retrying a child that cannot start
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # a second one stops at once
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class Coordinator:
    def __init__(self, settings: ServeSettings, result_ttl_s: float | None = None):
        self.settings = settings.validate()
        self.identity = current()
        self.server_id = self.identity.server_id
        # First: without prometheus_client this fails before anything is opened.
        self.metrics = self._metrics() if settings.metrics else None
        self.store = open_store(settings.path, mode=settings.mode)
        self.result_ttl_s = result_ttl_s
        pacing = self.store.pacing
        self.poll_s = settings.poll_interval_s or pacing.poll_interval_s or DEFAULT_POLL_INTERVAL_S
        self.polling = pacing.polls_only or settings.poll_only
        self.listener = None if self.polling else self._listen()
        # Hand-off (stores that have it, servers that are woken): while a child of ours
        # is idle, a producer may claim a new job for it and wake it directly.
        hand_off = None if self.polling else self.store.hand_off
        self.pool = Pool(
            settings.path,
            settings.mode,
            settings.imports,
            measure_rss=settings.max_memory_per_child_mb is not None,
            server_id=self.server_id,
            hand_off=hand_off is not None,
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
        self.ledger = Ledger(self.server_id, self.metrics)
        self.pacer = Pacer(
            self.settings.prefetch_max, self.settings.max_tasks_per_child, self.poll_s
        )
        self.cancels = Cancels(self.ledger, self.settings.timeout_grace_s)
        self.deadlines = Deadlines(self.ledger, self.settings.timeout_grace_s, self.cancels)
        self.cancel_check = False  # a cancel may have been requested: read the requests
        self.handoff = Handoff(self.store, self.server_id, self.ledger, hand_off)
        self.signals = 0
        self.stop_deadline: float | None = None
        # --until-empty shows progress (a bar on a terminal, lines otherwise) unless it
        # was switched off; the run's summary is logged either way.
        show = settings.until_empty and settings.progress is not False
        self.progress = Progress(settings.progress) if show else None
        self.timers: dict[str, float] = {}
        self.next_sample_ms = 0  # when the next history sample is due (wall clock ms)
        self.more_ready = True
        self.next_due_ms: int | None = None
        self.backoff = StoreBackoff()
        self.reconcile = False
        self.start_failures = 0  # children in a row that died before they were ready
        self.start_at: list[float] = []  # when to start replacements held back by those
        # The periodic schedules that the --import modules define (imported here for
        # that); None when they define none, or with --no-periodic.
        self.scheduler = (
            Scheduler.for_server(self.store, self.server_id, settings.imports, settings.lease_s)
            if settings.periodic
            else None
        )

    def _metrics(self) -> ServerMetrics:
        from ..metrics import ServerMetrics  # imports prometheus_client: only when asked

        def workers() -> list[tuple[bool, bool]]:  # read by the scraping thread
            return [(s.ready, bool(s.inflight)) for s in list(self.pool.slots)]

        settings = self.settings
        metrics = ServerMetrics(settings.path, settings.mode, workers, settings.metrics_file)
        if settings.metrics_port is not None:
            try:  # before anything runs: a port in use is an error, not a surprise later
                metrics.listen(settings.metrics_host, settings.metrics_port)
            except BaseException:
                metrics.store.close()
                raise
        return metrics

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
        return EXIT_JOBS_DIED if self.settings.until_empty and self.ledger.stats.dead else EXIT_OK

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
            if self.cancel_check:
                self._guarded(self._read_cancels)
            self._enforce_deadlines()
            self._guarded(self._periodic)

    # ---- the store going away (a database restart, a lost connection) -------------------
    def _guarded(self, step: Callable[[], Any], commits: bool = False) -> Any:
        """Run a step that talks to the store; while the store fails, back off (see
        backoff) and keep the children's outcomes in memory until they can be committed.
        ``commits``: the step returns whether its commit changed something, which is
        what resets the backoff. A corrupt store is not retried: StoreCorrupt ends the
        server."""
        if self.backoff.waiting(time.monotonic()):
            return None
        try:
            result = step()
        except StoreCorrupt:
            raise
        except StoreError as exc:
            self.reconcile = True
            if self.backoff.failed(time.monotonic()):
                log.warning(
                    "store unavailable (%s); %d outcome(s) held, retrying in %.2f s",
                    exc,
                    len(self.ledger.outcomes),
                    self.backoff.backoff_s,
                )
            return None
        if self.backoff.succeeded(time.monotonic(), changed=commits and bool(result)):
            log.info("store available again; backoff reset")
        return result

    def _reconcile(self) -> None:
        """After a failed call whose commit may still have happened (the reply was lost),
        put back claims of ours that no child holds, so they are not stranded."""
        held = {job_id for slot in self.pool.slots for job_id in slot.inflight}
        live = {slot.pid for slot in self.pool.slots if slot.pid}
        stray = stray_claims(self.store.claims(self.server_id), held, live)
        pending = self.ledger.settling()
        self.ledger.release(j for j in stray if j not in pending)
        self.reconcile = False
        if stray:
            log.warning("put back %d claim(s) no worker holds after a store failure", len(stray))

    # ---- one cycle ------------------------------------------------------------------
    def _cycle(self) -> bool:
        """One commit of outcomes and claims; True if it changed something."""
        room = 0 if self.signals else self.pacer.room(self.pool.slots)
        if self.polling:
            per_poll = self.store.pacing.claims_per_poll
            due = self.pacer.poll_due(time.monotonic())
            room = (min(room, per_poll) if per_poll else room) if due else 0
        if self.reconcile:
            self._reconcile()
        if not self._cycle_wanted(room):
            return False
        outcomes = self.ledger.outcomes
        now = now_ms()
        limit = min(room, self.settings.batch)
        metrics = self.metrics
        began = time.perf_counter() if metrics is not None else 0.0
        _, claimed = self._finish_and_claim(outcomes, limit, now)
        committed = time.perf_counter() if metrics is not None else 0.0
        self.ledger.committed(outcomes)  # only once committed: on a store error they are kept
        self.ledger.progress_written()
        if limit > 0:
            self.more_ready = len(claimed) >= limit
        else:
            # Nothing was claimed, so nothing was learned about the ready queue, except
            # that jobs put back just now are in it: forgetting them would strand them
            # (no producer will send a wake-up for them).
            self.more_ready = self.more_ready or any(o.kind == "released" for o in outcomes)
        self._dispatch(claimed)  # first: the children start while we read on
        self.next_due_ms = self.store.next_run_at_ms(now_ms())
        if metrics is not None:
            metrics.cycled(time.perf_counter() - began, committed - began)
        return bool(outcomes or claimed)

    def _finish_and_claim(
        self, outcomes: list[Outcome], limit: int, now: int
    ) -> tuple[list[bool], list[JobRecord]]:
        """The cycle's one commit; with hand-off it also offers our idle children (none
        while stopping), replacing the previous offer."""
        hand_off = self.handoff.capability
        progress = self.ledger.progress or None
        queues = self.settings.queues
        if hand_off is None:
            return self.store.finish_and_claim(
                outcomes, self.server_id, limit, now, progress=progress, queues=queues
            )
        idle = [] if self.signals else self.handoff.offers(self.pacer.idle(self.pool.slots))
        return hand_off.finish_and_claim(
            outcomes,
            self.server_id,
            limit,
            now,
            idle_children=idle,
            progress=progress,
            queues=queues,
        )

    def _cycle_wanted(self, room: int) -> bool:
        """Whether a durable commit is worth paying for now.

        Claim when a child runs low (half its prefetch left), commit outcomes when one
        has waited COMMIT_DELAY_S, or at once when stopping or a child is low anyway.
        With short jobs both happen every few ms; with ~10 ms jobs several outcomes
        share one commit instead of each paying for its own (fsync and CPU that the
        workers on a small machine would otherwise lose).
        """
        ledger = self.ledger
        ledger.note_waiting(time.monotonic())
        if ledger.progress_due(time.monotonic()):
            return True  # polling or not: progress reports wait at most PROGRESS_COMMIT_S
        if self.polling:
            return bool(ledger.outcomes) or (room > 0 and self._maybe_ready())
        low = self.pacer.low(self.pool.slots)
        if room and low and self._maybe_ready():
            return True
        if not ledger.outcomes:
            return False
        return bool(
            self.signals
            or low
            or len(ledger.outcomes) >= self.settings.batch
            or time.monotonic() - (ledger.outcomes_since or 0.0) >= COMMIT_DELAY_S
        )

    def _maybe_ready(self) -> bool:
        """Whether a claim could find work: skip empty claim transactions while idle."""
        if self.polling or self.more_ready:
            return True
        return self.next_due_ms is not None and self.next_due_ms <= now_ms()

    def _dispatch(self, claimed: list[JobRecord]) -> None:
        """Hand jobs out in claim (priority) order, each to the least loaded child."""
        batches: dict[int, tuple[Slot, list[str]]] = {}
        per_child = self.pacer.per_child()
        slots = usable(self.pool.slots)
        room = {id(s): self.pacer.slot_room(s, per_child) for s in slots}
        now = time.monotonic()
        for rec in claimed:
            self.ledger.claim(rec)
            # Claims never exceed the summed room, so some slot always has room left.
            open_slots = [s for s in slots if room[id(s)] > 0] or slots
            slot = min(
                open_slots, key=lambda s: len(s.inflight) + len(batches.get(id(s), (s, []))[1])
            )
            room[id(slot)] -= 1
            batches.setdefault(id(slot), (slot, []))[1].append(rec.id)
        for slot, ids in batches.values():
            idle = not slot.inflight
            try:
                slot.send_jobs(ids, now)
            except OSError:
                pass  # the child just died; its exit handler deals with these ids
            if idle and self.metrics is not None:
                self._started(slot)

    # ---- waiting and messages ----------------------------------------------------------
    def _wait(self, wake_r: socket.socket) -> None:
        waitables: list[Any] = [wake_r]
        timeout = self._wait_timeout()
        per_child = self.pacer.per_child()
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
                self.cancel_check = self.cancel_check or listener.cancels()
        for slot in list(self.pool.slots):
            self._read_messages(slot)  # cheap when nothing came: one poll, no read
            if slot.sentinel in ready:
                self._on_child_exit(slot)

    def _read_cancels(self) -> None:
        """Stop the jobs of ours whose cancel was requested (see cancels.py)."""
        self.cancel_check = False
        requested = self.store.cancel_requests(self.server_id)
        if requested or self.cancels.sent:
            self.cancels.requested(requested, self.pool.slots, time.monotonic())

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
            or self.deadlines.of(slot) is not None
        ):
            return 0.0
        return self.pacer.unneeded_s(len(slot.inflight), per_child)

    def _wait_timeout(self) -> float:
        store_wait = self.backoff.retry_at - time.monotonic()
        if store_wait > 0:  # the store is failing: wait for children or the retry time
            return min(store_wait, RECLAIM_EVERY_S)
        room = 0 if self.signals else self.pacer.room(self.pool.slots)
        if self.polling and time.monotonic() < self.pacer.poll_at:
            room = 0  # between poll ticks a polling server claims nothing: sleep
        if self._cycle_wanted(room):
            return 0.0
        now_s = time.time()
        timeout = self.poll_s
        outcomes_since = self.ledger.outcomes_since
        if outcomes_since is not None and not self.polling:
            timeout = min(timeout, max(0.0, outcomes_since + COMMIT_DELAY_S - time.monotonic()))
        progress_at = self.ledger.progress_at()
        if progress_at is not None:
            timeout = min(timeout, max(0.0, progress_at - time.monotonic()))
        if self.next_due_ms is not None and room:  # with no room a due job has to wait
            timeout = min(timeout, max(0.0, self.next_due_ms / 1000 - now_s))
        deadline = self._next_deadline()
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - time.monotonic()))
        if self.polling:
            timeout = min(timeout, max(0.0, self.pacer.poll_at - time.monotonic()))
        if self.scheduler is not None:  # a schedule falls due: fire it on time
            timeout = min(timeout, self.scheduler.wait_s(now_ms()))
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
            self._ran(slot, message.job_id, now)
            self.ledger.done(message.job_id, message.result, message.preview)
            self._check_memory(slot, message.job_id, message.rss)
        elif isinstance(message, Failed):
            self._ran(slot, message.job_id, now)
            self.ledger.failed(
                message.job_id, message.error, message.retryable, message.retry_delay_s
            )
            self._check_memory(slot, message.job_id, message.rss)
        elif isinstance(message, Expired):  # not run: no duration for the pacer
            slot.pop_head(message.job_id, now)
            self.ledger.expired(message.job_id)
            if self.metrics is not None:
                self._started(slot)
        elif isinstance(message, Took):
            self.handoff.took(slot, message.job_id, now)
            if self.metrics is not None:
                self._started(slot)
        elif isinstance(message, ProgressReport):
            if slot.inflight and slot.inflight[0] == message.job_id:  # else: stale, dropped
                self.ledger.note_progress(message, now)
            return
        elif isinstance(message, Released):
            if not set(message.job_ids) <= set(slot.inflight):
                raise ProtocolError(f"released jobs it was never sent: {tuple(message.job_ids)!r}")
            for job_id in message.job_ids:
                slot.inflight.remove(job_id)
                self.ledger.release((job_id,))
        elif isinstance(message, InitError):
            # A replacement child that cannot start (a module gone from disk, no memory):
            # the server keeps serving with the others and retries with a backoff.
            log.error("a worker process failed to start: %s", message.text)
            slot.fault = "worker failed to start"
        else:
            self.pool.on_ready(slot, message)
            self.start_failures = 0
            self._heartbeat()
        if self.cancels.sent:  # the child may have started a job being cancelled
            self.cancels.head_changed(slot, now)
        limit = self.settings.max_tasks_per_child
        if limit is not None and slot.jobs_run >= limit:
            slot.retire()

    def _ran(self, slot: Slot, job_id: str, now: float) -> None:
        """The child reported the end of its head job."""
        ran_s = now - slot.head_since
        slot.pop_head(job_id, now)  # first: a report of another job is a ProtocolError
        self.pacer.observe(ran_s)
        self.ledger.ran(job_id, ran_s)
        if self.metrics is not None:
            self._started(slot)

    def _started(self, slot: Slot) -> None:
        """Metrics: the child's head job (if it has one) starts now: its start latency."""
        assert self.metrics is not None
        rec = self.ledger.claimed.get(slot.inflight[0]) if slot.inflight else None
        if rec is not None:
            self.metrics.started(rec.name, time.time() - rec.run_at_ms / 1000)

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
            self.ledger.ran(head, time.monotonic() - slot.head_since)
            reason = slot.fault or (
                f"worker killed by signal {-code}"
                if code is not None and code < 0
                else f"worker exited with code {code}"
            )
            self.ledger.charge(
                head,
                ErrorInfo(
                    "WorkerCrashed",
                    reason,
                    attempt=self.ledger.attempt(head),
                    at_ms=now_ms(),
                    kind="crash",
                ),
            )
            if not slot.retiring:
                log.warning("job %s: %s", head, reason)
        self.ledger.release_all(slot.inflight)
        self.pool.remove(slot)
        if not self.handoff.recall(slot):
            self.reconcile = True  # _reconcile puts back claims no live child holds
        if not self.signals:
            if self.metrics is not None:
                self.metrics.restarted(_restart_reason(slot))
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

    # ---- deadlines ----------------------------------------------------------------------
    def _next_deadline(self) -> float | None:
        deadlines = [self.deadlines.next(self.pool.slots), self.stop_deadline, *self.start_at]
        return min((d for d in deadlines if d is not None), default=None)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        self._check_pipes(now)
        self._start_held_back(now)
        for job_id, error in self.deadlines.kill_overdue(list(self.pool.slots), now):
            self.ledger.charge(job_id, error)

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
            if self.handoff.enabled and not self.signals:
                self.handoff.resend(usable(self.pool.slots))
        if self._every("cancels", self.poll_s):
            self.cancel_check = True  # the safety net for a lost cancel, or no wake-ups
        if self._every("reclaim", RECLAIM_EVERY_S):
            if recovery.reclaim_dead(self.store, self.server_id, lease_s=self.settings.lease_s):
                self.more_ready = True
            self.next_due_ms = self.store.next_run_at_ms(now_ms())  # others may have scheduled
        # Beat several times per lease, so one slow cycle never looks like a death. A
        # history sample rides on a beat: when one is due, the beat comes now (and the
        # next one a whole period later), so sampling adds no commit.
        beat_s = min(HEARTBEAT_EVERY_S, self.settings.lease_s / 4)
        sample_at_ms = self._history_due()
        if self._every("heartbeat", beat_s) or sample_at_ms is not None:
            self.timers["heartbeat"] = time.monotonic() + beat_s
            self._heartbeat(sample_at_ms)
        if self._every("maintenance", MAINTENANCE_EVERY_S):
            self.store.maintenance()
        if self.result_ttl_s is not None and self._every("expire", EXPIRE_EVERY_S):
            self.store.expire_finished(now_ms() - int(self.result_ttl_s * 1000))
        if self.progress is not None:
            self.progress.update(self.ledger.stats, self.store.stats)
        self._fire_schedules()

    def _fire_schedules(self) -> None:
        """Enqueue the due slots of our periodic schedules (see periodic.py); the next
        cycle claims them."""
        scheduler = self.scheduler
        if scheduler is None or self.signals or not scheduler.due(now_ms()):
            return
        if self._guarded(lambda: scheduler.run(now_ms())):
            self.more_ready = True

    def _heartbeat(self, sample_at_ms: int | None = None) -> None:
        """Register this server; with ``sample_at_ms``, the heartbeat's commit carries a
        sample of the depth history too (no commit of its own)."""
        self.store.heartbeat(
            self.server_id,
            recovery.heartbeat_info(
                self.identity,
                self.pool.children(),
                self.settings.lease_s,
                None if self.settings.queues is None else self.settings.queues.names,
            ),
            sample_at_ms,
        )

    def _history_due(self) -> int | None:
        """The time of a history sample to take now, or None. Sampling falls on a wall
        clock grid of the interval, so each finest slot gets one sample whatever the
        loop's timing (a period counted from the last sample would drift past slots)."""
        now = now_ms()
        if now < self.next_sample_ms:
            return None
        period_ms = max(1, int(self.settings.history_every_s * 1000))
        self.next_sample_ms = (now // period_ms + 1) * period_ms
        return now

    # ---- ending -------------------------------------------------------------------------
    def _finished(self) -> bool:
        """--until-empty: nothing ready, due or running, and no retry of ours pending."""
        if not self.settings.until_empty or self.ledger.outcomes or self.more_ready:
            return False
        if any(s.inflight for s in self.pool.slots):
            return False
        if self._work_left():
            return False
        if self.next_due_ms is not None and self.next_due_ms <= now_ms():
            return False
        pending = [
            r
            for j in self.ledger.retrying
            if (r := self.store.get(j)) is not None and r.state is JobState.SCHEDULED
        ]
        return not pending

    def _work_left(self) -> bool:
        """Whether jobs of the queues served are ready or running (anywhere)."""
        selection = self.settings.queues
        if selection is None:
            counts = self.store.stats()
            return bool(counts["ready"] or counts["processing"])
        depths = self.store.gauges().queues
        return any(sum(depths.get(name, {}).values()) for name in selection.names)

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
            self.ledger.release_all(slot.inflight)
            self.pool.remove(slot)
        outcomes = self.ledger.take()
        try:
            self.store.finish(outcomes, now_ms())
            self.ledger.settle(outcomes)
            self.store.requeue_server(self.server_id)
            self.store.unregister_server(self.server_id)
            if self.progress is not None:  # the bar ends on the run's final figures
                self.progress.update(self.ledger.stats, self.store.stats, force=True)
        finally:
            if self.listener is not None:
                self.listener.close()
            if self.progress is not None:
                self.progress.close(self.ledger.stats)
            stats = self.ledger.stats
            log.info(
                "stopped: %d done, %d dead, %d retried, %d put back",
                stats.done,
                stats.dead,
                stats.retried,
                stats.released,
            )
            try:
                if self.metrics is not None:
                    self.metrics.close()  # after the last settle: the file counts every job
            finally:
                self.store.close()


def _restart_reason(slot: Slot) -> str:
    """Why a worker is replaced, as ``mpqueue_worker_restarts_total`` labels it."""
    if slot.retiring:
        return "retired"  # --max-tasks-per-child, --max-memory-per-child
    return "killed" if slot.killed else "crashed"


def _drain_socket(sock: socket.socket) -> None:
    try:
        while sock.recv(512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def serve(settings: ServeSettings, result_ttl_s: float | None = None) -> int:
    """Run a server in this process; returns its exit code."""
    return Coordinator(settings, result_ttl_s).run()
