"""serve/backoff.py: how a coordinator waits out a failing store, and when it logs."""

from __future__ import annotations

import pytest

from mpqueue.serve.backoff import BACKOFF_MAX_S, BACKOFF_MIN_S, FAILING_LOG_S, QUIET_S, StoreBackoff


def test_each_failure_doubles_the_wait_up_to_the_maximum():
    backoff = StoreBackoff()
    assert not backoff.waiting(0.0)
    waits = []
    now = 100.0
    for _ in range(10):
        backoff.failed(now)
        waits.append(backoff.retry_at - now)
        assert backoff.waiting(now) and not backoff.waiting(backoff.retry_at)
        now = backoff.retry_at
    assert waits[:3] == pytest.approx([BACKOFF_MIN_S, 2 * BACKOFF_MIN_S, 4 * BACKOFF_MIN_S])
    assert waits[-1] == pytest.approx(BACKOFF_MAX_S)


def test_it_logs_once_per_step_and_once_a_minute_at_the_top():
    backoff = StoreBackoff()
    now, logged = 100.0, []  # monotonic time (0.0 would read as never failed)
    for _ in range(12):
        logged.append(backoff.failed(now))
        now = backoff.retry_at
    steps = logged.index(False)  # the first repeat of the top step
    assert all(logged[:steps]) and not any(logged[steps:])
    assert backoff.failed(now + FAILING_LOG_S)


def test_a_changing_commit_resets_it_and_a_read_does_not_until_a_quiet_spell():
    backoff = StoreBackoff()
    assert not backoff.succeeded(0.0, changed=True)  # nothing to reset
    backoff.failed(10.0)
    backoff.failed(10.1)
    assert not backoff.succeeded(10.2, changed=False)  # a read: still failing
    backoff.failed(10.3)
    assert backoff.backoff_s == 4 * BACKOFF_MIN_S
    assert backoff.succeeded(10.4, changed=True)  # logged when it began: say it ended
    backoff.failed(20.0)
    assert backoff.backoff_s == BACKOFF_MIN_S  # a fresh spell starts at the minimum
    assert backoff.succeeded(20.0 + QUIET_S, changed=False)
    assert not backoff.succeeded(20.0 + QUIET_S, changed=True)  # once
