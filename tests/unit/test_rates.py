"""Rate limits' rules (mpqueue/rates.py): parsing, the sliding window, the log's bound."""

from __future__ import annotations

import random

import pytest

from mpqueue.concurrency import UNBOUNDED, LimitState
from mpqueue.errors import ConfigError
from mpqueue.rates import LOG_STEPS, Rate, parse_rate


@pytest.mark.parametrize(
    ("text", "count", "window_ms"),
    [
        ("100/m", 100, 60_000),
        ("5/s", 5, 1000),
        ("1000/h", 1000, 3_600_000),
        ("30/10s", 30, 10_000),
        (" 2 / 5 min ", 2, 300_000),
        ("7/second", 7, 1000),
        ("7/seconds", 7, 1000),
        ("3/hours", 3, 3_600_000),
        ("1/24h", 1, 86_400_000),
    ],
)
def test_rates_parse(text, count, window_ms):
    rate = parse_rate(text)
    assert rate == Rate(count, window_ms)
    assert parse_rate(str(rate)) == rate  # what limits print reads back


@pytest.mark.parametrize(
    "bad", ["", "100", "100/", "/m", "0/m", "5/ms", "5/d", "5/25h", "-1/s", "1.5/s", 5, 1.0]
)
def test_bad_rates_are_one_line_errors(bad):
    with pytest.raises(ConfigError) as raised:
        parse_rate(bad, "rate of task x")
    assert "\n" not in str(raised.value) and "rate of task x" in str(raised.value)


def test_no_window_ever_holds_more_starts_than_the_rate():
    """Random claims against the log, each taking what it allows: counted by the
    true start times, no window of the rate's length holds more than its count."""
    rng = random.Random(7)
    for rate in (Rate(5, 1000), Rate(37, 60_000), Rate(1, 1000)):
        state, now, starts = LimitState(None, 0, rate), 1_000_000, []
        for _ in range(3000):
            now += rng.choice((0, 1, 3, 7, rng.randrange(rate.window_ms // 3 + 1)))
            taken = min(state.room(now), rng.randrange(1, 9))
            if taken:
                state = state.claimed(taken, now)
                starts += [now] * taken
            assert len(state.starts) <= LOG_STEPS + 1  # bounded whatever the count
        for i, at in enumerate(starts):
            j = i
            while j < len(starts) and starts[j] < at + rate.window_ms:
                j += 1
            assert j - i <= rate.count, (rate, at)


def test_the_rounding_costs_little_of_the_rate():
    """Claiming all it allows every 100 ms for 20 windows: at least 97% of the rate's
    count per window starts (the log rounds start times up by 1% of the window)."""
    rate = Rate(37, 60_000)
    state, started = LimitState(None, 0, rate), 0
    for now in range(0, 20 * rate.window_ms, 100):
        room = state.room(now)
        if room:
            state, started = state.claimed(room, now), started + room
    assert started >= 0.97 * 20 * rate.count


def test_reopens_at_is_the_first_time_a_start_is_allowed():
    rate = Rate(3, 1000)
    state = LimitState(None, 0, rate).claimed(2, 10_000).claimed(1, 10_500)
    assert state.room(10_600) == 0
    at = state.reopens_at(10_600)
    assert at == 11_000 and state.room(at - 1) == 0 and state.room(at) == 2
    assert state.reopens_at(at) is None


def test_a_limit_without_concurrency_has_room_for_its_rate_only():
    assert LimitState(None, 10**6).room(0) == UNBOUNDED
    assert LimitState(None, 10**6, Rate(4, 1000)).room(0) == 4
    assert LimitState(2, 1, Rate(4, 1000)).room(0) == 1
