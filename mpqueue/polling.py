"""Waiting for jobs to end by reading the store: ``Job.result`` (``Queue.wait_finished``)
and a group's handle (``GroupHandle.as_completed``) poll with this pause, 1 ms doubling
to 50 ms while nothing ends, within their deadline."""

from __future__ import annotations

import time

POLL_MIN_S = 0.001
POLL_MAX_S = 0.05


class Poll:
    """The pauses and the deadline (``timeout`` seconds from now; None: no limit) of one
    wait."""

    def __init__(self, timeout: float | None):
        self.deadline = None if timeout is None else time.monotonic() + timeout
        self.pause = POLL_MIN_S

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def sleep(self) -> None:
        """Sleep the current pause (never past the deadline), then double it."""
        left = None if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        time.sleep(self.pause if left is None else min(self.pause, left))
        self.pause = min(self.pause * 2, POLL_MAX_S)

    def reset(self) -> None:
        """Something ended: the next pause is the shortest again."""
        self.pause = POLL_MIN_S
