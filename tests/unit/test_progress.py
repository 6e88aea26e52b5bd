"""The --until-empty progress display: a live bar on a terminal, lines otherwise."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pyte
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


def _screen(out: str, lines: int = 12, columns: int = 120) -> list[str]:
    """What a terminal shows after ``out`` (pyte emulates one): rows, right-trimmed."""
    screen = pyte.Screen(columns, lines)
    pyte.Stream(screen).feed(out.replace("\r\n", "\n").replace("\n", "\r\n"))
    return [row.rstrip() for row in screen.display]


def test_live_mode_redraws_one_bar_and_plain_mode_appends_lines() -> None:
    live, plain = io.StringIO(), io.StringIO()
    for stream, mode in ((live, True), (plain, False)):
        progress = Progress(live=mode, stream=stream)
        progress.update(Stats(1, 0, 0.0), lambda: {"ready": 1}, force=True)
        progress.update(Stats(2, 0, 0.0), lambda: {"ready": 0}, force=True)
        progress.close(Stats(2, 0, 0.0))
    shown = [row for row in _screen(live.getvalue()) if row]
    assert len(shown) == 2 and "2/2 100%" in shown[0] and "━" in shown[0], shown
    assert shown[1].startswith("finished: 2 done, 0 dead")
    assert "1/2" in live.getvalue()  # the first figures were drawn, then drawn over
    assert plain.getvalue().count("\r") == 0 and plain.getvalue().count("\n") == 3
    assert "finished: 2 done, 0 dead" in plain.getvalue()


def _serve_until_empty(store: str, *extra: str, tty: bool, code: int = 0) -> str:
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
        assert run.returncode == code, run.stderr
        return run.stderr
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 200, 0, 0))  # rows, cols
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
    assert proc.wait(50) == code
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
    assert ("\u2501" in out) is tty  # rich's bar only on a terminal, plain lines off it
    assert "/50" in out


@pytest.mark.timeout(60)
def test_warnings_logged_during_a_live_run_never_land_on_the_bar(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    marker = str(tmp_path / "m")
    with Queue(store) as queue:
        queue.task_by_name("tests.support.serve_tasks.quick").map([(marker, i) for i in range(30)])
        queue.task_by_name("tests.support.serve_tasks.suicide").delay(marker, "x")
    out = _serve_until_empty(store, "--progress", tty=True, code=1)  # the suicide job died
    shown = _screen(out, lines=60, columns=200)
    crashes = [row for row in shown if row.endswith("worker killed by signal 9")]
    assert len(crashes) == 4, shown  # one per attempt and the job's death, each whole
    assert not any("jobs/s" in row or "\u2501" in row for row in crashes)
    bars = [row for row in shown if "jobs/s" in row]
    assert len(bars) == 1 and "31/31" in bars[0], shown  # one bar, below every warning
    assert shown.index(bars[0]) > max(shown.index(row) for row in crashes)


@pytest.mark.timeout(60)
def test_no_progress_is_silent(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    with Queue(store) as queue:
        queue.task_by_name("tests.support.serve_tasks.quick").map([(str(tmp_path / "m"), 1)])
    assert _serve_until_empty(store, "--no-progress", tty=False) == ""


def test_a_log_line_during_the_live_bar_prints_above_it_on_a_line_of_its_own() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = Progress(live=True, stream=stream)
        progress.update(Stats(1, 0, 0.0), lambda: {"ready": 3}, force=True)
        logging.getLogger("mpqueue.serve").warning("job x is dead")
        progress.update(Stats(2, 0, 0.0), lambda: {"ready": 2})  # throttled: not drawn
        progress.close(Stats(2, 0, 0.0))
        logging.getLogger("mpqueue.serve").warning("after the bar")
    finally:
        root.removeHandler(handler)
    shown = [row for row in _screen(stream.getvalue()) if row]
    assert shown[0] == "WARNING job x is dead", shown  # whole, and not on the bar's row
    assert "1/4" in shown[1] and "━" in shown[1]  # the bar, drawn again below it
    assert shown[2].startswith("finished: 2 done") and shown[3] == "WARNING after the bar"
    assert len(shown) == 4
    assert handler.stream is stream  # the handler writes to its own stream again
