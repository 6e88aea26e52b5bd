"""The coordinator's books: outcomes waiting to be committed, the records of the jobs
its children hold, the jobs of its that wait for a retry, and the run's counts.

An outcome is recorded here the moment it is known (a child's report, a crash, a
timeout kill) and leaves only once a commit succeeded, so a failing store costs no
outcome. Committing one settles its job: it is counted, and a job that will be retried
is remembered for --until-empty.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..logs import job_lines_wanted, log_ending
from ..outcomes import CANCELLED, DEAD, DONE, EXPIRED, RELEASED, RETRIED, ending
from ..records import Claim, ErrorInfo, JobRecord, Outcome, Progress
from .protocol import ProgressReport

if TYPE_CHECKING:  # only then: metrics.py imports prometheus_client
    from ..metrics import ServerMetrics

log = logging.getLogger("mpqueue.serve")

PROGRESS_COMMIT_S = 0.5  # longest a progress report waits for a commit to ride on


class RunStats:
    """What happened to the jobs this server ran."""

    def __init__(self) -> None:
        self.done = self.retried = self.dead = self.released = self.cancelled = 0
        self.expired = 0
        self.started_at = time.monotonic()


class Ledger:
    """Outcomes to commit, claimed and retrying jobs, and the run's counts."""

    def __init__(self, server_id: str, metrics: ServerMetrics | None = None):
        self.server_id = server_id
        self.metrics = metrics  # None: metrics are off (and cost a None check)
        self.outcomes: list[Outcome] = []
        self.outcomes_since: float | None = None  # when the oldest uncommitted one came
        self.claimed: dict[str, JobRecord] = {}  # job id -> its record, while ours
        self.retrying: set[str] = set()  # ours, failed, to be retried
        self.stats = RunStats()
        self.progress: dict[str, Progress] = {}  # the latest report of each job, to write
        self.progress_since: float | None = None  # when the oldest of them came
        # How long each run that ended took, kept only while per-job lines are logged or
        # metrics kept.
        self.lines = job_lines_wanted()
        self.durations: dict[str, float] | None = {} if self.lines or metrics is not None else None

    # ---- recording ----------------------------------------------------------------
    def done(self, job_id: str, result: bytes, preview: str | None = None) -> None:
        self.outcomes.append(Outcome.done(job_id, self.server_id, result, preview))

    def failed(
        self, job_id: str, error: ErrorInfo, retryable: bool, retry_delay_s: float | None
    ) -> None:
        self.outcomes.append(
            Outcome.failed(
                job_id, self.server_id, error, retryable=retryable, retry_delay_s=retry_delay_s
            )
        )

    def ran(self, job_id: str, seconds: float) -> None:
        """The run of ``job_id`` ended after ``seconds`` (for its log line)."""
        if self.durations is not None:
            self.durations[job_id] = seconds

    def expired(self, job_id: str) -> None:
        """A child did not start this job: its deadline had passed (see expiry.py)."""
        self.outcomes.append(Outcome.expired(job_id, self.server_id))

    def charge(self, job_id: str, error: ErrorInfo) -> None:
        """A job the server ended (a crash, a timeout kill) failed with ``error``."""
        # A crash says nothing about the job's own logic timing: retry it at once.
        delay = 0.0 if error.kind == "crash" else None
        self.outcomes.append(Outcome.failed(job_id, self.server_id, error, retry_delay_s=delay))

    def release(self, job_ids: Iterable[str]) -> None:
        """Put these jobs back, uncharged."""
        self.outcomes += [Outcome.released(j, self.server_id) for j in job_ids]

    def release_all(self, inflight: deque[str]) -> None:
        """Put back everything a child held, emptying its queue."""
        while inflight:
            self.outcomes.append(Outcome.released(inflight.popleft(), self.server_id))

    def note_progress(self, report: ProgressReport, now: float) -> None:
        """A running job's progress: written with the next commit, or within
        ``PROGRESS_COMMIT_S`` by a commit of its own if none comes sooner."""
        self.progress[report.job_id] = Progress(*report[1:])
        if self.progress_since is None:
            self.progress_since = now

    def progress_at(self) -> float | None:
        """When the progress waiting must be committed (None: none waits)."""
        return None if self.progress_since is None else self.progress_since + PROGRESS_COMMIT_S

    def progress_due(self, now: float) -> bool:
        at = self.progress_at()
        return at is not None and now >= at

    def progress_written(self) -> None:
        """The progress waiting was committed (with the cycle's outcomes: kept, like
        them, while the store fails)."""
        if self.progress:
            self.progress, self.progress_since = {}, None

    def note_waiting(self, now: float) -> None:
        """Start the commit delay's clock when outcomes wait and it is not running."""
        if self.outcomes and self.outcomes_since is None:
            self.outcomes_since = now

    def settling(self) -> set[str]:
        """Jobs whose outcome waits to be committed."""
        return {o.job_id for o in self.outcomes}

    # ---- claims -------------------------------------------------------------------
    def claim(self, rec: JobRecord) -> None:
        """The job is ours now (claimed, or taken by a child from a hand-off)."""
        self.claimed[rec.id] = rec
        self.retrying.discard(rec.id)

    def attempt(self, job_id: str) -> int:
        """The attempt a job of ours is on (0 if its record is unknown)."""
        rec = self.claimed.get(job_id)
        return rec.attempts if rec is not None else 0

    # ---- committing ---------------------------------------------------------------
    def committed(self, outcomes: list[Outcome]) -> None:
        """``outcomes`` (the list that was pending) are committed: drop and settle them."""
        self.outcomes = []
        self.outcomes_since = None
        self.settle(outcomes)

    def take(self) -> list[Outcome]:
        """Every pending outcome, for a commit that may not be retried (shutdown)."""
        outcomes, self.outcomes = self.outcomes, []
        return outcomes

    def settle(self, outcomes: list[Outcome]) -> None:
        """Count committed outcomes, and remember the jobs that will be retried."""
        stats, durations, metrics = self.stats, self.durations, self.metrics
        for outcome in outcomes:
            rec = self.claimed.pop(outcome.job_id, None)
            how = ending(rec, outcome)
            if durations is not None:
                ran_s = durations.pop(outcome.job_id, None)
                if self.lines:
                    log_ending(how, outcome, rec, ran_s)
                if metrics is not None:
                    failure = (
                        outcome.error.kind if how in (RETRIED, DEAD) and outcome.error else None
                    )
                    metrics.ended(how, None if rec is None else rec.name, ran_s, failure)
            if how == DONE:
                stats.done += 1
            elif how == RELEASED:
                stats.released += 1
            elif how == EXPIRED:
                stats.expired += 1  # never ran: nothing to retry
            elif how == CANCELLED:
                stats.cancelled += 1  # stopped for its cancel: the store cancels it
            elif how == DEAD:
                stats.dead += 1
                if rec is not None:
                    log.warning(
                        "job %s (%s) is dead after %d attempt(s): %s",
                        rec.id,
                        rec.name,
                        rec.attempts,
                        outcome.error,
                    )
            else:
                stats.retried += 1
                self.retrying.add(outcome.job_id)


def stray_claims(claims: list[Claim], held: set[str], live_pids: set[int]) -> list[str]:
    """Claims of ours that no child holds, and that were not handed to a live child
    which has yet to take them: after a lost reply they would be stranded."""
    return [c.job_id for c in claims if c.job_id not in held and c.child_pid not in live_pids]
