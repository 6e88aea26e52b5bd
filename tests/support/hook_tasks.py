"""Tasks with hooks (tests/serve/test_hooks.py): every hook appends one JSON line to the
file named by ``$MPQUEUE_TEST_HOOK_LOG`` (set by the test before it starts a server).

The hooks are registered on this module's queue at import time, as a user's would be;
a server's child finds them by importing this module for the task's name. A job called
with ``explode=True`` has a hook that raises before the recording one, for every event
(SystemExit for ``success``): the job's outcome and the other hooks must not change.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from mpqueue import Queue
from mpqueue.hooks import JOB_EVENTS, HookEvent

LOG_ENV = "MPQUEUE_TEST_HOOK_LOG"

queue = Queue()


def _append(entry: dict[str, Any]) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)  # one write of one short line: lines never interleave
    finally:
        os.close(fd)


def read_log(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@queue.task(retries=0)
def echo(x: int, explode: bool = False) -> dict[str, int]:
    return {"x": x, "pid": os.getpid()}


@queue.task(retries=1, backoff=0.01, backoff_cap=0.01)
def always_fails(tag: str) -> None:
    raise RuntimeError(f"always fails: {tag}")


@queue.task(retries=0)
def until_cancelled(limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:  # a cancel raises mpqueue.Cancelled in here
        time.sleep(0.01)


@queue.on("child_start")
def started() -> None:
    _append({"event": "child_start", "pid": os.getpid()})


def explode(event: HookEvent) -> None:
    if event.kwargs.get("explode"):
        if event.event == "success":
            raise SystemExit(3)
        raise RuntimeError(f"{event.event} hook exploded")


def record(event: HookEvent) -> None:
    _append(
        {
            "event": event.event,
            "pid": os.getpid(),
            "job": event.job_id,
            "task": event.task,
            "attempt": event.attempt,
            "server": event.server_id,
            "args": list(event.args),
            "result": event.result,
            "exception": None if event.exception is None else type(event.exception).__name__,
        }
    )


for _event in JOB_EVENTS:
    queue.on(_event)(explode)
    queue.on(_event, record)
