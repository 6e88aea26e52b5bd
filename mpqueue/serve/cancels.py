"""Stopping the running jobs whose cancel was requested, on the server's side.

The store keeps the requests (``Store.cancel_requests``); the server reads its own
when a wake-up says a cancel came, and on every safety poll. For each requested job:

- a child holds it: the job id goes down that child's cancel pipe, then SIGUSR2. The
  child raises ``mpqueue.Cancelled`` in the job if it is running it, or skips it when
  its turn comes (see ``child.py``); a running job that has not stopped
  ``timeout_grace_s`` later is killed with its child (``deadlines.py``), as a timeout
  is;
- no child holds it: its outcome is waiting to be committed (the commit ends it
  cancelled), or a producer's hand-off is about to reach a child (the next read
  finds it there); a job no child holds at two reads in a row is put back, which
  the store turns into cancelled.

Whatever the job's outcome then, the store ends it cancelled: this module only makes
it come sooner. Nothing here runs while no cancel is requested.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from ..cancellation import cancel_entry
from ..records import ErrorInfo, now_ms
from .ledger import Ledger
from .pool import Slot

log = logging.getLogger("mpqueue.serve")


class Cancels:
    """The cancel requests of this server's jobs that are still being carried out."""

    def __init__(self, ledger: Ledger, grace_s: float):
        self.ledger = ledger
        self.grace_s = grace_s
        self.sent: dict[str, int] = {}  # job id -> pid of the child told to stop it
        self.kill_at: dict[str, float] = {}  # running job -> when its child is killed
        self.unplaced: set[str] = set()  # requested, held by no child at the last read

    def requested(self, job_ids: Sequence[str], slots: Sequence[Slot], now: float) -> None:
        """Carry out the requests read from the store (every one of ours there is)."""
        wanted = set(job_ids)
        for gone in [j for j in self.sent if j not in wanted]:  # ended meanwhile
            self.sent.pop(gone)
            self.kill_at.pop(gone, None)
        holders = {job_id: slot for slot in slots for job_id in slot.inflight}
        settling = self.ledger.settling() if wanted else set()
        unplaced = set()
        told: dict[int, tuple[Slot, list[str]]] = {}  # per child: the ids to send it
        for job_id in job_ids:
            slot = holders.get(job_id)
            if slot is not None:
                if self.sent.get(job_id) != slot.pid:
                    told.setdefault(id(slot), (slot, []))[1].append(job_id)
            elif job_id in settling:
                continue  # its outcome's commit ends it cancelled
            elif job_id in self.unplaced:
                self.ledger.release((job_id,))  # held by no child: put back, so cancelled
            else:
                unplaced.add(job_id)
        self.unplaced = unplaced
        for slot, ids in told.values():
            self._tell(slot, ids, now)

    def _tell(self, slot: Slot, job_ids: list[str], now: float) -> None:
        """Send a child every id it is to stop, then one signal: it stops its running job
        at once, and must know the jobs queued behind it by then."""
        log.info("cancel requested: stopping %s in worker %d", ", ".join(job_ids), slot.pid)
        slot.send_cancels(job_ids)
        self.sent.update(dict.fromkeys(job_ids, slot.pid))
        self.head_changed(slot, now)

    def head_changed(self, slot: Slot, now: float) -> None:
        """A child started its next job: if that job is being cancelled, its time to
        stop starts now (a child stuck in a call does not see its cancel)."""
        if slot.inflight and slot.inflight[0] in self.sent:
            self.kill_at.setdefault(slot.inflight[0], now + self.grace_s)

    def kill_due(self, slot: Slot) -> float | None:
        """When ``slot``'s running job is killed for its cancel (None: it is not)."""
        if not self.kill_at or not slot.inflight:
            return None
        return self.kill_at.get(slot.inflight[0])

    def killed(self, job_id: str) -> ErrorInfo:
        """What a job killed for its cancel is charged with (the store's commit ends it
        cancelled, with the request's text)."""
        self.sent.pop(job_id, None)
        self.kill_at.pop(job_id, None)
        log.warning(
            "job %s did not stop within %.1f s of its cancel: killing its worker",
            job_id,
            self.grace_s,
        )
        text = f"did not stop within {self.grace_s} s of its cancel; its worker was killed"
        return cancel_entry(text, self.ledger.attempt(job_id), now_ms())
