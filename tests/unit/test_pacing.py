"""serve/pacing.py: how many jobs a coordinator sends each child, and when it claims."""

from __future__ import annotations

import pytest

from mpqueue.serve.pacing import INITIAL_JOB_S, Pacer, per_child, room_for, usable
from mpqueue.serve.pool import Slot
from mpqueue.serve.settings import PREFETCH_WINDOW_S


def _slot(held: int = 0, jobs_run: int = 0, ready: bool = True, retiring: bool = False) -> Slot:
    slot = Slot(None, None, ready=ready, retiring=retiring, jobs_run=jobs_run)  # type: ignore[arg-type]
    slot.inflight.extend(f"{i:032x}" for i in range(held))
    return slot


def test_a_child_holds_its_running_job_plus_the_prefetch_window():
    assert per_child(PREFETCH_WINDOW_S / 10, prefetch_max=100) == 1 + 10
    assert per_child(PREFETCH_WINDOW_S / 10, prefetch_max=4) == 1 + 4  # capped
    assert per_child(10.0, prefetch_max=100) == 2  # slow jobs: still one queued
    assert per_child(0.0, prefetch_max=3) == 4  # no division by zero


def test_room_is_what_a_child_may_still_be_sent():
    assert room_for(held=2, jobs_run=0, per_child=5, max_tasks=None) == 3
    assert room_for(held=7, jobs_run=0, per_child=5, max_tasks=None) == 0  # never negative
    # max_tasks_per_child: never more than the child may still run before it retires
    assert room_for(held=1, jobs_run=7, per_child=5, max_tasks=10) == 2
    assert room_for(held=3, jobs_run=7, per_child=5, max_tasks=10) == 0


def test_only_ready_slots_that_are_not_retiring_are_usable():
    ok, starting, retiring = _slot(), _slot(ready=False), _slot(retiring=True)
    assert usable([ok, starting, retiring]) == [ok]


def test_room_and_idle_count_usable_slots_only():
    pacer = Pacer(prefetch_max=2, max_tasks_per_child=None, poll_s=1.0)
    assert pacer.per_child() == 3  # 1 ms jobs: the window is capped at 2 queued
    busy, idle, retiring = _slot(held=2), _slot(), _slot(retiring=True)
    assert pacer.room([busy, idle, retiring]) == 1 + 3
    assert pacer.idle([busy, idle, retiring]) == [idle]
    assert not pacer.low([_slot(held=3)]) and pacer.low([_slot(held=3), _slot(held=1)])


def test_the_job_time_average_moves_a_fifth_of_the_way_each_job():
    pacer = Pacer(prefetch_max=1000, max_tasks_per_child=None, poll_s=1.0)
    assert pacer.avg_job_s == INITIAL_JOB_S
    pacer.observe(0.011)
    assert pacer.avg_job_s == pytest.approx(0.8 * 0.001 + 0.2 * 0.011)
    pacer.observe(-1.0)  # a clock step back counts as an instant job
    assert pacer.avg_job_s == pytest.approx(0.8 * 0.003)
    for _ in range(60):
        pacer.observe(0.01)
    assert pacer.avg_job_s == pytest.approx(0.01, rel=1e-4)  # it follows a change


def test_a_deep_queue_need_not_be_listened_to_until_it_runs_low():
    pacer = Pacer(prefetch_max=100, max_tasks_per_child=None, poll_s=1.0)
    pacer.avg_job_s = 0.01
    assert pacer.unneeded_s(held=10, per_child=10) == pytest.approx(4 * 0.01 * 0.5)
    assert pacer.unneeded_s(held=5, per_child=10) == 0.0


def test_polls_tick_on_a_fixed_grid_and_restart_it_after_a_stall():
    pacer = Pacer(prefetch_max=1, max_tasks_per_child=None, poll_s=1.0)
    assert pacer.poll_due(100.0) and pacer.poll_at == 101.0
    assert not pacer.poll_due(100.5)
    assert pacer.poll_due(101.3) and pacer.poll_at == 102.0  # late: the grid holds
    assert pacer.poll_due(110.0) and pacer.poll_at == 111.0  # a stall: a new grid
