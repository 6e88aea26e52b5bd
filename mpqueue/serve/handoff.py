"""Hand-off, the coordinator's side: offers, taken hand-offs, recall and re-sending.

With hand-off (stores that have it, servers that are woken), each commit offers the
server's idle children to producers; a producer then claims a new job for one of them
and sends its id to that child's socket, bypassing the server. ``Handoff`` keeps the
server's books right about such jobs: it takes over the record of a job a child
reports taking, puts back the jobs handed to a child that died before taking them, and
re-sends the ones a child may have missed (a lost datagram).
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from ..errors import StoreError
from ..records import Claim
from ..store.base import HandOff, Store
from . import protocol
from .ledger import Ledger
from .pool import Slot
from .protocol import Handed

log = logging.getLogger("mpqueue.serve")


def missed_hand_offs(
    claims: list[Claim], live_pids: set[int], claimed: Collection[str], settling: set[str]
) -> dict[int, list[str]]:
    """Per live child, the jobs handed to it that it has not reported taking: not in
    ``claimed`` (what the server knows to be running) nor ``settling`` (recalled ones
    wait for their put-back to commit: a new child may reuse a pid)."""
    missed: dict[int, list[str]] = {}
    for claim in claims:
        if (
            claim.child_pid in live_pids
            and claim.job_id not in claimed
            and claim.job_id not in settling
        ):
            missed.setdefault(claim.child_pid, []).append(claim.job_id)
    return missed


class Handoff:
    """What the server does about jobs producers hand to its children."""

    def __init__(self, store: Store, server_id: str, ledger: Ledger, capability: HandOff | None):
        self.store = store
        self.server_id = server_id
        self.ledger = ledger
        self.capability = capability  # the store's hand-off, None: no hand-off here

    @property
    def enabled(self) -> bool:
        """Off: no offers, and nothing here has work to do."""
        return self.capability is not None

    def offers(self, idle: list[Slot]) -> list[int]:
        """The pids of the idle children to offer to producers in this commit."""
        return [s.pid for s in idle if s.hand_off]

    def took(self, slot: Slot, job_id: str, now: float) -> None:
        """A child started a job a producer handed to it: it is ours to account for."""
        rec = self.ledger.claimed.get(job_id)
        if rec is None:
            try:
                rec = self.store.get(job_id)  # for its timeout and retry limit
            except StoreError:
                rec = None  # then it runs without the hard timeout; the soft one holds
        if rec is not None:
            self.ledger.claimed[job_id] = rec
        self.ledger.retrying.discard(job_id)
        slot.took(job_id, now)

    def recall(self, slot: Slot) -> bool:
        """A child is gone: withdraw its offer, and put back the jobs handed to it that
        it never took (uncharged; the next claim hands them out again). False if the
        store failed: then the claims no live child holds must be reconciled."""
        if self.capability is None or not slot.pid:
            return True
        try:
            lost = self.capability.recall(self.server_id, slot.pid, self.ledger.claimed)
        except StoreError:
            return False
        self.ledger.release(rec.id for rec in lost)
        if lost:
            log.warning(
                "put back %d job(s) handed to worker %d before it could take them",
                len(lost),
                slot.pid,
            )
        return True

    def resend(self, usable: list[Slot]) -> None:
        """The safety net for a lost hand-off datagram: tell each idle-looking child the
        jobs handed to it that it has not reported taking (it skips those it ran)."""
        by_pid = {s.pid: s for s in usable}
        claims = self.store.claims(self.server_id)
        missed = missed_hand_offs(claims, set(by_pid), self.ledger.claimed, self.ledger.settling())
        for pid, job_ids in missed.items():
            try:
                protocol.send_command(by_pid[pid].conn, Handed(job_ids))
            except OSError:
                pass  # it just died: its exit recalls these
