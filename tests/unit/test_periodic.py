"""``@queue.periodic`` and the server side of periodic jobs (``periodic.Scheduler``), on
the memory store with an injected clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest

from mpqueue import ConfigError, DuplicateTask, Queue
from mpqueue import periodic as periodic_mod
from mpqueue.periodic import (
    FOREIGN_RECHECK_MS,
    IDLE_RECHECK_MS,
    REDECLARE_MS,
    Scheduler,
    defined,
    forget,
)
from mpqueue.records import JobState

T0 = 1_800_000_000_000


@pytest.fixture
def queue(tmp_path) -> Iterator[Queue]:
    names = set(defined())
    with Queue(f"memory://{tmp_path.name}") as q:
        yield q
    for name in set(defined()) - names:
        forget(name)  # this process's definitions: as they were


def test_the_decorator_registers_a_task_and_a_schedule(queue):
    @queue.periodic(every=timedelta(minutes=5), retries=0, priority=7, name="t.rollup")
    def rollup() -> str:
        return "rolled"

    assert queue.registry.get("t.rollup") is rollup
    assert rollup() == "rolled"  # still the function, called here
    found = defined()["t.rollup"]
    assert found.spec.every_ms == 300_000 and found.spec.catch_up == "latest"
    (job,) = found.jobs([T0], T0 + 5)
    assert job.name == "t.rollup" and job.run_at_ms == T0 and job.created_at_ms == T0 + 5
    assert job.state is JobState.READY and job.max_retries == 0 and job.priority == 7


def test_a_cron_schedule_takes_a_time_zone(queue):
    pytest.importorskip("cronsim")

    @queue.periodic(cron="*/5 * * * *", tz="Europe/Berlin", name="t.cron")
    def job() -> None: ...

    spec = defined()["t.cron"].spec
    assert (spec.cron, spec.tz, spec.every_ms) == ("*/5 * * * *", "Europe/Berlin", None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron= and every="),
        ({"every": timedelta(minutes=1), "catch_up": "some"}, "catch_up must be one of"),
        ({"every": timedelta(milliseconds=10)}, "at least one second"),
        ({"every": timedelta(minutes=1), "tz": "Mars/Olympus"}, "unknown time zone"),
        ({"every": timedelta(minutes=1), "retries": -1}, "retries"),
        ({"every": timedelta(minutes=1), "colour": "red"}, "unknown task option"),
    ],
)
def test_bad_options_are_refused_before_anything_is_registered(queue, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        queue.periodic(**kwargs)
    assert queue.registry.names() == []


def test_a_function_that_needs_arguments_is_refused(queue):
    def needs(x: int) -> None: ...

    with pytest.raises(ConfigError, match="called with no arguments"):
        queue.periodic(every=timedelta(minutes=1), name="t.needs")(needs)
    assert queue.registry.get("t.needs") is None and "t.needs" not in defined()


def test_one_name_is_one_schedule_per_process(queue, tmp_path):
    def job() -> None: ...

    queue.periodic(every=timedelta(minutes=1), name="t.once")(job)
    with Queue(f"memory://{tmp_path.name}-other") as other:
        with pytest.raises(DuplicateTask, match="already defined"):
            other.periodic(every=timedelta(minutes=1), name="t.once")(job)
        assert other.registry.get("t.once") is None


def test_the_scheduler_declares_once_then_fires_when_due(queue):
    def job() -> None: ...

    queue.periodic(every=timedelta(seconds=3), name="t.tick")(job)
    mine = {"t.tick": defined()["t.tick"]}
    scheduler = Scheduler(queue.store, "s1", mine)
    assert scheduler.due(0) and scheduler.run(T0) == 0  # declared: first slot T0 + 3 s
    assert scheduler.next_fire_ms == T0 + 3_000 and scheduler.wait_s(T0) == 3.0
    assert not scheduler.due(T0 + 2_999)
    assert scheduler.run(T0 + 3_000) == 1
    assert scheduler.next_fire_ms == T0 + 6_000
    assert [r.run_at_ms for r in queue.store.list()] == [T0 + 3_000]


def test_the_scheduler_looks_again_soon_at_schedules_it_does_not_define(queue, monkeypatch):
    def job() -> None: ...

    queue.periodic(every=timedelta(seconds=10), name="t.theirs")(job)
    queue.periodic(every=timedelta(hours=1), name="t.mine")(job)
    everything = defined()
    theirs = Scheduler(queue.store, "s2", {"t.theirs": everything["t.theirs"]})
    theirs.run(T0)
    mine = Scheduler(queue.store, "s1", {"t.mine": everything["t.mine"]})
    mine.run(T0)
    # s2 counts as alive (the memory store has no server registry to say so)
    monkeypatch.setattr(periodic_mod, "liveness", lambda store, now, lease=0: lambda d: True)
    assert mine.run(T0 + 10_000) == 0  # t.theirs is due, but not ours
    assert mine.next_fire_ms == T0 + 10_000 + FOREIGN_RECHECK_MS


def test_an_idle_scheduler_still_looks_every_few_seconds(queue):
    def job() -> None: ...

    queue.periodic(every=timedelta(days=1), name="t.daily")(job)
    scheduler = Scheduler(queue.store, "s1", {"t.daily": defined()["t.daily"]})
    scheduler.run(T0)
    assert scheduler.next_fire_ms == T0 + IDLE_RECHECK_MS  # a resume is seen within it


def test_a_server_declares_again_so_a_retired_schedule_of_its_own_comes_back(queue):
    def job() -> None: ...

    queue.periodic(every=timedelta(seconds=3), name="t.back")(job)
    scheduler = Scheduler(queue.store, "s1", {"t.back": defined()["t.back"]})
    scheduler.run(T0)
    (row,) = queue.store.schedules()
    assert queue.store.retire_schedules({"t.back": row.declarers}) == ["t.back"]
    scheduler.run(T0 + 3_000)  # retired: nothing
    assert queue.store.list() == []
    scheduler.run(T0 + REDECLARE_MS)
    assert [r.run_at_ms for r in queue.store.list()] == [T0 + REDECLARE_MS]
    assert not queue.store.schedules()[0].retired


def test_a_server_whose_modules_define_no_schedule_has_no_scheduler(queue):
    if defined():
        pytest.skip("this process defines schedules already")
    assert Scheduler.for_server(queue.store, "s1", ["json"], 30.0) is None
    assert queue.store.schedules() == []  # and it wrote nothing


def test_a_schedule_whose_jobs_cannot_be_made_stops_nothing_else(queue, caplog):
    def job() -> None: ...

    queue.periodic(every=timedelta(seconds=3), name="t.good")(job)
    queue.periodic(every=timedelta(seconds=3), name="t.bad")(job)
    found = defined()

    def broken(slots, now):
        raise RuntimeError("cannot pickle it")

    mine = {"t.good": found["t.good"], "t.bad": replace(found["t.bad"], make_jobs=broken)}
    scheduler = Scheduler(queue.store, "s1", mine)
    scheduler.run(T0)
    assert scheduler.run(T0 + 3_000) == 1  # t.good's slot; t.bad logged, left due
    assert [r.name for r in queue.store.list()] == ["t.good"]
    assert "t.bad: cannot enqueue its slot: RuntimeError: cannot pickle it" in caplog.text
    assert scheduler.next_fire_ms == T0 + 3_000 + FOREIGN_RECHECK_MS
