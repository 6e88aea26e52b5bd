"""The store contract, continued: periodic schedules (``mpqueue/periodic.py``) through the
``Schedules`` interface and ``periodic.fire_due``, on every store, with an injected
clock (no test sleeps through a minute)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from mpqueue import ConfigError, Queue
from mpqueue.periodic import Periodic, declare, fire_due
from mpqueue.periodic_slots import Spec
from mpqueue.records import JobState
from mpqueue.schedules import ScheduleSpec
from mpqueue.store.counting import CountingStore

from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import queue, store, store_location  # noqa: F401

T0 = 1_800_000_000_000  # 2027-01-15, on every interval grid below
SECOND, MINUTE = 1000, 60_000


def tick() -> str:
    return "tick"


def everyone(server_id: str) -> bool:
    return True


def alive(*ids: str):
    return lambda server_id: server_id in ids


def definitions(queue: Queue, **specs: Spec) -> dict[str, Periodic]:
    """A schedule per keyword: its name, the spec; each with a task of that name."""
    made = {}
    for name, spec in specs.items():
        task = queue.registry.get(name) or queue.task(tick, name=name, retries=1, priority=3)
        made[name] = Periodic(ScheduleSpec.of(name, spec), task, partial(queue._slot_jobs, task))
    return made


def every(seconds: float, catch_up: str = "latest") -> Spec:
    return Spec.parse(every=timedelta(seconds=seconds), catch_up=catch_up)


def fire(store, defs, now_ms: int, live=everyone):
    return fire_due(store, defs, now_ms, lambda: live)


def slots(store, name: str | None = None) -> list[int]:
    """The slot (run-at) of every job in the store, of schedule ``name`` or all."""
    return sorted(
        rec.run_at_ms for rec in store.list(name=name) if name is None or rec.name == name
    )


def row(store, name: str):
    return {r.name: r for r in store.schedules()}[name]


# ---- declaring -----------------------------------------------------------------------------
def test_a_declared_schedule_starts_with_the_first_slot_after_now(queue, store):
    defs = definitions(queue, a=every(10))
    (declared,) = declare(store, defs, "s1", T0 + 3 * SECOND, everyone)
    assert declared.next_due_ms == T0 + 10 * SECOND and declared.last_slot_ms == T0 + 3 * SECOND
    assert declared.declarers == ("s1",) and not declared.paused and not declared.retired
    assert store.schedules() == [declared]
    assert store.next_schedule_due_ms() == T0 + 10 * SECOND
    assert fire(store, defs, T0 + 9 * SECOND).jobs == []
    assert slots(store) == []


def test_declaring_again_keeps_the_slots_and_a_changed_spec_starts_afresh(queue, store):
    defs = definitions(queue, a=every(10))
    declare(store, defs, "s1", T0, everyone)
    fire(store, defs, T0 + 10 * SECOND)
    (same,) = declare(store, defs, "s2", T0 + 12 * SECOND, alive("s1", "s2"))
    assert same.last_slot_ms == T0 + 10 * SECOND and same.next_due_ms == T0 + 20 * SECOND
    assert same.declarers == ("s1", "s2")
    changed = definitions(queue, a=every(60))
    (new,) = declare(store, changed, "s3", T0 + 15 * SECOND, alive("s3"))  # s1, s2 gone
    assert new.every_ms == 60 * SECOND and new.declarers == ("s3",)
    assert new.last_slot_ms == T0 + 15 * SECOND and new.next_due_ms == T0 + 60 * SECOND
    assert store.next_schedule_due_ms() == T0 + 60 * SECOND
    assert row(store, "a").last_job_id is not None  # its history is kept


def test_a_bad_schedule_name_is_refused_and_nothing_is_written(queue, store):
    defs = definitions(queue, a=every(10))
    task = defs["a"].task
    bad = {"b\x00": Periodic(ScheduleSpec.of("b\x00", every(10)), task, defs["a"].make_jobs)}
    with pytest.raises(ConfigError):
        declare(store, {**defs, **bad}, "s1", T0, everyone)
    assert store.schedules() == []


# ---- firing ----------------------------------------------------------------------------------
def test_each_due_slot_is_enqueued_once_as_a_job_of_its_task(queue, store):
    defs = definitions(queue, a=every(10), b=every(60))
    declare(store, defs, "s1", T0, everyone)
    fired = fire(store, defs, T0 + 10 * SECOND + 5)
    assert [(j.name, j.run_at_ms) for j in fired.jobs] == [("a", T0 + 10 * SECOND)]
    assert fired.next_due_ms == T0 + 20 * SECOND
    assert fire(store, defs, T0 + 10 * SECOND + 6).jobs == []  # the same slot: taken
    job = store.get(fired.jobs[0].id)
    assert job.state is JobState.READY and job.max_retries == 1 and job.priority == 3
    assert row(store, "a").last_job_id == job.id and row(store, "a").last_fired_ms == T0 + 10_000
    for t in range(20, 61, 10):
        fire(store, defs, T0 + t * SECOND)
    assert slots(store, "a") == [T0 + t * SECOND for t in range(10, 61, 10)]
    assert slots(store, "b") == [T0 + MINUTE]


def test_two_servers_racing_on_one_store_enqueue_every_slot_exactly_once(queue, store):
    defs = definitions(queue, **{f"s{i}": every(1 + i % 3) for i in range(6)})
    declare(store, defs, "s1", T0, everyone)
    other = Queue(queue.path, mode=queue.mode)  # a second handle: another server's
    other_defs = definitions(other, **{f"s{i}": every(1 + i % 3) for i in range(6)})
    declare(other.store, other_defs, "s2", T0, everyone)
    steps = [T0 + step * 250 for step in range(1, 121)]  # 30 s of clock, in 250 ms steps
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def server(s, d) -> None:
        try:
            for now in steps:
                barrier.wait(10)
                fire(s, d, now)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(target=server, args=(store, defs)),
        threading.Thread(target=server, args=(other.store, other_defs)),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        other.close()
    assert not errors, errors
    for i in range(6):
        period = (1 + i % 3) * SECOND
        got = Counter(slots(store, f"s{i}"))
        assert set(got.values()) == {1}, f"s{i}: a slot enqueued twice: {got}"
        assert sorted(got) == list(range(T0 + period, steps[-1] + 1, period)), f"s{i}"


@pytest.mark.parametrize(
    ("catch_up", "expected"),
    [
        ("latest", [T0 + 10 * SECOND, T0 + 50 * SECOND]),
        ("all", [T0 + t * SECOND for t in range(10, 51, 10)]),
        ("none", [T0 + 10 * SECOND]),
    ],
)
def test_slots_missed_while_no_server_ran_are_caught_up_as_the_spec_says(
    queue, store, catch_up, expected
):
    defs = definitions(queue, a=every(10, catch_up))
    declare(store, defs, "s1", T0, everyone)
    fire(store, defs, T0 + 10 * SECOND)  # then no server runs for 45 s
    fire(store, defs, T0 + 55 * SECOND)
    assert slots(store) == expected
    fire(store, defs, T0 + 60 * SECOND)  # and on from there, one slot each
    assert slots(store) == [*expected, T0 + 60 * SECOND]


def test_a_long_catch_up_of_every_slot_comes_in_bounded_fires(queue, store):
    defs = definitions(queue, a=every(1, "all"))
    declare(store, defs, "s1", T0, everyone)
    first = fire(store, defs, T0 + 250 * SECOND)
    assert len(first.jobs) == 100 and first.next_due_ms == T0 + 101 * SECOND  # due still
    while fire(store, defs, T0 + 250 * SECOND).jobs:
        pass
    assert slots(store) == [T0 + t * SECOND for t in range(1, 251)]


# ---- pausing -----------------------------------------------------------------------------------
def test_a_paused_schedule_fires_nothing_and_resumes_after_its_pause(queue, store):
    defs = definitions(queue, a=every(10), b=every(10))
    declare(store, defs, "s1", T0, everyone)
    assert store.pause_schedule("a") is True
    assert store.pause_schedule("a") is False
    assert row(store, "a").paused
    fire(store, defs, T0 + 30 * SECOND)
    assert slots(store, "a") == [] and slots(store, "b") == [T0 + 30 * SECOND]
    assert store.resume_schedule("a", T0 + 35 * SECOND) is True
    assert store.resume_schedule("a", T0 + 35 * SECOND) is False
    assert row(store, "a").next_due_ms == T0 + 40 * SECOND  # the pause's slots: skipped
    fire(store, defs, T0 + 40 * SECOND)
    assert slots(store, "a") == [T0 + 40 * SECOND]


def test_pausing_an_unknown_schedule_is_an_error_that_changes_nothing(queue, store):
    defs = definitions(queue, a=every(10))
    declare(store, defs, "s1", T0, everyone)
    before = store.schedules()
    for call in (lambda: store.pause_schedule("nope"), lambda: store.resume_schedule("nope", T0)):
        with pytest.raises(ConfigError, match="no periodic schedule named 'nope'"):
            call()
    assert store.schedules() == before


# ---- retiring ------------------------------------------------------------------------------------
def test_a_schedule_no_live_server_declares_is_retired_not_fired(queue, store):
    old = definitions(queue, gone=every(10), kept=every(10))
    declare(store, old, "s1", T0, everyone)
    new = {"kept": old["kept"]}  # the code of s2 no longer defines "gone"
    declare(store, new, "s2", T0 + SECOND, alive("s2"))
    fired = fire(store, new, T0 + 10 * SECOND, alive("s2"))  # s1 is dead
    assert [j.name for j in fired.jobs] == ["kept"]
    gone = row(store, "gone")
    assert gone.retired and gone.declarers == ()
    assert slots(store, "gone") == []
    fire(store, new, T0 + 20 * SECOND, alive("s2"))
    assert slots(store, "gone") == []
    # A server whose code defines it again brings it back, catching up its latest slot.
    declare(store, old, "s3", T0 + 25 * SECOND, alive("s2", "s3"))
    assert not row(store, "gone").retired
    fire(store, old, T0 + 25 * SECOND, alive("s2", "s3"))
    assert slots(store, "gone") == [T0 + 20 * SECOND]


def test_a_schedule_another_live_server_declares_is_left_to_it(queue, store):
    mine = definitions(queue, mine=every(10))
    theirs = definitions(queue, theirs=every(10))
    declare(store, mine, "s1", T0, everyone)
    declare(store, theirs, "s2", T0, everyone)
    fired = fire(store, mine, T0 + 10 * SECOND, alive("s1", "s2"))
    assert [r.name for r in fired.skipped] == ["theirs"]
    assert not row(store, "theirs").retired
    assert slots(store, "theirs") == []
    fire(store, theirs, T0 + 10 * SECOND, alive("s1", "s2"))
    assert slots(store, "theirs") == [T0 + 10 * SECOND]


# ---- cost -------------------------------------------------------------------------------------
def _fire_cost(queue, store, registered: int, prefix: str) -> int:
    specs = {f"{prefix}.n{i:04}": every(3600) for i in range(registered - 1)}
    defs = definitions(queue, **{f"{prefix}.due": every(10)}, **specs)
    declare(store, defs, "s1", T0, everyone)
    counting = CountingStore(store)
    fired = fire(counting, defs, T0 + 10 * SECOND)
    assert [j.name for j in fired.jobs] == [f"{prefix}.due"]
    ops = counting.last("fire_schedules")
    return ops.reads


@pytest.mark.timeout(120)
def test_a_fire_reads_the_due_schedules_only(store_location):
    location, mode = store_location
    costs = []
    for registered, suffix in ((10, "a"), (1000, "b")):
        where = location if location.startswith("postgresql") else location + suffix
        with Queue(where, mode=mode) as q:
            # PostgreSQL: one schema for both rounds; the first round's rows are due
            # again an hour on, not at the second round's fire.
            costs.append(_fire_cost(q, q.store, registered, suffix))
    assert costs[1] <= costs[0], f"1,000 schedules read {costs[1]}, 10 read {costs[0]}"


# ---- time zones, DST and leap days through the store ------------------------------------------
def _ms(text: str, tz: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def _walk(store, defs, start: int, stop: int, step: int) -> None:
    for now in range(start, stop, step):
        fire(store, defs, now)


def test_a_cron_slot_in_the_skipped_hour_fires_once_after_the_gap(queue, store):
    pytest.importorskip("cronsim")
    tz = "Europe/Berlin"
    defs = definitions(queue, nightly=Spec.parse(cron="30 2 * * *", tz=tz))
    start = _ms("2026-03-28T12:00", tz)
    declare(store, defs, "s1", start, everyone)
    _walk(store, defs, start, start + 2 * 86_400_000, 5 * MINUTE)
    assert slots(store) == [_ms("2026-03-29T03:00", tz), _ms("2026-03-30T02:30", tz)]


def test_a_cron_slot_in_the_repeated_hour_fires_once(queue, store):
    pytest.importorskip("cronsim")
    tz = "Europe/Berlin"
    defs = definitions(
        queue,
        nightly=Spec.parse(cron="30 2 * * *", tz=tz),
        often=Spec.parse(cron="*/30 * * * *", tz=tz),
    )
    start = _ms("2026-10-25T00:10", tz)
    declare(store, defs, "s1", start, everyone)
    _walk(store, defs, start, start + 4 * 3_600_000, MINUTE)
    summer_230 = _ms("2026-10-25T02:30", tz)  # CEST: the first pass
    assert slots(store, "nightly") == [summer_230]
    often = slots(store, "often")
    assert len(often) == len(set(often))
    # 00:30 to 03:30 local time, with the repeated hour twice: 8 slots, 30 real minutes apart.
    assert [b - a for a, b in zip(often, often[1:])] == [30 * MINUTE] * (len(often) - 1)
    assert len(often) == 8


def test_a_leap_day_schedule_fires_on_leap_days_only(queue, store):
    pytest.importorskip("cronsim")
    defs = definitions(queue, leap=Spec.parse(cron="0 12 29 2 *", tz="UTC"))
    start = _ms("2027-02-01T00:00", "UTC")
    declare(store, defs, "s1", start, everyone)
    # Fire each day for two Februaries; slots arrive only on 2028-02-29.
    _walk(store, defs, start, _ms("2029-03-31T00:00", "UTC"), 86_400_000)
    assert slots(store) == [_ms("2028-02-29T12:00", "UTC")]
    assert row(store, "leap").next_due_ms == _ms("2032-02-29T12:00", "UTC")


# ---- a bad value in the store ------------------------------------------------------------------
def test_check_finds_the_schedules_consistent_after_every_kind_of_change(queue, store):
    defs = definitions(queue, a=every(10), b=every(10), c=every(10))
    declare(store, defs, "s1", T0, everyone)
    fire(store, defs, T0 + 10 * SECOND)
    store.pause_schedule("b")
    fire(store, {"a": defs["a"]}, T0 + 20 * SECOND, alive("s2"))  # b, c: retired
    store.resume_schedule("b", T0 + 21 * SECOND)
    report = store.check(holder_gone=lambda server_id: True)
    assert report.inconsistent == [] and report.corrupt == []


def test_an_undecodable_schedule_entry_stops_nothing_and_is_declared_anew(queue, store):
    if not hasattr(store, "env"):
        pytest.skip("raw bytes are an LMDB matter (the other stores keep typed rows)")
    from mpqueue.store.lmdb import keys

    defs = definitions(queue, a=every(10), b=every(10))
    declare(store, defs, "s1", T0, everyone)

    def damage(tx) -> None:
        tx.put(keys.DB_SCHEDULES, keys.schedule_key("a"), b"\xff not json")

    store.env.write(damage)
    fired = fire(store, defs, T0 + 10 * SECOND)  # a's entry: dropped from the index
    assert [j.name for j in fired.jobs] == ["b"]
    assert [r.name for r in store.schedules()] == ["b"]
    assert store.check(holder_gone=lambda server_id: True).corrupt != []
    declare(store, defs, "s1", T0 + 11 * SECOND, everyone)  # written anew
    fire(store, defs, T0 + 20 * SECOND)
    assert slots(store, "a") == [T0 + 20 * SECOND]
    report = store.check(holder_gone=lambda server_id: True)
    assert report.corrupt == [] and report.inconsistent == []
