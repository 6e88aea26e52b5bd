"""Job timeouts the server enforces: the hard kill after the grace.

A job with a timeout gets SIGALRM in its child when it runs out (the soft limit, see
child.py). A job that ignores it (a bare ``except:``, a C extension that never returns
to Python) is still running ``timeout_grace_s`` later: then the server kills its child
and charges the job. ``Deadlines`` works out when that is for each child's head job,
and kills the children whose head is past it. A job whose cancel was requested gets
the same grace to stop (see ``cancels.py``).
"""

from __future__ import annotations

import logging

from ..records import ErrorInfo, JobRecord, now_ms
from .cancels import Cancels
from .ledger import Ledger
from .pool import Slot

log = logging.getLogger("mpqueue.serve")


def kill_at(head_since: float, timeout_s: float | None, grace_s: float) -> float | None:
    """When a job that started at ``head_since`` (monotonic) is killed; None: never."""
    if not timeout_s:
        return None
    return head_since + timeout_s + grace_s


def timeout_error(rec: JobRecord) -> ErrorInfo:
    """What a job killed at its deadline is charged with."""
    return ErrorInfo(
        "JobTimeout",
        f"job exceeded its timeout of {rec.timeout_s} s and was killed",
        attempt=rec.attempts,
        at_ms=now_ms(),
        kind="timeout",
    )


class Deadlines:
    """The hard deadline of each child's running job, from the records claimed."""

    def __init__(self, ledger: Ledger, grace_s: float, cancels: Cancels | None = None):
        self.ledger = ledger
        self.grace_s = grace_s
        self.cancels = cancels or Cancels(ledger, grace_s)

    def of(self, slot: Slot) -> float | None:
        """When ``slot``'s head job is killed, or None if it has no deadline."""
        # A killed slot's head was charged already; what is left behind it never ran
        # (head_since is the dead job's start) and is released when the exit is seen.
        if not slot.inflight or slot.killed:
            return None
        cancel = self.cancels.kill_due(slot)
        rec = self.ledger.claimed.get(slot.inflight[0])
        timeout = None if rec is None else kill_at(slot.head_since, rec.timeout_s, self.grace_s)
        if cancel is None or timeout is None:
            return cancel if timeout is None else timeout
        return min(cancel, timeout)

    def next(self, slots: list[Slot]) -> float | None:
        """The earliest deadline of any slot's head job."""
        return min((d for s in slots if (d := self.of(s)) is not None), default=None)

    def kill_overdue(self, slots: list[Slot], now: float) -> list[tuple[str, ErrorInfo]]:
        """Kill every child whose head job is past its deadline; returns each such job
        with what to charge it (the head is popped: the exit must not charge it too)."""
        charges: list[tuple[str, ErrorInfo]] = []
        for slot in slots:
            deadline = self.of(slot)
            if deadline is None or now < deadline:
                continue
            cancel = self.cancels.kill_due(slot)
            head = slot.inflight.popleft()
            self.ledger.ran(head, now - slot.head_since)
            slot.killed = True
            slot.kill()
            if cancel is not None and now >= cancel:
                charges.append((head, self.cancels.killed(head)))
                continue
            rec = self.ledger.claimed[head]
            log.warning(
                "job %s ran past its %s s timeout: killing worker %d",
                head,
                rec.timeout_s,
                slot.pid,
            )
            charges.append((head, timeout_error(rec)))
        return charges
