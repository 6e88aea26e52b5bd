"""``mpqueue top``: a live view of the queue in the terminal, drawn by rich.

The figures come from ``mpqueue/top.py``; this module only draws them. rich is an
optional extra, imported when ``top`` runs, never by the other commands.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import click

from ..queue import Queue
from ..queues import DEFAULT_QUEUE
from ..top import DEAD_READ_MAX, ENDED_READ_MAX, FAILURES_SHOWN, RUNNING_MAX, Snapshot, Watcher
from .group import cli
from .output import clip, to_json, when

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

PLAIN_WIDTH = 160  # --once into a pipe or file: wide enough for job ids and errors
ERROR_WIDTH = 100  # a failure's error is cut to this many characters


@cli.command(
    short_help="A live view: depth, throughput, running jobs, failures.",
    epilog=(
        f"Each frame reads at most {RUNNING_MAX} running jobs, {DEAD_READ_MAX} dead jobs "
        f"(the newest by id; the {FAILURES_SHOWN} that died last are shown) and "
        f"{ENDED_READ_MAX} records of jobs that ended since the last frame."
    ),
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=3600),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Seconds between frames.",
)
@click.option("--once", is_flag=True, help="Print one frame as plain text and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one frame as JSON (implies --once).")
@click.pass_obj
def top(queue: Queue, interval: float, once: bool, as_json: bool) -> None:
    """Show the queue live: jobs by state and what is paused, jobs/s done and failed
    over the last minute, p50/p95 run time and start latency, the running jobs and
    the last failures. Press q (or Ctrl-C) to quit. Rates and run times need two
    frames: one frame (--once) shows them as n/a. Needs the 'top' extra:
    pip install 'mpqueue[top]'.
    """
    watcher = Watcher(queue.store)
    if as_json:
        click.echo(to_json(watcher.frame().as_dict()))
        return
    from rich.console import Console

    if once:
        tty_out = sys.stdout.isatty()
        console = Console(no_color=not tty_out, width=None if tty_out else PLAIN_WIDTH)
        console.print(render(watcher.frame()))
        return
    _live(watcher, interval, Console())


def _live(watcher: Watcher, interval: float, console: Console) -> None:
    from rich.live import Live

    with _keys() as pressed, Live(console=console, auto_refresh=False, screen=False) as live:
        try:
            while True:
                live.update(render(watcher.frame()), refresh=True)
                if pressed(interval) == "q":
                    return
        except KeyboardInterrupt:
            return


@contextlib.contextmanager
def _keys() -> Iterator[Any]:
    """A function that waits up to a timeout for a key on stdin and returns it ("" for
    none). A terminal is put in cbreak mode (keys come one by one, unechoed) and always
    restored; without a terminal on stdin only Ctrl-C quits."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None

    def pressed(timeout: float) -> str:
        if fd is None:
            time.sleep(timeout)
            return ""
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode(errors="replace").lower() if ready else ""

    if fd is None:
        yield pressed
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield pressed
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# ---- drawing ------------------------------------------------------------------------
def render(snap: Snapshot) -> RenderableType:
    from rich.console import Group
    from rich.text import Text

    paused = snap.paused
    paused_text = ", ".join((["every job"] if paused["all"] else []) + paused["tasks"])
    age = snap.oldest_ready_age_s
    oldest = "none ready" if age is None else f"oldest ready due {age:.1f} s ago"
    head = Text(f"mpqueue top  {when(snap.at_ms)}  paused: {paused_text or 'nothing'}  {oldest}")
    parts = [head, _depth(snap)]
    if set(snap.queues) - {DEFAULT_QUEUE}:  # named queues in use
        parts.append(_queues(snap))
    return Group(*parts, _figures(snap), _running(snap), _failures(snap))


def _table(title: str, *columns: str) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def _depth(snap: Snapshot) -> Any:
    table = _table("Jobs by state", *snap.depth)
    table.add_row(*(f"{count:,}" for count in snap.depth.values()))
    return table


def _queues(snap: Snapshot) -> Any:
    table = _table("Jobs by queue", "queue", "ready", "processing")
    for name, depth in snap.queues.items():
        table.add_row(name, f"{depth['ready']:,}", f"{depth['processing']:,}")
    return table


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _spread(snap: Snapshot, name: str) -> tuple[str, str, str]:
    figure = getattr(snap, name)
    if figure is None:
        return "n/a", "n/a", "0"
    return f"{figure.p50_s:.3f} s", f"{figure.p95_s:.3f} s", str(figure.count)


def _figures(snap: Snapshot) -> Any:
    table = _table("Last minute", "", "p50", "p95", "jobs")
    table.add_row("run time", *_spread(snap, "run_time"))
    table.add_row("start latency", *_spread(snap, "start_latency"))
    table.add_row("done/s", _rate(snap.done_per_s), "", "")
    table.add_row("failed/s", _rate(snap.failed_per_s), "", "")
    return table


def _running(snap: Snapshot) -> Any:
    more = snap.running_total - len(snap.running)
    title = f"Running ({snap.running_total:,}{f', {more:,} not shown' if more else ''})"
    table = _table(title, "server", "pid", "task", "job", "elapsed", "progress")
    for job in snap.running:
        table.add_row(
            job.server,
            str(job.child_pid or "-"),
            job.task,
            job.job_id,
            f"{job.elapsed_s:.1f} s",
            _progress(job.progress),
        )
    return table


def _progress(report: dict[str, Any] | None) -> str:
    if report is None:
        return ""
    done, total, message = report["done"], report["total"], report["message"]
    text = f"{done:g}" if total is None else f"{done:g}/{total:g}"
    if total:
        text += f" ({100 * done / total:.0f}%)"
    return f"{text} {message}" if message else text


def _failures(snap: Snapshot) -> Any:
    table = _table("Last failures", "died", "task", "job", "error")
    for failure in snap.failures:
        table.add_row(
            when(failure.finished_at_ms),
            failure.task,
            failure.job_id,
            clip(failure.error, ERROR_WIDTH),
        )
    return table
