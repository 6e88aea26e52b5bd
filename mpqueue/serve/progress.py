"""Progress of a ``serve --until-empty`` run: a live bar on a terminal (rich's live
display), periodic lines otherwise (logs and CI keep readable output).

While the bar is live, the log handlers that write to the bar's stream write through
rich's console instead (``_AboveBar``), which prints each line above the bar and draws
the bar again below it: a line this process logs never lands on the bar. Output that
children write to the terminal themselves (a job's ``print``) does not pass through this
process and can still cross the bar; ``--no-progress`` keeps such output clean.

rich is imported only when a live bar is drawn."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

BAR_WIDTH = 30
TTY_EVERY_S = 0.2
LINE_EVERY_S = 5.0


class Progress:
    def __init__(self, live: bool | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.next_at = 0.0
        self.bar = _LiveBar(self.stream) if self.live else None

    def update(self, stats: Any, counts: Callable[[], dict[str, int]], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_at:
            return
        self.next_at = now + (TTY_EVERY_S if self.live else LINE_EVERY_S)
        figures = Figures.of(stats, counts(), now)
        if self.bar is not None:
            self.bar.show(figures)
        else:
            self.stream.write(figures.line() + "\n")
            self.stream.flush()

    def render(self, stats: Any, counts: dict[str, int], now: float) -> str:
        """The plain line for these figures (what the bar shows beside its bar)."""
        return Figures.of(stats, counts, now).line()

    def close(self, stats: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        elapsed = time.monotonic() - stats.started_at
        self.stream.write(
            f"finished: {stats.done} done, {stats.dead} dead, {stats.retried} "
            f"retried, {stats.released} put back in {elapsed:.2f} s\n"
        )
        self.stream.flush()


class Figures:
    """What the progress shows at one moment."""

    def __init__(self, finished: int, total: int, rate: float, eta: float, stats: Any):
        self.finished, self.total, self.rate, self.eta = finished, total, rate, eta
        self.dead, self.retried = stats.dead, stats.retried

    @classmethod
    def of(cls, stats: Any, counts: dict[str, int], now: float) -> Figures:
        finished = stats.done + stats.dead
        remaining = counts.get("ready", 0) + counts.get("processing", 0)
        rate = finished / max(now - stats.started_at, 1e-9)
        eta = remaining / rate if rate > 0 else float("inf")
        return cls(finished, finished + remaining, rate, eta, stats)

    @property
    def fraction(self) -> float:
        return self.finished / self.total if self.total else 1.0

    def text(self) -> str:
        eta = "--:--" if self.eta == float("inf") else _clock(self.eta)
        return (
            f"{self.finished}/{self.total} {self.fraction:4.0%}  {self.rate:,.0f} jobs/s  "
            f"ETA {eta}  failed {self.dead} retried {self.retried}"
        )

    def line(self) -> str:
        filled = int(self.fraction * BAR_WIDTH)
        return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {self.text()}"


class _LiveBar:
    """The bar on a terminal, and the log handlers routed above it while it shows."""

    def __init__(self, stream: TextIO):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, force_terminal=True, highlight=False)
        # Refreshed by ``show`` alone: no thread of rich's runs beside the coordinator.
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.routed: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.live.start()
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                self.routed.append((handler, handler.setStream(_AboveBar(self.console))))

    def show(self, figures: Figures) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        row = Table.grid(padding=(0, 1))
        row.add_row(
            ProgressBar(total=max(figures.total, 1), completed=figures.finished, width=BAR_WIDTH),
            Text(figures.text(), no_wrap=True, overflow="ellipsis"),  # one row, always
        )
        self.live.update(row, refresh=True)

    def stop(self) -> None:
        try:
            self.live.stop()
        finally:
            for handler, stream in self.routed:
                handler.setStream(stream)
            self.routed = []


class _AboveBar(io.TextIOBase):
    """A stream whose each whole line rich prints above the live bar, as it was written:
    not wrapped at the console's width (the terminal wraps it) and not marked up."""

    def __init__(self, console: Any):
        self.console = console
        self.pending = ""

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.console.print(_plain(line), soft_wrap=True)
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.console.print(_plain(self.pending), soft_wrap=True)
            self.pending = ""


def _plain(line: str) -> Any:
    from rich.text import Text

    return Text.from_ansi(line)  # colour codes a formatter wrote are kept, not shown raw


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
