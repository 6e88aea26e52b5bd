"""serve/handoff.py: which hand-offs a child may have missed, so they are re-sent."""

from __future__ import annotations

from mpqueue.records import Claim
from mpqueue.serve.handoff import missed_hand_offs

A, B, C, D = "a" * 32, "b" * 32, "c" * 32, "d" * 32


def test_missed_hand_offs_are_those_of_live_children_not_yet_reported():
    claims = [
        Claim(A, "server", 0, child_pid=10),  # handed to 10, not taken: missed
        Claim(B, "server", 0, child_pid=10),  # 10 reported taking it
        Claim(C, "server", 0, child_pid=11),  # 11 is not a live child
        Claim(D, "server", 0, child_pid=12),  # recalled: its put-back is settling
        Claim("e" * 32, "server", 0),  # claimed by the server itself
        Claim("f" * 32, "server", 0, child_pid=10),
    ]
    missed = missed_hand_offs(claims, live_pids={10, 12}, claimed={B}, settling={D})
    assert missed == {10: [A, "f" * 32]}
    assert missed_hand_offs(claims, live_pids=set(), claimed=set(), settling=set()) == {}
