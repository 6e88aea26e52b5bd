"""The coordinator's backoff while its store fails (a database restart, a lost
connection, a full disk).

After a failure the next call waits, twice as long after each further failure up to a
maximum. Only a commit that changed something, or a quiet spell without failures,
resets it: reads succeed on a full disk and must not keep it at its minimum. The
warning is logged once per step (and once a minute at the top one), not per retry.
"""

from __future__ import annotations

BACKOFF_MIN_S = 0.05  # first retry after a store failure; doubles up to the max
BACKOFF_MAX_S = 5.0
QUIET_S = 2 * BACKOFF_MAX_S  # this long without a failure resets the backoff
FAILING_LOG_S = 60.0  # at the top backoff step, a reminder this often


class StoreBackoff:
    """When the store may be called again, and when to say so in the log."""

    def __init__(self) -> None:
        self.retry_at = 0.0  # monotonic time before which the store is not called
        self.backoff_s = BACKOFF_MIN_S
        self.failed_at = 0.0  # monotonic time of the last failure; 0: not failing
        self.logged_s = self.logged_at = 0.0  # the backoff last logged, and when

    def waiting(self, now: float) -> bool:
        """Whether a call now is still held back."""
        return now < self.retry_at

    def failed(self, now: float) -> bool:
        """A call failed: set the next retry time. True if it should be logged."""
        self.backoff_s = (
            min(BACKOFF_MAX_S, self.backoff_s * 2) if self.failed_at > 0 else BACKOFF_MIN_S
        )
        self.failed_at = now
        self.retry_at = now + self.backoff_s
        if self.backoff_s != self.logged_s or now - self.logged_at >= FAILING_LOG_S:
            self.logged_s, self.logged_at = self.backoff_s, now
            return True
        return False

    def succeeded(self, now: float, changed: bool) -> bool:
        """A call succeeded (``changed``: a commit that changed something). True if
        this ended a failing spell that was logged."""
        if not self.failed_at or not (changed or now - self.failed_at >= QUIET_S):
            return False
        logged = bool(self.logged_s)
        self.failed_at, self.logged_s = 0.0, 0.0
        return logged
