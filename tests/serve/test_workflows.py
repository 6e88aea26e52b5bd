"""Workflows under ``mpqueue serve`` as real processes: chords and chains while
coordinators are SIGKILLed, and chords whose member ends dead.

The store releases a waiting job in the transaction that commits its last
dependency's outcome, so however often servers die, a chord's callback is released
once and runs once (members may run more than once: a killed coordinator's jobs are
put back, at least once). Job bodies are ``chain_step``, ``chord_member`` and
``chord_total`` in serve_tasks.py; the callback writes one file per run.
"""

from __future__ import annotations

import ast
import random
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mpqueue import JobCancelled, Queue, chain, chord, group

from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import (  # noqa: F401
    Server,
    assert_no_overlap,
    env,
    read_runs,
    servers,
    wait_until,
)

TASKS = "tests.support.serve_tasks"
MEMBERS = 1_000
MEMBER_S = 0.03  # 1,000 of them on four workers: 7.5 s or more, several kills
KILL_EVERY_S = (0.3, 1.0)
STEPS = 10
STEP_S = 0.3
KILLED_STEP = 4


def callback_runs(runs_dir: Path) -> list[tuple[int, Any]]:
    """(pid, what it received) of each run of ``chord_total``, in no particular order."""
    return [
        (int(f.name.split("-")[0]), ast.literal_eval(f.read_text()))
        for f in sorted(runs_dir.glob("*.txt"))
    ]


def released_within(job: Any, seconds: float) -> bool:
    """Wait up to ``seconds`` for a waiting job to be released (or cancelled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if job.refresh().state != "waiting":
            return True
        time.sleep(0.005)
    return job.refresh().state != "waiting"


class Killer:
    """Two servers on one store, one of them SIGKILLed and restarted now and then.

    Only while both are serving (a server takes 0.5 s to start on an idle machine, and
    seconds on a loaded one: kills faster than that would leave nobody running the
    jobs). ``excused`` collects the workers of a server killed as the callback was
    released: a callback run there may have been cut short and rightly runs again."""

    def __init__(self, start: Callable[[], Server], queue: Queue, callback: Any, seed: int):
        self.start, self.queue, self.callback = start, queue, callback
        self.rng = random.Random(seed)
        self.slots = [start(), start()]
        self.done_at_kills: list[int] = []  # members done at each kill
        self.excused: set[int] = set()

    def kill_until_released(self, deadline_s: float) -> None:
        began = time.monotonic()
        while not released_within(self.callback, self.rng.uniform(*KILL_EVERY_S)):
            assert time.monotonic() - began < deadline_s, f"still waiting: {self.queue.stats()}"
            workers = [slot.children(self.queue) for slot in self.slots]
            if all(workers):
                self.kill(self.rng.randrange(len(self.slots)), workers)

    def kill(self, index: int, workers: list[list[int]]) -> None:
        done = self.callback.group.progress()["done"]
        victim = self.slots[index]
        if self.callback.refresh().state != "waiting":
            return  # released since: leave its run alone
        self.done_at_kills.append(done)
        victim.send(signal.SIGKILL)
        victim.wait(5)
        if self.callback.refresh().state != "waiting":  # released in those few ms
            self.excused.update(workers[index])
        self.slots[index] = self.start()


# ---- stores: LMDB, and PostgreSQL where a server is at hand ------------------------------


@pytest.fixture(params=["lmdb", "postgres"])
def store_location(request, tmp_path) -> str:
    """A store directory, or a PostgreSQL URL (skipped without a server, outside CI)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(tmp_path / "store")


def store_name(location: str) -> str:
    return "PostgreSQL" if "://" in location else "LMDB"


@pytest.fixture
def workflow_queue(store_location) -> Iterator[Queue]:
    queue = Queue(store_location)
    queue.stats()  # create the store (or schema) before the servers race to
    try:
        yield queue
    finally:
        queue.close()


@pytest.mark.timeout(90)
def test_chord_of_1000_runs_its_callback_once_while_coordinators_are_killed(
    workflow_queue, store_location, servers, tmp_path
):
    """Two servers on one store; once members complete, every 0.3-1 s one of the two
    (when both are serving), at random, is SIGKILLed and restarted, until the callback
    is released. The killing stops there: a callback killed while it runs would rightly
    run again (at least once); what the test proves is that its release, the store's
    part, happens once, so it runs once."""
    runs_dir = tmp_path / "callback-runs"
    runs_dir.mkdir()
    marker = tmp_path / "markers.log"
    member = workflow_queue.task_by_name(f"{TASKS}.chord_member")
    total = workflow_queue.task_by_name(f"{TASKS}.chord_total")
    began = time.monotonic()
    callback = chord(
        group(member.s(str(marker), i, MEMBER_S) for i in range(MEMBERS)), total.s(str(runs_dir))
    ).delay()
    assert callback.state == "waiting"

    seed = random.randrange(2**32)
    killer = Killer(
        lambda: servers(store_location, "--workers", "2"), workflow_queue, callback, seed
    )
    # Kills before the servers are up would only test startup: begin once members end.
    wait_until(lambda: callback.group.progress()["done"], 30, "a member done")
    killer.kill_until_released(60)
    released_s = time.monotonic() - began
    done_at_kills = killer.done_at_kills

    expected = [i * i for i in range(MEMBERS)]
    assert callback.result(timeout=30) == expected
    runs_of_callback = callback_runs(runs_dir)
    assert [got for _, got in runs_of_callback] == [expected] * len(runs_of_callback)
    counted = [pid for pid, _ in runs_of_callback if pid not in killer.excused]
    assert len(counted) <= 1 and 1 <= len(runs_of_callback) <= len(counted) + 1, (
        f"the callback ran {len(runs_of_callback)} times, {len(counted)} of them on "
        f"servers not killed as it was released"
    )
    assert (callback.attempts, callback.errors) == (1, ())
    assert callback.group.progress() == {
        "done": MEMBERS,
        "dead": 0,
        "cancelled": 0,
        "expired": 0,
        "pending": 0,
        "total": MEMBERS,
    }
    mid_run = [done for done in done_at_kills if 0 < done < MEMBERS]
    assert len(mid_run) >= 3, f"seed {seed}: kills at {done_at_kills} members done"
    stats = workflow_queue.stats()
    assert (stats["done"], stats["processing"], stats["waiting"]) == (MEMBERS + 1, 0, 0)
    runs = read_runs(marker)
    assert sorted(map(int, runs)) == list(range(MEMBERS))
    assert_no_overlap(runs)
    print(
        f"\nchord of {MEMBERS} on {store_name(store_location)} (seed {seed}): "
        f"{len(done_at_kills)} coordinator kills "
        f"(at {done_at_kills} members done), callback released after {released_s:.1f} s, "
        f"{sum(len(r) > 1 for r in runs.values())} members ran more than once, "
        f"the callback {len(runs_of_callback)} time(s)"
    )


# ---- a chain across two servers, one killed mid-chain --------------------------------------


def server_of(pid: int, candidates: list[Server], queue: Queue) -> Server:
    """The server whose worker ``pid`` is."""
    (found,) = [s for s in candidates if pid in s.children(queue)]
    return found


@pytest.mark.timeout(90)
def test_chain_of_10_across_two_servers_survives_a_kill_mid_chain(
    workflow_queue, store_location, servers, tmp_path
):
    """Each step takes 0.3 s and appends its index to its input. The server running
    step 4 is SIGKILLed as that step starts; the other puts it back and runs the rest.
    Every step ran, each after the one before ended, and the last result holds all ten
    indexes in order."""
    marker = tmp_path / "markers.log"
    both = [servers(store_location, "--workers", "1") for _ in range(2)]
    for server in both:
        server.wait_ready(workflow_queue, 1)
    step = workflow_queue.task_by_name(f"{TASKS}.chain_step")
    steps = [step.s((), str(marker), 0, STEP_S)]
    steps += [step.s(str(marker), i, STEP_S) for i in range(1, STEPS)]
    began = time.monotonic()
    last = chain(*steps).delay()

    killed_tag = f"step{KILLED_STEP}"
    runs = wait_until(lambda: killed_tag in (r := read_runs(marker)) and r, 30, killed_tag)
    victim = server_of(runs[killed_tag][0].pid, both, workflow_queue)
    victim.send(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(5)

    assert last.result(timeout=60) == tuple(range(STEPS))
    took = time.monotonic() - began
    runs = read_runs(marker)
    assert sorted(runs) == sorted(f"step{i}" for i in range(STEPS))
    first_starts = sorted(runs, key=lambda tag: runs[tag][0].start)
    assert first_starts == [f"step{i}" for i in range(STEPS)]
    for before, after in zip(range(STEPS), range(1, STEPS)):
        ended = [r.last for r in runs[f"step{before}"] if r.ended]
        assert ended and min(ended) < runs[f"step{after}"][0].start, (before, after)
    killed_run, *again = runs[killed_tag]
    assert not killed_run.ended and killed_run.last < killed_at + 0.1
    assert len(again) == 1 and again[0].ended and again[0].start > killed_at
    assert all(len(runs[f"step{i}"]) == 1 for i in range(STEPS) if i != KILLED_STEP)
    assert_no_overlap(runs)
    stats = workflow_queue.stats()
    assert (stats["done"], stats["processing"], stats["waiting"]) == (STEPS, 0, 0), stats
    print(
        f"\nchain of {STEPS} on {store_name(store_location)}: "
        f"server killed at step {KILLED_STEP}, step {KILLED_STEP} started again "
        f"{again[0].start - killed_at:.2f} s later, chain done in {took:.1f} s"
    )


# ---- a chord member that ends dead ------------------------------------------------------------


def failing_chord(env: Any, runs_dir: Path, allow_failures: bool) -> tuple[Any, Any]:
    """A chord of three members, the middle one ending dead (retries=0, raises); the
    callback's handle and the failing member's."""
    marker = str(env.marker)
    quick, fail = env.task("quick"), env.task("fail")
    members = group([quick.s(marker, "a"), fail.s(marker, "bad"), quick.s(marker, "c")])
    callback = chord(
        members, env.task("chord_total").s(str(runs_dir)), allow_failures=allow_failures
    ).delay()
    return callback, callback.group.jobs[1]


@pytest.mark.timeout(60)
def test_chord_with_a_dead_member_cancels_its_callback(env, servers, tmp_path):
    runs_dir = tmp_path / "callback-runs"
    runs_dir.mkdir()
    servers(env.path, "--workers", "2").wait_ready(env.queue, 2)
    callback, bad = failing_chord(env, runs_dir, allow_failures=False)
    with pytest.raises(JobCancelled) as raised:
        callback.result(timeout=30)
    assert callback.state == "cancelled"
    reason = callback.error.message
    assert reason == f"dependency {bad.id} ({TASKS}.fail) ended dead"
    assert bad.id in str(raised.value)
    assert bad.refresh().state == "dead"
    # The dead member cancels the callback in its own commit; the others may still be
    # running then (their outcomes come in later commits).
    wait_until(lambda: not callback.group.progress()["pending"], 30, "every member ended")
    assert [job.refresh().state for job in callback.group] == ["done", "dead", "done"]
    assert callback_runs(runs_dir) == []  # the callback never ran
    stats = env.stats()
    assert (stats["cancelled"], stats["waiting"], stats["processing"]) == (1, 0, 0)


@pytest.mark.timeout(60)
def test_chord_allowing_failures_passes_the_dead_members_error(env, servers, tmp_path):
    runs_dir = tmp_path / "callback-runs"
    runs_dir.mkdir()
    servers(env.path, "--workers", "2").wait_ready(env.queue, 2)
    callback, bad = failing_chord(env, runs_dir, allow_failures=True)
    expected = ["a", ("failed", bad.id, "RuntimeError", "job bad fails"), "c"]
    assert callback.result(timeout=30) == expected
    assert [got for _, got in callback_runs(runs_dir)] == [expected]  # one run
    assert bad.refresh().state == "dead"
    stats = env.stats()
    assert (stats["done"], stats["dead"], stats["cancelled"]) == (3, 1, 0)
