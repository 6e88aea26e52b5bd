"""hooks.py: registration is checked, and ``run_pending`` runs a queue's hooks in this
process as a child runs them (the events, what each receives, raising hooks)."""

from __future__ import annotations

import os

import pytest

from mpqueue import ConfigError, Fail, HookEvent, Queue, Retry
from mpqueue.execute import TaskRunner
from mpqueue.hooks import EVENTS, NO_HOOKS

from ..support.hook_tasks import LOG_ENV, read_log

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    ("event", "fn", "message"),
    [
        ("finish", print, "unknown hook event 'finish'; one of start, success, failure, retry"),
        (None, print, "unknown hook event None; one of start"),
        ("start", 42, "a start hook must be callable; got 42"),
    ],
)
def test_bad_registrations_are_one_line_config_errors(event, fn, message):
    queue = Queue("memory://")
    with pytest.raises(ConfigError) as caught:
        queue.on(event, fn)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)
    assert queue.hooks.table == {}
    with pytest.raises(ConfigError):  # the decorator form refuses the event at once
        queue.on("finish")


def test_on_returns_the_function_and_accepts_every_event():
    queue = Queue("memory://")
    for event in EVENTS:

        @queue.on(event)
        def hook(*args: object) -> None: ...

        assert queue.hooks.table[event] == [hook]


def _recording(queue: Queue) -> list[HookEvent]:
    seen: list[HookEvent] = []
    for event in ("start", "success", "failure", "retry", "dead", "cancelled"):
        queue.on(event, seen.append)
    return seen


def test_run_pending_fires_the_events_of_each_run_with_the_job():
    queue = Queue("memory://")
    seen = _recording(queue)

    @queue.task(retries=0)
    def double(x: int) -> int:
        return 2 * x

    @queue.task(retries=0)
    def refuses() -> None:
        raise Fail("no")

    ok, failed = double.delay(21), refuses.delay()
    assert queue.run_pending() == 2
    assert ok.result(timeout=0) == 42
    by_job = {(e.job_id, e.event): e for e in seen}
    assert [(e.job_id, e.event) for e in seen] == [
        (ok.id, "start"),
        (ok.id, "success"),
        (failed.id, "start"),
        (failed.id, "failure"),
        (failed.id, "dead"),
    ]
    success = by_job[(ok.id, "success")]
    assert (success.task, success.attempt, success.args, success.result) == (
        double.name,
        1,
        (21,),
        42,
    )
    assert success.exception is None and success.server_id
    assert isinstance(by_job[(failed.id, "dead")].exception, Fail)
    with pytest.raises(AttributeError):
        success.result = 0  # type: ignore[misc]  # frozen


def test_retry_fires_retry_while_runs_are_left():
    queue = Queue("memory://")
    seen = _recording(queue)

    @queue.task(retries=1)
    def later() -> None:
        raise Retry(0.0, "soon")

    job = later.delay()
    queue.run_pending()
    queue.run_pending()  # the retry is due at once (delay 0)
    assert [(e.event, e.attempt) for e in seen] == [
        ("start", 1),
        ("failure", 1),
        ("retry", 1),
        ("start", 2),
        ("failure", 2),
        ("dead", 2),
    ]
    assert queue.get(job.id).state == "dead"


def test_a_raising_hook_is_logged_and_changes_nothing(caplog):
    queue = Queue("memory://")

    @queue.on("start")
    @queue.on("success")
    def breaks(event: HookEvent) -> None:
        raise ValueError(f"broken {event.event}")

    seen = _recording(queue)

    @queue.task(retries=0)
    def value() -> str:
        return "intact"

    job = value.delay()
    queue.run_pending()
    assert job.result(timeout=0) == "intact"
    assert [e.event for e in seen] == ["start", "success"]  # the next hook still ran
    assert "ValueError: broken start" in caplog.text and "ValueError: broken success" in caplog.text
    assert "start hook " in caplog.text and f"raised for job {job.id}" in caplog.text


def test_child_start_runs_once_per_process_before_the_first_job():
    queue = Queue("memory://")
    calls: list[str] = []
    queue.on("child_start", lambda: calls.append("child_start"))
    queue.on("start", lambda event: calls.append("start"))

    @queue.task(retries=0)
    def nothing() -> None: ...

    nothing.delay()
    nothing.delay()
    queue.run_pending()
    nothing.delay()
    queue.run_pending()
    assert calls == ["child_start", "start", "start", "start"]


def test_hooks_of_a_task_module_queue_are_found_by_name(tmp_path, monkeypatch):
    """The task is imported by name, as a child imports it: its module's queue's hooks
    run, not the hooks of the queue that enqueued it."""
    log = str(tmp_path / "hooks.log")
    monkeypatch.setenv(LOG_ENV, log)
    queue = Queue("memory://")
    mine = _recording(queue)
    job = queue.task_by_name("tests.support.hook_tasks.echo").delay(7)
    queue.run_pending()
    events = [(e["event"], e["pid"]) for e in read_log(log) if e.get("job") == job.id]
    assert events == [("start", os.getpid()), ("success", os.getpid())]
    assert mine == []


def test_a_job_of_a_queue_without_hooks_gets_the_empty_table():
    queue = Queue("memory://")
    job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    runner = TaskRunner("server", None, fetch=queue.store.endings)
    fn, on = runner._callable(job.record)
    assert on == {}  # the one check run() makes finds nothing to do
    by_value = queue.submit(abs, -1)  # no queue to find by name, and the runner has none
    assert runner._callable(by_value.record)[1] is NO_HOOKS


def test_a_ctrl_c_in_a_hook_stops_run_pending_as_in_the_job():
    queue = Queue("memory://")

    @queue.on("start")
    def interrupted(event: HookEvent) -> None:
        raise KeyboardInterrupt

    @queue.task(retries=0)
    def nothing() -> None: ...

    job = nothing.delay()
    with pytest.raises(KeyboardInterrupt):
        queue.run_pending()
    assert queue.get(job.id).state == "ready"  # put back, uncharged
    assert queue.get(job.id).record.attempts == 0
