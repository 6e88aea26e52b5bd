"""periodic_slots.py: a schedule's slots and the missed slots each catch_up enqueues.

The clock is injected: every time is a plain epoch-millisecond int, nothing sleeps.
"""

from __future__ import annotations

import builtins
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from mpqueue.errors import ConfigError
from mpqueue.periodic_slots import Spec, next_last

BERLIN = ZoneInfo("Europe/Berlin")
MINUTE = 60_000


def _utc(*fields: int) -> int:
    """Epoch ms of a UTC time (year, month, day, hour, minute)."""
    return int(datetime(*fields, tzinfo=timezone.utc).timestamp()) * 1000


def _walk(spec: Spec, start_ms: int, end_ms: int) -> list[int]:
    slots = [spec.next_after(start_ms)]
    while spec.next_after(slots[-1]) <= end_ms:
        slots.append(spec.next_after(slots[-1]))
    return slots


def _wall(slot_ms: int) -> str:
    return datetime.fromtimestamp(slot_ms / 1000, BERLIN).strftime("%H:%M%z")


def test_every_5_minutes_in_berlin_skips_the_spring_forward_hour():
    # 2026-03-29: 02:00 CET becomes 03:00 CEST at 01:00 UTC
    spec = Spec.parse(cron="*/5 * * * *", tz="Europe/Berlin")
    slots = _walk(spec, _utc(2026, 3, 29, 0, 40), _utc(2026, 3, 29, 1, 15))
    assert slots == [_utc(2026, 3, 29, 0, 45) + i * 5 * MINUTE for i in range(7)]
    assert [_wall(s) for s in slots] == [
        "01:45+0100",
        "01:50+0100",
        "01:55+0100",
        "03:00+0200",  # no slot at 02:xx: those wall-clock times never happen
        "03:05+0200",
        "03:10+0200",
        "03:15+0200",
    ]


def test_every_5_minutes_in_berlin_runs_the_repeated_hour_on_real_time():
    # 2026-10-25: 03:00 CEST becomes 02:00 CET at 01:00 UTC; the wall clock shows
    # 02:00..02:55 twice, and a sub-hourly schedule fires in both (every 5 real minutes)
    spec = Spec.parse(cron="*/5 * * * *", tz="Europe/Berlin")
    slots = _walk(spec, _utc(2026, 10, 24, 23, 50), _utc(2026, 10, 25, 2, 0))
    assert slots == [_utc(2026, 10, 24, 23, 55) + i * 5 * MINUTE for i in range(26)]
    assert len(set(slots)) == len(slots)  # each instant once
    walls = [_wall(s) for s in slots]
    assert walls[:2] == ["01:55+0200", "02:00+0200"]
    assert walls[12:14] == ["02:55+0200", "02:00+0100"]  # the second pass of the hour
    assert walls[-2:] == ["02:55+0100", "03:00+0100"]


def test_a_fixed_time_in_the_skipped_hour_fires_once_right_after_the_gap():
    spec = Spec.parse(cron="30 2 * * *", tz="Europe/Berlin")
    slots = _walk(spec, _utc(2026, 3, 28, 12, 0), _utc(2026, 3, 30, 12, 0))
    # 02:30 does not exist on the 29th: it fires at 03:00 CEST, the first instant after
    assert slots == [_utc(2026, 3, 29, 1, 0), _utc(2026, 3, 30, 0, 30)]


def test_a_fixed_time_in_the_repeated_hour_fires_once_on_the_first_pass():
    spec = Spec.parse(cron="30 2 * * *", tz="Europe/Berlin")
    slots = _walk(spec, _utc(2026, 10, 24, 12, 0), _utc(2026, 10, 26, 12, 0))
    assert slots == [_utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)]  # CEST, then CET
    # asked from inside the second pass, before and after its 02:30: the next day's
    assert spec.next_after(_utc(2026, 10, 25, 1, 0)) == _utc(2026, 10, 26, 1, 30)
    assert spec.next_after(_utc(2026, 10, 25, 1, 40)) == _utc(2026, 10, 26, 1, 30)


def test_a_leap_day_schedule_waits_for_the_next_leap_year():
    spec = Spec.parse(cron="0 12 29 2 *")
    assert spec.next_after(_utc(2026, 3, 1, 0, 0)) == _utc(2028, 2, 29, 12, 0)


def test_next_after_is_strictly_after_even_between_seconds():
    spec = Spec.parse(cron="* * * * *")
    noon = _utc(2026, 5, 1, 12, 0)
    assert spec.next_after(noon - 1) == noon
    assert spec.next_after(noon) == noon + MINUTE
    assert spec.next_after(noon + 500) == noon + MINUTE


def test_every_slots_are_aligned_to_the_epoch():
    second = Spec.parse(every=timedelta(seconds=1))
    assert second.next_after(1234) == 2000
    assert second.next_after(2000) == 3000
    assert second.next_after(-1) == 0
    seven = Spec.parse(every=timedelta(minutes=7), tz="Europe/Berlin")  # tz changes nothing
    t = _utc(2026, 5, 1, 12, 3)
    assert seven.next_after(t) % (7 * MINUTE) == 0
    assert 0 < seven.next_after(t) - t <= 7 * MINUTE


# A quarter-hourly schedule whose last slot was 12:00 and it is now 13:05: four slots
# were missed (12:15, 12:30, 12:45, 13:00).
LAST = _utc(2026, 5, 1, 12, 0)
NOW = _utc(2026, 5, 1, 13, 5)
MISSED = [LAST + i * 15 * MINUTE for i in range(1, 5)]


@pytest.mark.parametrize("cron", ["*/15 * * * *", None])
def test_catch_up_latest_runs_only_the_latest_missed_slot(cron):
    spec = _quarterly(cron, "latest")
    assert spec.due_slots(LAST, NOW) == [MISSED[-1]]
    assert spec.due_slots(MISSED[-1], NOW) == []  # nothing new since


@pytest.mark.parametrize("cron", ["*/15 * * * *", None])
def test_catch_up_all_runs_every_missed_slot_oldest_first_up_to_the_limit(cron):
    spec = _quarterly(cron, "all")
    assert spec.due_slots(LAST, NOW) == MISSED
    first = spec.due_slots(LAST, NOW, limit=3)
    assert first == MISSED[:3]
    # the caller records the last one enqueued: the next call brings the rest
    assert spec.due_slots(next_last(first, NOW), NOW, limit=3) == MISSED[3:]


@pytest.mark.parametrize("cron", ["*/15 * * * *", None])
def test_catch_up_none_runs_only_a_slot_due_now(cron):
    spec = _quarterly(cron, "none")
    assert spec.due_slots(LAST, NOW) == []  # four missed: none runs
    assert next_last([], NOW) == NOW  # and the schedule resumes after now
    assert spec.due_slots(NOW, NOW + 15 * MINUTE) == [_utc(2026, 5, 1, 13, 15)]
    assert spec.due_slots(MISSED[-2], NOW) == [MISSED[-1]]  # the only one missed


def test_a_new_schedule_starts_with_the_next_slot():
    spec = _quarterly("*/15 * * * *", "all")
    assert spec.due_slots(None, NOW) == []
    assert spec.due_slots(next_last([], NOW), NOW) == []
    assert spec.due_slots(NOW, _utc(2026, 5, 1, 13, 15)) == [_utc(2026, 5, 1, 13, 15)]


def test_catch_up_latest_after_a_long_gap_of_a_minutely_schedule():
    spec = Spec.parse(cron="* * * * *")
    last = _utc(2026, 1, 1, 0, 0)
    now = _utc(2026, 4, 1, 0, 0) + 30_000  # 90 days: more slots than one walk's chunk
    assert spec.due_slots(last, now) == [_utc(2026, 4, 1, 0, 0)]


def _quarterly(cron: str | None, catch_up: str) -> Spec:
    if cron is None:
        return Spec.parse(every=timedelta(minutes=15), catch_up=catch_up)
    return Spec.parse(cron=cron, catch_up=catch_up)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron= and every="),
        ({"cron": "* * * * *", "every": timedelta(minutes=1)}, "exactly one of cron="),
        ({"cron": "61 * * * *"}, "bad cron expression '61 * * * *'"),
        ({"cron": "* * *"}, "bad cron expression '* * *'"),
        ({"cron": "0 0 30 2 *"}, "bad cron expression '0 0 30 2 *'"),
        ({"cron": 5}, "cron must be a string"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"every": timedelta(seconds=1), "tz": ""}, "tz must be a time zone name"),
        ({"every": timedelta(0)}, "every must be at least one second"),
        ({"every": timedelta(seconds=-5)}, "every must be at least one second"),
        ({"every": timedelta(milliseconds=999)}, "every must be at least one second"),
        ({"every": timedelta(seconds=1, microseconds=1)}, "whole number of milliseconds"),
        ({"every": 60}, "every must be a timedelta"),
        ({"cron": "* * * * *", "catch_up": "some"}, "catch_up must be one of latest, all"),
    ],
)
def test_bad_input_is_a_one_line_config_error(kwargs, message):
    with pytest.raises(ConfigError) as caught:
        Spec.parse(**kwargs)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_bad_limit_is_a_config_error():
    with pytest.raises(ConfigError, match="limit must be at least 1"):
        Spec.parse(every=timedelta(seconds=1)).due_slots(0, 10_000, limit=0)


def test_without_cronsim_a_cron_schedule_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_cronsim(name, *args, **kwargs):
        if name == "cronsim":
            raise ImportError("No module named 'cronsim'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cronsim)
    with pytest.raises(ConfigError, match=r"pip install 'mpqueue\[periodic\]'"):
        Spec.parse(cron="* * * * *")
    Spec.parse(every=timedelta(minutes=1))  # an interval needs no cronsim


def test_importing_mpqueue_does_not_import_cronsim():
    import subprocess
    import sys

    code = "import sys, mpqueue, mpqueue.periodic_slots; print('cronsim' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("cron", ["*/5 * * * *", "30 2 * * *", "0 */2 * * *", "0 3 * * *"])
@pytest.mark.parametrize("night", [_utc(2026, 3, 28, 22, 0), _utc(2026, 10, 24, 22, 0)])
@pytest.mark.parametrize("backward", [True, False], ids=["backward search", "walk"])
def test_latest_is_the_last_of_all_missed_slots_across_dst(cron, night, backward, monkeypatch):
    latest = Spec.parse(cron=cron, tz="Europe/Berlin", catch_up="latest")
    every = Spec.parse(cron=cron, tz="Europe/Berlin", catch_up="all")
    if not backward:  # the walk cronsim's backward answer falls back on
        monkeypatch.setattr(Spec, "_cron_at_or_before", lambda self, t_ms: None)
    last = night - 86_400_000
    for now in range(night, night + 6 * 3_600_000, 7 * MINUTE):
        assert latest.due_slots(last, now) == every.due_slots(last, now)[-1:]
