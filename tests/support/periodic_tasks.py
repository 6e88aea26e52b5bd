"""Periodic tasks for the ``mpqueue serve`` process tests (tests/serve/test_periodic.py).

Servers import this module (``--import tests.support.periodic_tasks``) and so declare
and fire its schedules; each job's run-at is its slot, which is what the tests count.
"""

from __future__ import annotations

from datetime import timedelta

from mpqueue import Queue

queue = Queue()  # never opened here: the servers fire into the store they serve


@queue.periodic(every=timedelta(seconds=1), catch_up="all")
def every_second_all() -> None:
    """Every slot, caught up after any gap."""


@queue.periodic(every=timedelta(seconds=1))
def every_second_latest() -> None:
    """The latest missed slot only, after a gap."""
