"""``Queue.run_pending`` (``execute.py``): due jobs run in the calling process, with a
server's rules for retries and dead-lettering, on every store."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from mpqueue import ConfigError, Fail, JobFailed, Queue, Retry
from mpqueue.execute import TaskRunner
from mpqueue.records import JobRecord, JobState, Outcome, new_job_id, now_ms
from mpqueue.serializer import dump_payload

from ..support.helpers import wait_until
from ..support.pg_helpers import pg_url  # noqa: F401

STORES = ("memory", "lmdb", "postgres")
calls: dict[str, int] = {}  # runs per key: the jobs run in this process, so they share it


@pytest.fixture(params=STORES)
def queue(request, tmp_path):
    location = {
        "memory": lambda: f"memory://{tmp_path.name}",
        "lmdb": lambda: str(tmp_path / "store"),
        "postgres": lambda: request.getfixturevalue("pg_url"),
    }[request.param]()
    calls.clear()
    with Queue(location) as q:
        yield q


# Tasks: module-level functions, so the runner finds them by name as a server would.
def add(a: int, b: int) -> int:
    return a + b


def boom(message: str = "boom") -> None:
    raise RuntimeError(message)


def retry_once(key: str, delay_s: float) -> str:
    calls[key] = calls.get(key, 0) + 1
    if calls[key] == 1:
        raise Retry(delay_s, "not yet")
    return f"ran {calls[key]} times"


def leave(how: str) -> None:
    raise SystemExit(3) if how == "exit" else KeyboardInterrupt()


def unpicklable() -> object:
    return threading.Lock()


class Missing(FileNotFoundError):
    pass


def raise_kind(kind: str) -> None:
    errors: dict[str, BaseException] = {
        "value": ValueError("bad"),
        "io": OSError("io"),
        "missing": Missing("gone"),
        "fail": Fail("given up"),
        "retry": Retry(0.0, "again"),
    }
    raise errors[kind]


# ---- running ------------------------------------------------------------------------------


def test_runs_every_due_job_and_returns_the_count(queue):
    task = queue.task(add)
    jobs = [task.delay(i, i) for i in range(5)]
    later = task.schedule((1, 1), delay=3600)
    assert queue.run_pending() == 5
    assert [job.result(timeout=0) for job in jobs] == [0, 2, 4, 6, 8]
    assert later.refresh().state == "scheduled"
    assert queue.run_pending() == 0
    assert queue.stats()["done"] == 5 and queue.stats()["processing"] == 0


def test_limit_caps_the_runs(queue):
    task = queue.task(add)
    task.map([(i, 0) for i in range(5)])
    assert queue.run_pending(limit=0) == 0
    assert queue.run_pending(limit=2) == 2 and queue.stats()["ready"] == 3
    assert queue.run_pending() == 3
    for bad in (-1, True, "2", 1.5):
        with pytest.raises(ConfigError, match="limit"):
            queue.run_pending(limit=bad)


def test_a_failed_job_waits_for_its_backoff(queue):
    job = queue.task(boom, retries=2, backoff=60.0).delay()
    before = now_ms()
    assert queue.run_pending() == 1  # rescheduled, not due again at once
    job.refresh()
    assert job.state == "scheduled" and job.attempts == 1
    assert before + 30_000 <= job.record.run_at_ms <= now_ms() + 60_000
    assert job.error.type == "RuntimeError" and "boom" in job.error.traceback


def test_a_failing_job_is_retried_then_dead_lettered(queue):
    job = queue.task(boom, retries=2, backoff=0.001).delay("always")
    runs = [queue.run_pending()]
    wait_until(lambda: runs.append(queue.run_pending()) or job.refresh().state == "dead")
    assert sum(runs) == 3 and job.attempts == 3
    assert [e.message for e in job.errors] == ["always"] * 3
    with pytest.raises(JobFailed, match="always"):
        job.result(timeout=0)


def test_retry_raised_by_a_task(queue):
    task = queue.task(retry_once)
    now_again, later = task.delay("a", 0.0), task.delay("b", 3600.0)
    assert queue.run_pending() == 3  # a: Retry(0) is due at once, runs again; b: once
    assert now_again.result(timeout=0) == "ran 2 times"
    assert now_again.errors[0].kind == "retry"
    later.refresh()
    assert later.state == "scheduled" and later.record.run_at_ms > now_ms() + 3_000_000


def test_a_task_leaving_the_process_fails_only_its_job(queue):
    job = queue.task(leave, retries=0).delay("exit")
    assert queue.run_pending() == 1
    assert job.refresh().state == "dead" and job.error.type == "SystemExit"


def test_ctrl_c_in_a_job_puts_its_batch_back_and_stops(queue):
    task = queue.task(leave)
    interrupted, waiting = task.delay("interrupt"), queue.task(add).delay(1, 2)
    with pytest.raises(KeyboardInterrupt):
        queue.run_pending()
    for job in (interrupted, waiting):
        job.refresh()
        assert job.state == "ready" and job.attempts == 0  # uncharged
    assert queue.stats()["processing"] == 0


def _raw_job(queue: Queue, name: str, payload: bytes, retries: int = 0) -> str:
    now = now_ms()
    rec = JobRecord(
        id=new_job_id(),
        name=name,
        state=JobState.READY,
        payload=payload,
        run_at_ms=now,
        created_at_ms=now,
        max_retries=retries,
    )
    queue.store.add([rec])
    return rec.id


def test_unknown_task_bad_payload_and_bad_result_fail_their_jobs(queue):
    unknown = _raw_job(queue, "tests.no_such_module.task", dump_payload((), {}), retries=1)
    garbage = _raw_job(queue, f"{__name__}.add", b"\x01not a pickle", retries=3)
    result = queue.task(unpicklable, retries=3).delay()
    assert queue.run_pending() == 3
    lost = queue.get(unknown)
    assert lost.state == "scheduled" and lost.error.type == "TaskNotFound"  # retryable
    bad = queue.get(garbage)
    assert bad.state == "dead" and bad.error.kind == "payload"  # never retried
    assert result.refresh().state == "dead" and result.error.type == "SerializationError"


def test_signed_jobs_are_verified_with_the_queues_secret(tmp_path):
    location = f"memory://{tmp_path.name}"
    with Queue(location, secret="s3cret") as signed, Queue(location) as unsigned:
        good = signed.task(add).delay(2, 3)
        forged = unsigned.task(add).delay(4, 5)
        assert signed.run_pending() == 2
        assert good.result(timeout=0) == 5
        assert forged.refresh().state == "dead" and forged.error.type == "BadSignature"


def test_a_task_defined_inside_a_test_runs_by_value():
    with Queue("memory://") as queue:
        offset = 10

        @queue.task
        def shifted(x: int) -> int:
            return x + offset

        job = shifted.delay(5)
        assert queue.run_pending() == 1 and job.result(timeout=0) == 15


# ---- what is retried: the same rules as a server's child ------------------------------------


def _run_until_finished(queue: Queue, jobs: list, limit_s: float = 10.0) -> list[int]:
    """run_pending until every job ended; returns each job's attempts."""
    wait_until(
        lambda: queue.run_pending() >= 0 and all(j.refresh().state == "dead" for j in jobs),
        limit_s,
        "every job dead",
    )
    return [job.attempts for job in jobs]


def test_retry_on_no_retry_on_and_fail_in_run_pending(queue):
    fast = {"retries": 3, "backoff": 0.001, "backoff_cap": 0.001}
    refuses = queue.task(raise_kind, **fast, no_retry_on=(ValueError,))
    # One task (its name is the function's import path), varied per call.
    io_only = refuses.options(retry_on=OSError, no_retry_on=())
    nearest = refuses.options(retry_on=(OSError,), no_retry_on=(Missing,))
    jobs = [
        refuses.delay("value"),  # in no_retry_on: dead at once
        refuses.delay("io"),  # not in it: retried
        io_only.delay("value"),  # not in retry_on: dead at once
        io_only.delay("missing"),  # a subclass of OSError: retried
        io_only.delay("fail"),  # Fail: dead at once, whatever the lists
        nearest.delay("missing"),  # Missing is nearer than OSError: dead at once
        nearest.delay("io"),
        refuses.options(retries=0).delay("io"),  # the call's options
        io_only.options(retry_on=None).delay("value"),
    ]
    assert _run_until_finished(queue, jobs) == [1, 4, 1, 4, 1, 1, 4, 1, 4]
    assert jobs[4].error.kind == "fail" and jobs[4].error.message == "given up"
    assert jobs[0].error.kind == "exception" and jobs[0].record.max_retries == 3


def test_retry_asks_for_a_run_whatever_retry_on_says(queue):
    task = queue.task(raise_kind, retries=2, retry_on=(KeyError,), no_retry_on=(Exception,))
    job = task.delay("retry")
    assert _run_until_finished(queue, [job]) == [3]
    assert [e.kind for e in job.errors] == ["retry"] * 3


# ---- expiry at the start: a claimed job that waited past its deadline -----------------------


def spin_until(at_ms: int) -> None:
    """Run until the clock passes ``at_ms``: the job ahead of one that must expire
    meanwhile (a fixed, short spin)."""
    while now_ms() <= at_ms:
        time.sleep(0.002)


def count_call(key: str) -> None:
    calls[key] = calls.get(key, 0) + 1


def test_a_job_claimed_in_time_but_reached_past_its_deadline_does_not_run(queue):
    deadline = now_ms() + 700  # the batch is claimed well before it
    ahead = queue.task(spin_until).delay(deadline)
    counted = queue.task(count_call)
    late = counted.delay("late", expires=datetime.fromtimestamp(deadline / 1000, UTC))
    after = counted.delay("after")
    assert queue.run_pending() == 2  # the job ahead and the one after: the late one not run
    assert "late" not in calls and calls["after"] == 1
    assert ahead.refresh().state == "done" and after.refresh().state == "done"
    late.refresh()
    assert late.state == "expired" and late.attempts == 0
    assert late.error.kind == "expired" and "not started by its deadline" in late.error.message
    assert late.record.finished_at_ms >= deadline
    assert queue.stats()["expired"] == 1 and queue.stats()["processing"] == 0


def test_the_runner_loads_nothing_of_a_job_past_its_deadline():
    """Checked before the task is looked up or the payload read: an unknown task and a
    payload that is no pickle make no failure, only the expiry."""
    now = now_ms()
    rec = JobRecord(
        id=new_job_id(),
        name="tests.no_such_module.task",
        state=JobState.PROCESSING,
        payload=b"\x01not a pickle",
        attempts=1,
        expires_at_ms=now - 1,
    )
    runner = TaskRunner("server", None, fetch=lambda ids: [])
    assert runner.run(rec.id, rec) == Outcome.expired(rec.id, "server")
    retry = rec.evolve(attempts=2)  # it ran before: its retry is no start, it runs
    assert runner.run(rec.id, retry).error.type == "TaskNotFound"
