"""What the dashboard tests share: a store with jobs in it, a client, the CSRF token."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mpqueue import Queue
from mpqueue.records import JobState, now_ms

from ..support.helpers import claim_all, done, failed, wait_until

ADD = "tests.support.tasks.add"
ECHO = "tests.support.tasks.noop"
SCRIPT = "<script>alert(1)</script>"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def populate(queue: Queue) -> dict[str, str]:
    """Jobs in the states the pages show; returns {what: job id}. The dead job's
    argument and error hold a script tag."""
    store = queue.store
    echo = queue.task_by_name(ECHO)
    add = queue.task_by_name(ADD)
    finished = add.delay(2, 3)
    dead = echo.delay(SCRIPT)
    running = add.delay(1, 1)
    claim_all(store)
    done(store, finished.id, 5)
    failed(store, dead.id, SCRIPT, retryable=False)
    ran = add.delay(20, 22)
    assert queue.run_pending() == 1  # run here, as a server's child runs it
    ready = add.delay(4, 4)
    later = add.schedule((5, 5), delay=3600)
    assert store.get(dead.id).state is JobState.DEAD
    assert store.get(running.id).state is JobState.PROCESSING
    return {
        "done": finished.id,
        "ran": ran.id,
        "dead": dead.id,
        "processing": running.id,
        "ready": ready.id,
        "scheduled": later.id,
        "now": str(now_ms()),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def served(location: str, *options: str) -> Iterator[str]:
    """``mpqueue dashboard`` on ``location`` in a process of its own; yields its URL
    once it answers, and stops it (SIGTERM, then a kill) after."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MPQUEUE_PATH"}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mpqueue",
            "dashboard",
            "--path",
            location,
            "--port",
            str(port),
            *options,
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(url + "/static/dashboard.css", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answered (refused without its token)
        except OSError:
            return False

    try:
        wait_until(answers, timeout=30, what="the dashboard answers", interval=0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
