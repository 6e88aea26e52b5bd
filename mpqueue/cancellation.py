"""Cancelling jobs: the rules every store follows, and the bulk cancel's batches.

A job that has not started (waiting, scheduled, ready) is cancelled at once: it ends
``cancelled`` in the transaction of the cancel, with who cancelled it (and why) as the
last entry of its history, and the jobs waiting for it are settled as for a failed
job. A running (processing) job cannot be ended by the store alone: the cancel
records a *request* on its claim and wakes its server, which stops the job (see
``serve/cancels.py``). From the request's commit on, the job can only end cancelled:
whatever outcome its server commits afterwards (done, failed, put back by a shutdown
or by recovery after the server died) is turned into ``cancelled`` (see
``requested``). So a cancel that races a job's own end gives one terminal
state: the first of the two commits wins. A job that already ended is left as it is.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .errors import ConfigError
from .identity import host_id
from .limits import REASON_MAX
from .records import QUEUED_STATES, ErrorInfo, JobRecord, JobState, Outcome, now_ms

# States a bulk cancel may name; by default it takes every job that has not ended.
CANCELLABLE = (JobState.WAITING, JobState.SCHEDULED, JobState.READY, JobState.PROCESSING)
# Jobs one transaction of a bulk cancel ends: short commits, so servers claiming and
# finishing meanwhile wait for none of them for long.
BULK_BATCH = 5000


@dataclass
class CancelReport:
    """What a cancel did, by job id.

    ``cancelled``: queued jobs it ended; ``requested``: running jobs whose server was
    asked to stop them (they end cancelled); ``finished``: jobs that had ended already
    (unchanged); ``missing``: ids of no job."""

    cancelled: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def merge(self, other: CancelReport) -> CancelReport:
        for name in ("cancelled", "requested", "finished", "missing"):
            getattr(self, name).extend(getattr(other, name))
        return self

    def counts(self) -> dict[str, int]:
        return {name: len(ids) for name, ids in self.as_dict().items()}

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "cancelled": self.cancelled,
            "requested": self.requested,
            "finished": self.finished,
            "missing": self.missing,
        }


def who() -> str:
    """The user, host and process a cancel comes from, for the job's history."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container's bare uid)
        user = f"uid {os.getuid()}"
    return f"{user} on {host_id()} (pid {os.getpid()})"


def check_reason(reason: Any) -> str:
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise ConfigError(f"reason must be a string, not {type(reason).__name__}")
    if len(reason) > REASON_MAX:
        raise ConfigError(f"reason is {len(reason)} characters; at most {REASON_MAX}")
    return reason


def request_text(reason: str = "") -> str:
    """The history entry of a cancel: who asked, and why if they said. Stores keep it
    as the message of the job's last error (``dependencies.cancelled`` for a queued
    job, ``requested`` for a running one)."""
    return f"cancelled by {who()}" + (f": {reason}" if reason else "")


def cancel_entry(text: str, attempt: int, now: int) -> ErrorInfo:
    """The entry a cancelled job's history ends with (``text``: why, or who asked)."""
    return ErrorInfo("Cancelled", text, attempt=attempt, at_ms=now, kind="cancelled")


def requested(outcome: Outcome, text: str, attempt: int, now: int) -> Outcome:
    """The outcome of a job whose cancel (``text``) was requested while it ran: it ends
    cancelled, whatever ``outcome`` its run came to (the request committed first)."""
    error = cancel_entry(text, attempt, now)
    return Outcome(outcome.job_id, outcome.server_id, "cancelled", error=error)


def check_states(states: str | JobState | Iterable[str | JobState] | None) -> tuple[JobState, ...]:
    """The states a bulk cancel takes (all it may take when None); a one-line
    ConfigError for a state no job can be cancelled from."""
    if states is None:
        return CANCELLABLE
    given = [states] if isinstance(states, (str, JobState)) else list(states)
    chosen = []
    for state in given:
        try:
            parsed = JobState(state)
        except ValueError:
            parsed = None
        if parsed not in CANCELLABLE:
            names = ", ".join(s.value for s in CANCELLABLE)
            raise ConfigError(f"cannot cancel jobs in state {state!r}; choose from {names}")
        chosen.append(parsed)
    if not chosen:
        raise ConfigError("no state to cancel jobs in was given")
    return tuple(dict.fromkeys(chosen))


def preview(job_ids: Sequence[str], records: Sequence[JobRecord | None]) -> CancelReport:
    """What cancelling these jobs (``records`` as read, None where missing) would do."""
    report = CancelReport()
    for job_id, rec in zip(job_ids, records):
        if rec is None:
            report.missing.append(job_id)
        elif rec.state in QUEUED_STATES and not rec.is_corrupt:
            report.cancelled.append(job_id)
        elif rec.state is JobState.PROCESSING:
            report.requested.append(job_id)
        else:
            report.finished.append(job_id)
    return report


class BulkCanceller(Protocol):
    """What a store gives a bulk cancel (``Store.cancel_matching``)."""

    def cancel_matching(
        self,
        name: str | None,
        states: Collection[JobState],
        text: str,
        now_ms: int,
        limit: int,
        after: str,
    ) -> tuple[CancelReport, str | None]: ...


def cancel_all(
    store: BulkCanceller,
    name: str | None,
    states: Collection[JobState],
    text: str,
    batch: int = BULK_BATCH,
) -> CancelReport:
    """Cancel every job of task ``name`` (any task: None) in ``states``, in batches of
    ``batch`` jobs, one transaction each, in one pass over the matching index."""
    report, after = CancelReport(), ""
    while True:
        part, resume = store.cancel_matching(name, states, text, now_ms(), batch, after)
        report.merge(part)
        if resume is None:
            return report
        after = resume
