"""The --until-empty progress display: a live bar on a terminal, lines otherwise."""

from __future__ import annotations

import io
import logging
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from mpqueue import Queue
from mpqueue.serve.progress import Progress

from ..support.serve_helpers import ROOT


class Stats:
    def __init__(self, done: int, dead: int, started_at: float):
        self.done, self.dead, self.retried, self.released = done, dead, 1, 0
        self.started_at = started_at


def test_bar_shows_done_total_rate_eta_and_failures() -> None:
    line = Progress(live=True, stream=io.StringIO()).render(
        Stats(done=30, dead=2, started_at=0.0), {"ready": 60, "processing": 8}, now=8.0
    )
    assert "32/100" in line and "32%" in line
    assert "4 jobs/s" in line and "ETA 0:17" in line and "failed 2" in line
    assert line.startswith("[" + "#" * 9 + ".")


def test_live_mode_redraws_one_line_and_plain_mode_appends_lines() -> None:
    live, plain = io.StringIO(), io.StringIO()
    for stream, mode in ((live, True), (plain, False)):
        progress = Progress(live=mode, stream=stream)
        progress.update(Stats(1, 0, 0.0), lambda: {"ready": 1}, force=True)
        progress.update(Stats(2, 0, 0.0), lambda: {"ready": 0}, force=True)
        progress.close(Stats(2, 0, 0.0))
    assert live.getvalue().count("\r") == 2 and live.getvalue().count("\n") == 2
    assert plain.getvalue().count("\r") == 0 and plain.getvalue().count("\n") == 3
    assert "finished: 2 done, 0 dead" in plain.getvalue()


def _serve_until_empty(store: str, *extra: str, tty: bool) -> str:
    cmd = [
        sys.executable,
        "-m",
        "mpqueue",
        "--path",
        store,
        "serve",
        "--workers",
        "1",
        "--until-empty",
        "--log-level",
        "warning",
        *extra,
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if not tty:
        run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=50)
        assert run.returncode == 0, run.stderr
        return run.stderr
    main, child = pty.openpty()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=child, stdout=child, stderr=child)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child side closed
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(50) == 0
    os.close(main)
    return b"".join(chunks).decode(errors="replace")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tty", [True, False])
def test_until_empty_reports_progress_on_a_terminal_and_off_it(tmp_path: Path, tty: bool) -> None:
    store = str(tmp_path / "store")
    with Queue(store) as queue:
        queue.task_by_name("tests.support.serve_tasks.quick").map(
            [(str(tmp_path / "m"), i) for i in range(50)]
        )
    out = _serve_until_empty(store, tty=tty)
    assert "finished: 50 done, 0 dead" in out
    assert ("\r[" in out) is tty  # the live bar redraws in place only on a terminal
    assert "/50" in out


@pytest.mark.timeout(60)
def test_no_progress_is_silent(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    with Queue(store) as queue:
        queue.task_by_name("tests.support.serve_tasks.quick").map([(str(tmp_path / "m"), 1)])
    assert _serve_until_empty(store, "--no-progress", tty=False) == ""


def test_a_log_line_during_the_live_bar_prints_on_a_line_of_its_own() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = Progress(live=True, stream=stream)
        progress.update(Stats(1, 0, 0.0), lambda: {"ready": 3}, force=True)
        logging.getLogger("mpqueue.serve").warning("job x is dead")
        progress.update(Stats(2, 0, 0.0), lambda: {"ready": 2})  # at once: not throttled
        progress.close(Stats(2, 0, 0.0))
        logging.getLogger("mpqueue.serve").warning("after the bar")
    finally:
        root.removeHandler(handler)
    out = stream.getvalue()
    bar, _, rest = out.partition("\r\x1b[KWARNING job x is dead\n")
    assert bar.startswith("\r[") and "1/4" in bar and rest, out  # the bar was wiped first
    assert rest.startswith("\r[") and "2/4" in rest  # and drawn again below the line
    assert out.endswith("\nWARNING after the bar\n")  # no clearing once the bar is gone
    assert "\x1b[K" not in out.split("finished:")[1]
    assert handler.filters == []
