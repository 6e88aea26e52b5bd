"""The two sides of limits.py agree: whatever the entry checks accept, a server's check
of a stored record (``stored_problem``) accepts too, so no job that entered cleanly
can be dead-lettered as out of bounds; whatever they refuse is a ConfigError."""

from __future__ import annotations

import math

import hypothesis.strategies as st
from hypothesis import example, given, settings

from mpqueue import ConfigError, Queue, limits
from mpqueue.records import now_ms
from mpqueue.task import TaskOptions

# Numbers around every bound, plus the values that broke servers before.
EDGES = [
    0,
    0.0,
    -0.0,
    1e-300,
    1,
    1000,
    1001,
    limits.TIMEOUT_MAX_S,
    limits.YEAR_S + 0.001,
    limits.DELAY_MAX_S,
    limits.DELAY_MAX_S + 1,
    1e16,
    1e17,
    1e300,
    2**31,
    2**63,
    10**400,
    -1,
    math.nan,
    math.inf,
    -math.inf,
    True,
    False,
    None,
    "5",
]
values = st.one_of(st.sampled_from(EDGES), st.floats(), st.integers(-(2**70), 2**70))


OPTIONS = ("retries", "timeout", "priority", "backoff", "backoff_cap")


def server_accepts(options: TaskOptions, run_at_ms: int | None = None) -> None:
    rec = Queue("never-opened")._record("t.x", b"\x01", options, run_at_ms=run_at_ms)
    assert limits.stored_problem(rec) is None, rec


@settings(max_examples=200, deadline=None)
@given(option=st.sampled_from(OPTIONS), value=values)
@example(option="timeout", value=limits.TIMEOUT_MAX_S)
@example(option="retries", value=limits.RETRIES_MAX)
def test_every_option_that_enters_is_one_a_server_runs(option, value):
    """One option at a time: with all at once nearly every example would be refused
    by one of them and test nothing. Only ConfigError may refuse."""
    try:
        options = TaskOptions(**{option: value})
    except ConfigError:
        return
    server_accepts(options)


@settings(max_examples=200, deadline=None)
@given(when=st.sampled_from(["delay", "at"]), value=values)
@example(when="at", value=limits.RUN_AT_MAX_MS / 1000)
@example(when="delay", value=limits.DELAY_MAX_S)
def test_every_run_time_that_enters_is_one_a_server_runs(when, value):
    try:
        run_at = limits.run_at_ms(
            value if when == "delay" else None, value if when == "at" else None, now_ms()
        )
    except ConfigError:
        return
    assert run_at is None or 0 <= run_at <= limits.RUN_AT_MAX_MS
    server_accepts(TaskOptions(), run_at)
