"""The store contract, continued: dependencies, cancellation and unique keys, on every
backend (the fixtures of ``test_contract.py``: LMDB in both layouts, PostgreSQL and
memory), through the ``Store`` interface only."""

from __future__ import annotations

import pytest

from mpqueue import ConfigError, JobCancelled, JobFailed, chain, chord, group
from mpqueue.records import JobState, new_job_id, now_ms
from mpqueue.serializer import load_result

from ..support.helpers import claim_all, done, failed, snapshot
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, run_at_once, store, store_location  # noqa: F401


def states(store, *job_ids: str) -> list[str]:
    return [store.get(job_id).state.value for job_id in job_ids]


def clean(store) -> None:
    report = store.check(holder_gone=lambda server_id: True)
    assert report.inconsistent == [] and report.corrupt == []


def claimed_ids(store, worker: str = "w1") -> set[str]:
    return {rec.id for rec in claim_all(store, worker)}


# ---- waiting and release ------------------------------------------------------------------


def test_a_dependent_waits_and_is_released_by_the_outcome(store):
    (a,) = add(store, record())
    (b,) = add(store, record(depends_on=(a,)))
    assert states(store, b) == ["waiting"] and store.stats()["waiting"] == 1
    assert claimed_ids(store) == {a}  # a waiting job is never claimed
    assert done(store, a, 1)
    assert states(store, b) == ["ready"] and store.stats()["waiting"] == 0
    assert claimed_ids(store) == {b}
    assert store.dependents(a) == [b] and store.get(b).depends_on == (a,)
    clean(store)


def test_release_is_claimed_in_the_same_cycle(store, store_location):
    (a,) = add(store, record())
    (b,) = add(store, record(depends_on=(a,)))
    claim_all(store)
    limit = 1 if store_location[1] == "legacy" else 8
    # the released job goes to the server that ended its dependency, at once
    acks, claimed = store.finish_and_claim([done_outcome(a)], "w1", limit, now_ms())
    assert acks == [True] and [rec.id for rec in claimed] == [b]


def done_outcome(job_id: str):
    from mpqueue.records import Outcome
    from mpqueue.serializer import dump_result

    return Outcome.done(job_id, "w1", dump_result(None))


def test_fan_in_releases_once_when_the_last_dependency_ends(store):
    deps = add(store, *[record() for _ in range(5)])
    (join,) = add(store, record(depends_on=tuple(deps)))
    claim_all(store)
    for job_id in deps[:-1]:
        assert done(store, job_id, 0)
        assert states(store, join) == ["waiting"]
    assert done(store, deps[-1], 0)
    assert states(store, join) == ["ready"]
    clean(store)


def test_a_released_job_with_a_later_run_at_is_scheduled(store):
    (a,) = add(store, record())
    (b,) = add(store, record(depends_on=(a,), run_at_ms=now_ms() + 3_600_000))
    claim_all(store)
    done(store, a, 0)
    assert states(store, b) == ["scheduled"]


def test_dependencies_already_ended_when_the_job_is_added(store):
    (ok, bad) = add(store, record(), record(retries=0))
    claim_all(store)
    done(store, ok, 0)
    failed(store, bad, retryable=False)
    (runs,) = add(store, record(depends_on=(ok,)))
    (cancelled,) = add(store, record(depends_on=(ok, bad)))
    (tolerant,) = add(store, record(depends_on=(ok, bad), allow_failures=True))
    assert states(store, runs, cancelled, tolerant) == ["ready", "cancelled", "ready"]
    reason = store.get(cancelled).errors[-1]
    assert reason.kind == "cancelled" and bad in reason.message and "dead" in reason.message
    clean(store)


def test_dependencies_within_one_add(store):
    first = record()
    second = record(depends_on=(first.id,))
    third = record(depends_on=(first.id, second.id))
    store.add([first, second, third])
    assert [first.state, second.state, third.state] == [
        JobState.READY,
        JobState.WAITING,
        JobState.WAITING,
    ]
    claim_all(store)
    done(store, first.id, 0)
    assert states(store, second.id, third.id) == ["ready", "waiting"]
    claim_all(store)
    done(store, second.id, 0)
    assert states(store, third.id) == ["ready"]
    clean(store)


def test_a_missing_dependency_is_refused_and_nothing_is_added(store, queue):
    (a,) = add(store, record())
    before = snapshot(queue)
    with pytest.raises(ConfigError, match="does not exist"):
        store.add([record(), record(depends_on=(a, new_job_id()))])
    assert snapshot(queue) == before


def test_a_dependency_later_in_the_same_add_is_refused(store, queue):
    first = record()
    dependent = record(depends_on=(first.id,))
    before = snapshot(queue)
    with pytest.raises(ConfigError, match="comes after it"):
        store.add([dependent, first])
    assert snapshot(queue) == before


# ---- failure and cancellation --------------------------------------------------------------


def test_a_dead_dependency_cancels_its_dependents_recursively(store):
    (root,) = add(store, record(retries=0))
    (child,) = add(store, record(depends_on=(root,)))
    (grandchild,) = add(store, record(depends_on=(child,)))
    (other,) = add(store, record())
    (tolerant,) = add(store, record(depends_on=(root, other), allow_failures=True))
    assert claimed_ids(store) == {root, other}
    failed(store, root, retryable=False)
    assert states(store, child, grandchild, tolerant) == ["cancelled", "cancelled", "waiting"]
    for job_id in (child, grandchild):
        error = store.get(job_id).errors[-1]
        assert error.type == "Cancelled" and root in error.message  # names the dead one
    assert store.stats()["cancelled"] == 2
    done(store, other, 0)
    assert states(store, tolerant) == ["ready"]  # counted down as if done
    clean(store)


def test_a_retried_dependency_keeps_its_dependents_waiting(store):
    (a,) = add(store, record(retries=2))
    (b,) = add(store, record(depends_on=(a,)))
    claim_all(store)
    failed(store, a)  # retried: not an end
    assert states(store, a, b) == ["scheduled", "waiting"]


def test_deleting_an_unfinished_dependency_cancels_its_dependents(store):
    (a,) = add(store, record())
    (b,) = add(store, record(depends_on=(a,)))
    (c,) = add(store, record(depends_on=(a,), allow_failures=True))
    assert store.delete(a)
    assert states(store, b, c) == ["cancelled", "ready"]
    assert "deleted" in store.get(b).errors[-1].message
    clean(store)


def test_deleting_a_waiting_job_leaves_its_dependencies_unharmed(store):
    (a,) = add(store, record())
    (b,) = add(store, record(depends_on=(a,)))
    assert store.delete(b)
    assert store.dependents(a) == []
    claim_all(store)
    assert done(store, a, 0)
    clean(store)


def test_requeueing_a_dead_dependency_does_not_revive_what_it_cancelled(store):
    (a,) = add(store, record(retries=0))
    (b,) = add(store, record(depends_on=(a,)))
    claim_all(store)
    failed(store, a, retryable=False)
    store.requeue_dead(a, now_ms())
    claim_all(store)
    done(store, a, 0)  # its edge was closed by its first end: nothing counts it again
    assert states(store, a, b) == ["done", "cancelled"]
    clean(store)


def test_cancelled_jobs_expire_like_done_ones(store):
    (a,) = add(store, record(retries=0))
    (b,) = add(store, record(depends_on=(a,)))
    claim_all(store)
    failed(store, a, retryable=False, now=1_000)
    assert store.get(b).state is JobState.CANCELLED
    assert store.expire_finished(now_ms() + 1) == 1  # b; a is dead, kept
    assert store.get(b) is None and store.stats()["cancelled"] == 0
    clean(store)


def test_release_costs_the_same_whatever_the_fan_in(store, store_location):
    """O(1) per finished dependency: the ops of one member's finish do not grow with
    the number of members the join waits for."""

    def finish_ops(fan_in: int) -> int:
        members = add(store, *[record() for _ in range(fan_in)])
        add(store, record(depends_on=tuple(members)))
        claimed = [rec.id for rec in claim_all(store, limit=fan_in)]
        while len(claimed) < fan_in:
            claimed += [rec.id for rec in claim_all(store, limit=fan_in)]
        before = store.counter.snapshot()
        done(store, members[0], 0)
        return (store.counter - before).reads + (store.counter - before).puts

    if store_location[1] == "legacy":
        pytest.skip("legacy claims one job per poll: the fan-in setup would take minutes")
    assert finish_ops(300) == finish_ops(3)


# ---- unique keys --------------------------------------------------------------------------


def test_a_held_key_returns_the_holder(store):
    first = record(key="partition-1")
    store.add([first])
    again = record(key="partition-1")
    store.add([again])
    assert again.id == first.id and store.stats()["total"] == 1
    other_task = record("tests.support.tasks.noop", key="partition-1")
    store.add([other_task])
    assert other_task.id != first.id  # keys are per task name
    claim_all(store)
    done(store, first.id, 0)
    done_again = record(key="partition-1")
    store.add([done_again])
    assert done_again.id == first.id and done_again.state is JobState.DONE  # until it expires


def test_a_dead_holder_frees_its_key(store):
    first = record(key="k", retries=0)
    store.add([first])
    claim_all(store)
    failed(store, first.id, retryable=False)
    second = record(key="k")
    store.add([second])
    assert second.id != first.id and second.state is JobState.READY
    with pytest.raises(ConfigError, match="holds now"):
        store.requeue_dead(first.id, now_ms())
    assert store.get(first.id).state is JobState.DEAD
    clean(store)


def test_a_key_twice_in_one_add_is_one_job(store):
    first, second = record(key="same"), record(key="same")
    store.add([first, second])
    assert first.id == second.id and store.stats()["total"] == 1


def test_a_deleted_holder_frees_its_key(store):
    first = record(key="k")
    store.add([first])
    assert store.delete(first.id)
    second = record(key="k")
    store.add([second])
    assert second.id != first.id
    clean(store)


# ---- reading ------------------------------------------------------------------------------


def test_get_many_keeps_the_order_and_marks_missing_ids(store):
    ids = add(store, record(), record())
    missing = new_job_id()
    found = store.get_many([ids[1], missing, ids[0]])
    assert [None if r is None else r.id for r in found] == [ids[1], None, ids[0]]
    assert found[0].payload == b"\x01payload"


def test_endings_read_state_result_and_last_error(store):
    ok, bad, queued = add(store, record(), record(retries=0), record())
    claim_all(store)
    done(store, ok, {"answer": 42})
    failed(store, bad, "it broke", retryable=False)
    got = store.endings([ok, new_job_id(), bad])
    assert got[1] is None and got[0].state is JobState.DONE and got[0].error is None
    assert load_result(got[0].result) == {"answer": 42}
    assert got[2].state is JobState.DEAD and got[2].error.message == "it broke"
    assert got[2].result is None
    assert store.endings([queued])[0].state is JobState.PROCESSING


def test_list_finds_waiting_and_cancelled_jobs(store, queue):
    (a,) = add(store, record(retries=0))
    (b,) = add(store, record(depends_on=(a,)))
    assert [j.id for j in queue.list(state="waiting")] == [b]
    claim_all(store)
    failed(store, a, retryable=False)
    assert [j.id for j in queue.list(state="cancelled")] == [b]


# ---- workflows through the queue (jobs run in this process) -----------------------------


def test_chain_group_and_chord_run_in_order(queue):
    from ..support import tasks

    add_task = queue.task(tasks.add)
    total = queue.task(tasks.total)
    last = chain(add_task.s(1, 1), add_task.s(5), add_task.s(100)).delay()
    members = group(add_task.s(i, 0) for i in range(20)).delay()
    callback = chord(group(add_task.s(i, 1) for i in range(20)), total.s()).delay()
    while queue.run_pending():
        pass
    assert last.result(timeout=5) == 107
    assert members.results(timeout=5) == list(range(20))
    assert members.progress() == {
        "done": 20,
        "dead": 0,
        "cancelled": 0,
        "expired": 0,
        "pending": 0,
        "total": 20,
    }
    assert callback.result(timeout=5) == sum(range(1, 21))
    assert callback.group is not None and len(callback.group) == 20
    clean(queue.store)


def test_a_failed_chord_member_cancels_the_callback_or_is_passed(queue):
    from ..support import tasks

    add_task, total = queue.task(tasks.add), queue.task(tasks.total)
    fail = queue.task(tasks.fail, retries=0)
    names = queue.task(tasks.type_names)
    strict = chord([add_task.s(1, 1), fail.s()], total.s()).delay()
    tolerant = chord([add_task.s(1, 1), fail.s()], names.s(), allow_failures=True).delay()
    while queue.run_pending():
        pass
    with pytest.raises(JobCancelled, match="dead"):
        strict.result(timeout=5)
    with pytest.raises(JobFailed):
        strict.group.results(timeout=5)
    assert tolerant.result(timeout=5) == ["int", "JobFailed"]


def test_a_workflow_is_written_in_one_transaction(queue):
    from ..support import tasks

    add_task = queue.task(tasks.add)
    before = snapshot(queue)
    with pytest.raises(ConfigError):
        chord(group([add_task.s(1, 2), add_task.s(3, 4)]), add_task.s(key="x" * 600)).delay()
    assert snapshot(queue) == before


def test_results_travel_through_the_store_with_one_read_per_member(queue):
    """The callback's inputs are read with endings: one read per member's record."""
    from mpqueue.execute import TaskRunner

    from ..support import tasks

    add_task, total = queue.task(tasks.add), queue.task(tasks.total)
    callback = chord(group(add_task.s(i, 0) for i in range(50)), total.s()).delay()
    fetched: list[int] = []

    def fetch(ids):
        fetched.append(len(ids))
        before = queue.store.counter.snapshot()
        found = queue.store.endings(ids)
        reads = (queue.store.counter - before).reads
        assert reads <= len(ids) + 2, reads  # no scan of the store
        return found

    while queue.run_pending():
        pass
    rec = queue.store.get(callback.id)
    assert rec.state is JobState.DONE
    runner = TaskRunner("w-check", None, fetch=fetch)
    assert runner._inputs(rec) == list(range(50)) and fetched == [50]
    assert load_result(rec.result) == sum(range(50))


# ---- concurrency ------------------------------------------------------------------------------


def finish_until_empty(location: str, mode: str, worker: str, out: str) -> None:
    """Claim and finish (done) jobs until none is left; writes the ids it finished."""
    from mpqueue import Queue
    from mpqueue.records import Outcome

    got: list[str] = []
    with Queue(location, mode=mode) as queue:
        while claimed := queue.store.claim(worker, 8, now_ms()):
            queue.store.finish([Outcome.done(r.id, worker, b"") for r in claimed], now_ms())
            got.extend(r.id for r in claimed)
    with open(out, "w") as handle:
        handle.write("\n".join(got))


@pytest.mark.timeout(60)
def test_concurrent_finishers_release_a_join_exactly_once(store, store_location, tmp_path):
    """Finishers in other processes (threads on the memory store) end the members of
    two joins that share them, concurrently: each join is released once, its count
    agreeing with its edges throughout (check), and run by exactly one finisher."""
    from ..support.helpers import read_lines

    location, mode = store_location
    if mode == "legacy":
        pytest.skip("legacy claims one job per poll: slow, and its claim is the same code")
    members = [rec_id for _ in range(4) for rec_id in add(store, *[record() for _ in range(50)])]
    (left,) = add(store, record(depends_on=tuple(members[::2] + members[1:2])))
    (both,) = add(store, record(depends_on=tuple(members)))
    files = [tmp_path / f"finished-{i}.txt" for i in range(3)]
    args = [(location, mode, f"f{i}", str(f)) for i, f in enumerate(files)]
    run_at_once(location, finish_until_empty, args, "finisher")
    finished = read_lines(files)
    assert sorted(finished) == sorted([*members, left, both]), "a job ran twice or never"
    assert states(store, left, both) == ["done", "done"]
    clean(store)


def test_cancelling_a_chords_group_cancels_its_callback(queue, store):
    add_task = queue.task_by_name("tests.support.tasks.add")
    total = queue.task_by_name("tests.support.tasks.total")
    callback = chord(group(add_task.s(i, i) for i in range(4)), total.s()).delay()
    members = callback.group
    running_ids = [rec.id for rec in store.claim("w1", 1, now_ms())]
    report = members.cancel(reason="stop")
    assert sorted(report.cancelled + report.requested) == sorted(members.ids)
    assert report.requested == running_ids
    assert states(store, callback.id) == ["cancelled"]
    with pytest.raises(JobCancelled):
        callback.result(timeout=1)
    for job_id in running_ids:
        done(store, job_id, 1)
    assert members.progress()["cancelled"] == 4
    clean(store)
