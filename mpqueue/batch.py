"""``Queue.batch()``: the jobs enqueued in a block are written in one transaction at its
end, so either all of them are in the store or none is.

A batch belongs to the thread that opened it (other threads keep enqueueing at once) and
to one queue. Blocks nest: an inner block joins the outer one, which commits. An
exception leaving the outermost block discards the batch, and nothing is written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .records import JobRecord


class Batches:
    """The open batch of each thread, for one queue."""

    def __init__(self) -> None:
        self._local = threading.local()

    def collecting(self) -> list[JobRecord] | None:
        """The records of this thread's open batch, or None when there is none."""
        return getattr(self._local, "records", None)

    @contextmanager
    def open(self, commit: Callable[[list[JobRecord]], None]) -> Iterator[None]:
        """A block whose enqueues ``commit`` writes at its end (the outermost block's)."""
        if self.collecting() is not None:
            yield  # nested: the outer block commits
            return
        self._local.records = []
        try:
            yield
            records = self._local.records
        finally:
            self._local.records = None  # also on an exception: the batch is discarded
        if records:
            commit(records)
