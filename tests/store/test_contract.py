"""The store contract: the same behaviour from every backend.

Each test runs against LMDB (optimized and legacy layouts), PostgreSQL (a fresh
schema per test; see pg_helpers.py) and the in-memory store (a store of its own per
test, named so that a second handle can open it), through the ``Store`` interface only.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mpqueue import ConfigError, JobNotFound, MpqueueError, Queue
from mpqueue.records import ErrorInfo, JobRecord, JobState, Outcome, new_job_id, now_ms
from mpqueue.store.counting import CountingStore

from ..support.helpers import claim_all, done, failed, join_cleanly, read_lines, snapshot, started
from ..support.pg_helpers import pg_url  # noqa: F401

BACKENDS = ("lmdb-optimized", "lmdb-legacy", "postgres", "memory")


@pytest.fixture(params=BACKENDS)
def store_location(request, tmp_path) -> tuple[str, str]:
    """(location, mode) of an empty store of each backend."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url"), "optimized"
    if request.param == "memory":
        return f"memory://{tmp_path.name}", "optimized"  # tmp_path's name is unique
    return str(tmp_path / "store"), request.param.split("-")[1]


@pytest.fixture
def queue(store_location) -> Iterator[Queue]:
    location, mode = store_location
    with Queue(location, mode=mode) as q:
        yield q


@pytest.fixture
def store(queue):
    return queue.store


def record(
    name: str = "tests.support.tasks.add",
    *,
    priority: int = 0,
    run_at_ms: int | None = None,
    retries: int = 3,
    timeout_s: float | None = None,
    depends_on: tuple[str, ...] = (),
    key: str | None = None,
    allow_failures: bool = False,
    pass_results: str = "",
    retry_on: tuple[str, ...] | None = None,
    no_retry_on: tuple[str, ...] = (),
    expires_at_ms: int | None = None,
    queue: str = "default",
) -> JobRecord:
    now = now_ms()
    run_at = now if run_at_ms is None else run_at_ms
    return JobRecord(
        id=new_job_id(),
        name=name,
        state=JobState.SCHEDULED if run_at > now else JobState.READY,
        payload=b"\x01payload",
        priority=priority,
        run_at_ms=run_at,
        created_at_ms=now,
        max_retries=retries,
        timeout_s=timeout_s,
        backoff_base_s=0.5,
        backoff_cap_s=4.0,
        depends_on=depends_on,
        key=key,
        allow_failures=allow_failures,
        pass_results=pass_results,
        retry_on=retry_on,
        no_retry_on=no_retry_on,
        expires_at_ms=expires_at_ms,
        queue=queue,
    )


def add(store, *records: JobRecord) -> list[str]:
    store.add(list(records))
    return [r.id for r in records]


@pytest.fixture
def seeded(queue, store):
    """One job in every state; returns {state: job id}."""
    late = record(expires_at_ms=now_ms() - 1)  # past its deadline: the claim ends it
    finish_me, kill_me, run_me, expired = add(store, record(), record(), record(), late)
    claim_all(store)
    done(store, finish_me, 2)
    failed(store, kill_me, retryable=False)
    (ready,) = add(store, record())
    (scheduled,) = add(store, record(run_at_ms=now_ms() + 3_600_000))
    (waiting,) = add(store, record(depends_on=(run_me,)))
    (cancelled,) = add(store, record(depends_on=(kill_me,)))  # cancelled as it enters
    assert queue.stats() == {
        "ready": 1,
        "scheduled": 1,
        "processing": 1,
        "done": 1,
        "dead": 1,
        "waiting": 1,
        "cancelled": 1,
        "expired": 1,
        "total": 8,
    }
    return {
        "ready": ready,
        "scheduled": scheduled,
        "processing": run_me,
        "done": finish_me,
        "dead": kill_me,
        "waiting": waiting,
        "cancelled": cancelled,
        "expired": expired,
    }


# ---- adding and claiming -----------------------------------------------------------------


def test_claim_is_priority_then_fifo(store):
    low, high1, mid, high2, mid2 = (record(priority=p) for p in (-1, 5, 0, 5, 0))
    add(store, low, high1, mid)
    add(store, high2, mid2)
    claimed = claim_all(store, limit=2)
    assert [r.id for r in claimed] == [high1.id, high2.id, mid.id, mid2.id, low.id]
    assert all(r.state is JobState.PROCESSING and r.attempts == 1 for r in claimed)
    assert {c.job_id for c in store.claims("w1")} == {r.id for r in claimed}
    assert store.claim("w1", 10, now_ms()) == []


def test_add_assigns_increasing_seqs(store):
    first, second = record(), record()
    add(store, first, second)
    assert 0 < first.seq < second.seq
    assert store.get(first.id).seq == first.seq


def test_scheduled_jobs_are_promoted_when_due(store):
    t = now_ms() + 3_600_000
    later, sooner = record(run_at_ms=t + 2000), record(run_at_ms=t + 1000)
    add(store, later, sooner)
    assert store.next_run_at_ms() == t + 1000
    assert claim_all(store, now=t) == []
    assert [r.id for r in claim_all(store, now=t + 1000)] == [sooner.id]
    assert store.next_run_at_ms() == t + 2000
    assert [r.id for r in claim_all(store, now=t + 5000)] == [later.id]
    assert store.next_run_at_ms() is None


def test_claim_sets_the_deadline_from_the_timeout(store):
    (job_id,) = add(store, record(timeout_s=2.5))
    now = now_ms()
    claim_all(store, now=now)
    (claim,) = store.claims()
    assert claim.job_id == job_id and claim.server_id == "w1"
    assert claim.claimed_at_ms == now and claim.deadline_ms == now + 2500


# ---- outcomes ----------------------------------------------------------------------------


def test_done_keeps_the_result(store, queue):
    (job_id,) = add(store, record())
    claim_all(store)
    now = now_ms()
    assert done(store, job_id, 42, now=now) is True
    rec = store.get(job_id)
    assert rec.state is JobState.DONE and rec.finished_at_ms == now and rec.result
    assert queue.get(job_id).result(timeout=0) == 42
    assert store.claims() == []


def test_failures_retry_with_backoff_then_go_dead(store):
    (job_id,) = add(store, record(retries=2))
    now = now_ms()
    for attempt in (1, 2):
        (rec,) = claim_all(store, now=now)
        assert rec.attempts == attempt
        assert failed(store, job_id, f"boom {attempt}", now=now) is True
        rec = store.get(job_id)
        assert rec.state is JobState.SCHEDULED and len(rec.errors) == attempt
        delay = 500 * 2 ** (attempt - 1)
        assert now + delay // 2 <= rec.run_at_ms <= now + delay
        now = rec.run_at_ms
    claim_all(store, now=now)
    assert failed(store, job_id, "boom 3", now=now) is True
    rec = store.get(job_id)
    assert rec.state is JobState.DEAD and rec.attempts == 3 and rec.finished_at_ms == now
    assert [e.message for e in rec.errors] == ["boom 1", "boom 2", "boom 3"]
    assert store.stats()["dead"] == 1 and store.next_run_at_ms() is None


def test_failure_not_retryable_or_with_explicit_delay(store):
    dead_one, delayed = add(store, record(), record())
    now = now_ms()
    claim_all(store, now=now)
    assert failed(store, dead_one, now=now, retryable=False) is True
    assert failed(store, delayed, now=now, retry_delay_s=7.0) is True
    assert store.get(dead_one).state is JobState.DEAD
    rec = store.get(delayed)
    assert rec.state is JobState.SCHEDULED and rec.run_at_ms == now + 7000


def test_error_text_survives_any_characters(store):
    (job_id,) = add(store, record())
    claim_all(store)
    odd = ErrorInfo(
        "Weird\u00e9",
        "nul \x00 surrogate \udc80 emoji \U0001f600",
        "tb \x00",
        attempt=1,
        at_ms=5,
        kind="exception",
    )
    store.finish([Outcome.failed(job_id, "w1", odd, retryable=False)], now_ms())
    assert store.get(job_id).errors == (odd,)


def test_released_jobs_go_back_uncharged_to_their_place(store):
    """A put-back job never ran (or was interrupted through no fault of its own): it
    keeps its place ahead of the jobs enqueued after it."""
    first, second = add(store, record(), record())
    assert [r.id for r in store.claim("w1", 1, now_ms())] == [first]
    store.finish([Outcome.released(first, "w1")], now_ms())
    rec = store.get(first)
    assert rec.state is JobState.READY and rec.attempts == 0
    assert [r.id for r in claim_all(store)] == [first, second]
    (third,) = add(store, record())
    assert store.requeue_server("w1") == sorted([first, second])
    assert [r.id for r in claim_all(store)] == [first, second, third]


def test_late_or_foreign_outcomes_change_nothing(store, queue):
    a, b = add(store, record(), record())
    claim_all(store)
    assert store.requeue_server("w1") == sorted([a, b])
    before = snapshot(queue)
    assert store.finish([Outcome.done(a, "w1", b"x")], now_ms()) == [False]
    assert failed(store, b) is False
    assert snapshot(queue) == before
    claim_all(store, worker="w2")
    assert store.finish([Outcome.done(a, "w1", b"x")], now_ms()) == [False]  # not w1's
    assert store.finish([Outcome.done(a, "w2", b"x"), Outcome.done(a, "w2", b"y")], now_ms()) == [
        True,
        False,
    ]
    assert store.get(a).state is JobState.DONE


def test_finish_and_claim_is_one_cycle(store):
    running, waiting = add(store, record(), record(priority=-1))
    t = now_ms() + 3_600_000
    (due,) = add(store, record(run_at_ms=t, priority=1))
    assert [r.id for r in store.claim("w1", 1, now_ms())] == [running]
    acks, claimed = store.finish_and_claim([Outcome.done(running, "w1", b"r")], "w1", 5, t)
    assert acks == [True]
    assert [r.id for r in claimed][:1] == [due]  # promoted in the same call, then claimed
    assert store.get(running).state is JobState.DONE
    assert store.finish_and_claim([], "w1", 0, t) == ([], [])


# ---- what is retried: the retry lists ride along -----------------------------------------

LISTS = {  # tag: (retry_on, no_retry_on), as job records hold them
    "plain": (None, ()),
    "both": (("builtins.OSError", "app.errors.Transient"), ("builtins.FileNotFoundError",)),
    "nothing": ((), ()),  # retry_on=(): no exception is retried (not the same as None)
    "only_no": (None, ("__main__.Bad", "odd \u00e9 name.<locals>.X")),
}


def _lists(rec: JobRecord | None) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    assert rec is not None
    return rec.retry_on, rec.no_retry_on


def test_retry_lists_are_carried_by_every_verb(store):
    """Plain jobs and jobs with lists in one batch (the plain ones come back without),
    through add, get, get_many, list, claim, a retry, finish_and_claim and requeue."""
    recs = {tag: record(retry_on=r, no_retry_on=n) for tag, (r, n) in LISTS.items()}
    ids = add(store, *recs.values())
    expected = {rec.id: LISTS[tag] for tag, rec in recs.items()}
    assert [_lists(r) for r in store.get_many(ids)] == list(LISTS.values())
    assert {r.id: _lists(r) for r in store.list()} == expected
    claimed = claim_all(store)
    assert {r.id: _lists(r) for r in claimed} == expected
    for job_id in ids:  # retried: scheduled at once (delay 0), then claimed again
        assert failed(store, job_id, retry_delay_s=0.0)
    assert {r.id: _lists(store.get(r.id)) for r in claimed} == expected
    later = now_ms() + 1000
    _, again = store.finish_and_claim([], "w1", 10, later)
    again += claim_all(store, now=later)  # the legacy layout claims one job per poll
    assert {r.id: _lists(r) for r in again} == expected
    outcomes = [Outcome.failed(j, "w1", ErrorInfo("E", "x"), retryable=False) for j in ids]
    acks, _ = store.finish_and_claim(outcomes, "w1", 10, later)
    assert acks == [True] * len(ids)
    for job_id in ids:
        assert _lists(store.requeue_dead(job_id, now_ms())) == expected[job_id]
        assert _lists(store.get(job_id)) == expected[job_id]


def test_retry_lists_ride_with_keys_and_dependencies(store):
    """The add paths of workflow jobs: a keyed job, a dependency added in the same batch
    as its dependent (a chord's member), and the dependent itself."""
    retry_on, no_retry_on = LISTS["both"]
    keyed = record(key="k1", retry_on=retry_on)
    member = record(no_retry_on=no_retry_on)
    callback = record(depends_on=(member.id,), retry_on=(), no_retry_on=no_retry_on)
    add(store, keyed, member, callback)
    assert _lists(store.get(keyed.id)) == (retry_on, ())
    assert _lists(store.get(member.id)) == (None, no_retry_on)
    assert _lists(store.get(callback.id)) == ((), no_retry_on)
    claim_all(store)
    done(store, member.id, 1)
    released = {r.id: r for r in claim_all(store)}
    assert _lists(released[callback.id]) == ((), no_retry_on)


# ---- taking back, removing -------------------------------------------------------------


def test_requeue_worker_puts_back_only_that_workers_jobs(store):
    mine = add(store, record(), record())
    claim_all(store, worker="w1")
    (theirs,) = add(store, record())
    claim_all(store, worker="w2")
    assert store.requeue_server("w1") == sorted(mine)
    for job_id in mine:
        rec = store.get(job_id)
        assert rec.state is JobState.READY and rec.attempts == 0
    assert [c.job_id for c in store.claims()] == [theirs]
    assert store.requeue_server("w1") == []


def test_requeue_dead(store, seeded):
    rec = store.requeue_dead(seeded["dead"], now_ms())
    assert rec.state is JobState.READY and rec.attempts == 0 and rec.finished_at_ms is None
    stored = store.get(seeded["dead"])
    assert stored.state is JobState.READY and stored.attempts == 0 and stored.errors
    with pytest.raises(JobNotFound):
        store.requeue_dead(new_job_id(), now_ms())
    with pytest.raises(ConfigError, match="only dead jobs"):
        store.requeue_dead(seeded["done"], now_ms())


def test_purge_dead(store, seeded, queue):
    assert store.purge_dead() == 1
    assert store.get(seeded["dead"]) is None
    assert queue.stats()["total"] == 7 and store.purge_dead() == 0


@pytest.mark.parametrize("state", [s.value for s in JobState])
def test_delete_in_every_state(store, seeded, queue, state):
    job_id = seeded[state]
    assert store.delete(job_id) is True
    assert store.get(job_id) is None and store.delete(job_id) is False
    stats = queue.stats()
    assert stats[state] == 0 and stats["total"] == 7
    assert job_id not in [j.id for j in queue.list()]
    if state == "processing":
        assert store.claims() == [] and done(store, job_id, 1) is False
    assert queue.stats() == stats


def test_expire_finished(store, queue):
    old, new = add(store, record(), record())
    claim_all(store)
    done(store, old, 1, now=1000)
    done(store, new, 2, now=2000)
    assert store.expire_finished(1000) == 0  # strictly before
    assert store.expire_finished(1001) == 1
    assert store.get(old) is None and store.get(new) is not None
    assert queue.stats()["done"] == 1


# ---- reading --------------------------------------------------------------------------------


def test_stats(seeded, store):
    assert store.stats() == {
        "ready": 1,
        "scheduled": 1,
        "processing": 1,
        "done": 1,
        "dead": 1,
        "waiting": 1,
        "cancelled": 1,
        "expired": 1,
        "total": 8,
    }


def test_list_is_oldest_first_and_filtered(store, queue, store_location):
    recs = [
        record("tests.support.tasks.add" if i % 2 else "tests.support.tasks.noop")
        for i in range(30)
    ]
    for i, rec in enumerate(recs):
        rec.created_at_ms = 1_000_000 + (i // 3)  # three per millisecond: seq breaks ties
    add(store, *recs[:15])
    add(store, *recs[15:])
    counting = CountingStore(store)
    listed = counting.list()
    ops = counting.last("list")
    assert [r.id for r in listed] == [r.id for r in recs]
    assert [r.id for r in counting.list(name="tests.support.tasks.noop", limit=4)] == [
        r.id for r in recs[0:8:2]
    ]
    store.claim("w1", 3, now_ms())
    processing = counting.list(state=JobState.PROCESSING)
    assert len(processing) == (1 if store.mode == "legacy" else 3)
    assert counting.list(name="tests.support.tasks.add", state=JobState.DONE) == []
    assert counting.list(limit=0) == []
    if store_location[0].startswith("postgresql://"):
        assert ops.txns == 1  # one query, however many jobs
    elif store.mode == "optimized":
        assert ops.txns == 1 and ops.gets == 0  # no per-job lookups


def test_a_limited_list_reads_o_limit_entries(store, queue):
    """The limit is applied while the index is walked, not after reading every job."""
    names = ("tests.support.tasks.add", "tests.support.tasks.noop", "tests.support.tasks.echo")
    recs = [record(names[i % 3]) for i in range(300)]
    add(store, *recs[:150])
    add(store, *recs[150:])
    counting = CountingStore(store)
    for kwargs, expected in (
        ({}, recs[:5]),
        ({"name": names[1]}, recs[1:15:3]),
        ({"state": JobState.READY}, recs[:5]),
        ({"name": names[2], "state": JobState.READY}, recs[2:15:3]),
    ):
        listed = counting.list(limit=5, **kwargs)
        assert [r.id for r in listed] == [r.id for r in expected], kwargs
        ops = counting.last("list")
        # 2 reads per listed job at most (legacy: index + record), plus the seeks that
        # find the task names: never a read per job in the store.
        assert ops.reads <= 2 * 5 + 2 * len(names) + 2, (kwargs, ops)


def test_newest_dead_reads_the_newest_dead_jobs_alone(store):
    """``top``'s last failures: newest id first, O(limit) reads beside many other jobs."""
    recs = [record(retries=0) for _ in range(60)]
    add(store, *recs)
    claim_all(store)
    dead = [r for i, r in enumerate(recs) if i % 5 == 0]
    for i, rec in enumerate(recs):
        assert failed(store, rec.id) if rec in dead else done(store, rec.id, i)
    counting = CountingStore(store)
    newest = counting.newest_dead(4)
    assert [r.id for r in newest] == [r.id for r in reversed(dead)][:4]
    assert all(r.state is JobState.DEAD and r.payload == b"" for r in newest)
    assert newest[0].errors[-1].message == "boom"
    assert counting.last("newest_dead").reads <= 2 * 4 + 2  # an index entry and a record each
    assert [r.id for r in store.newest_dead(100)] == [r.id for r in reversed(dead)]
    assert store.newest_dead(0) == []


def test_a_batch_lists_in_the_order_it_was_given(queue):
    jobs = queue.task_by_name("tests.support.tasks.add").map([(i, i) for i in range(200)])
    assert [j.id for j in queue.list()] == [j.id for j in jobs]
    assert [j.id for j in queue.list(limit=7)] == [j.id for j in jobs[:7]]


def test_a_job_named_twice_through_a_held_key_waits_for_it_once(store):
    """The second job of a batch with the first one's key reads as the first, so a job
    depending on both names that job twice: one edge, released when it is done (found
    by the state machine: the count of two never reached zero)."""
    first, second = record(key="k"), record(key="k")
    callback = record(depends_on=(first.id, second.id))
    store.add([first, second, callback])
    assert second.id == first.id and callback.depends_on == (first.id, first.id)
    assert callback.state is JobState.WAITING and store.check().code == 0
    assert store.dependents(first.id) == [callback.id]
    assert [r.id for r in claim_all(store)] == [first.id]
    assert done(store, first.id, 1)
    assert store.get(callback.id).state is JobState.READY and store.check().code == 0


def test_listing_leaves_payload_and_result_out(store, queue):
    big = b"\x01" + b"x" * 2_000_000
    rec = record()
    rec.payload = big
    (job_id,) = add(store, rec)
    claim_all(store)
    done(store, job_id, "r" * 3_000_000)
    (listed,) = store.list()
    assert listed.id == job_id and listed.state is JobState.DONE
    assert listed.payload == b"" and listed.result is None and listed.func is None
    full = store.get(job_id)
    assert full.payload == big and len(full.result) > 3_000_000
    (job,) = queue.list()
    assert job.record.payload == b""
    with pytest.raises(MpqueueError):  # the listed handle re-reads, then loads for real
        job.args()  # (b"x..." is no pickle: it fails on the real payload, not on b"")
    assert job.record.payload == big


# ---- registry ---------------------------------------------------------------------------------


def test_worker_registry(store, store_location, waiter):
    info = {"pid": 123, "host": "h", "heartbeat_ms": 5, "children": [(4, 1.5)]}
    store.register_server("w1", info)
    store.register_server("w2", {"pid": 9})
    found = store.servers()
    assert set(found) == {"w1", "w2"}
    assert {k: v for k, v in found["w1"].items() if k != "heartbeat_age_ms"} == info
    assert all(isinstance(w["heartbeat_age_ms"], int) for w in found.values())
    if store_location[0].startswith("postgresql://"):  # the database's clock, not ours
        assert 0 <= found["w1"]["heartbeat_age_ms"] < 5000
        waiter(lambda: store.servers()["w1"]["heartbeat_age_ms"] >= 200, timeout=5)
        store.register_server("w1", dict(info, pid=124))
        fresh = store.servers()["w1"]
        assert fresh["pid"] == 124 and fresh["heartbeat_age_ms"] < 200
    store.unregister_server("w1")
    assert set(store.servers()) == {"w2"}
    store.unregister_server("w1")  # gone already: fine


# ---- bad input ------------------------------------------------------------------------------


def test_bad_input_leaves_the_store_unchanged(seeded, store, queue):
    def unchanged(action, kind=MpqueueError):
        before = snapshot(queue)
        with pytest.raises(kind):
            action()
        assert snapshot(queue) == before

    unchanged(lambda: store.add([record(), record("x" * 600)]), ConfigError)
    unchanged(lambda: store.claim("w" * 600, 5, now_ms()), ConfigError)
    unchanged(lambda: store.requeue_dead(seeded["ready"], now_ms()), ConfigError)
    unchanged(lambda: store.requeue_dead(new_job_id(), now_ms()), JobNotFound)
    before = snapshot(queue)
    assert store.delete(new_job_id()) is False
    assert store.finish([Outcome.done(new_job_id(), "w1", b"")], now_ms()) == [False]
    assert store.requeue_server("nobody") == [] and store.finish([], now_ms()) == []
    assert snapshot(queue) == before


# ---- concurrency ------------------------------------------------------------------------------


def run_at_once(location: str, target: Callable[..., None], args: list[tuple], what: str) -> None:
    """``target(*a)`` for every ``a`` of ``args`` at once, each in a spawned process (in
    a thread on the memory store, which lives in one process), within 50 s."""
    if location.startswith("memory://"):
        threads = [threading.Thread(target=target, args=a) for a in args]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(50)
        assert not any(thread.is_alive() for thread in threads), f"a {what} hangs"
    else:
        procs = [mp.get_context("spawn").Process(target=target, args=a) for a in args]
        with started(procs):
            join_cleanly(procs, 50, what)


def claim_until_empty(location: str, mode: str, worker: str, out: str) -> None:
    got: list[str] = []
    with Queue(location, mode=mode) as queue:
        while claimed := queue.store.claim(worker, 16, now_ms()):
            got.extend(r.id for r in claimed)
            queue.store.finish([Outcome.done(r.id, worker, b"") for r in claimed[::2]], now_ms())
    Path(out).write_text("\n".join(got))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("claimers", [2, 4])
def test_concurrent_claimers_never_share_a_job(store, store_location, tmp_path, claimers):
    location, mode = store_location
    count = 60 if mode == "legacy" else 1200
    ids = [
        rec_id
        for start in range(0, count, 200)
        for rec_id in add(store, *(record() for _ in range(min(200, count - start))))
    ]
    files = [tmp_path / f"claimed-{i}.txt" for i in range(claimers)]
    args = [(location, mode, f"c{i}", str(f)) for i, f in enumerate(files)]
    run_at_once(location, claim_until_empty, args, "claimer")
    claimed = read_lines(files)
    assert len(claimed) == len(set(claimed)), "a job was handed out twice"
    assert set(claimed) == set(ids), "a job was never claimed"
    stats = store.stats()
    assert stats["ready"] == 0 and stats["processing"] + stats["done"] == count
