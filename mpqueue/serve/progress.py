"""Progress of a ``serve --until-empty`` run: a live bar on a terminal, periodic lines
otherwise (logs and CI keep readable output).

While the bar is live, a line this process logs to the bar's stream first clears the
bar (``_ClearsBar``, a filter on those log handlers), so it prints on a line of its own
and the bar is drawn again below it."""

from __future__ import annotations

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
        self.shown = False
        self.handlers: list[logging.Handler] = []
        if self.live:
            self._guard_logs()

    def _guard_logs(self) -> None:
        """Make the log handlers that write to the bar's stream clear it first."""
        self.clearer = _ClearsBar(self)
        for handler in logging.getLogger().handlers:
            if getattr(handler, "stream", None) is self.stream:
                handler.addFilter(self.clearer)
                self.handlers.append(handler)

    def cleared(self) -> None:
        """A log line is about to print: wipe the bar, and draw it again at once after."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.next_at = 0.0

    def update(self, stats: Any, counts: Callable[[], dict[str, int]], force: bool = False) -> None:
        now = time.monotonic()
        if not force and now < self.next_at:
            return
        self.next_at = now + (TTY_EVERY_S if self.live else LINE_EVERY_S)
        line = self.render(stats, counts(), now)
        if self.live:
            self.stream.write("\r" + line + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.shown = True

    def render(self, stats: Any, counts: dict[str, int], now: float) -> str:
        finished = stats.done + stats.dead
        remaining = counts.get("ready", 0) + counts.get("processing", 0)
        total = finished + remaining
        elapsed = max(now - stats.started_at, 1e-9)
        rate = finished / elapsed
        eta = remaining / rate if rate > 0 else float("inf")
        fraction = finished / total if total else 1.0
        filled = int(fraction * BAR_WIDTH)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        eta_text = "--:--" if eta == float("inf") else _clock(eta)
        return (
            f"[{bar}] {finished}/{total} {fraction:4.0%}  {rate:,.0f} jobs/s  "
            f"ETA {eta_text}  failed {stats.dead} retried {stats.retried}"
        )

    def close(self, stats: Any) -> None:
        for handler in self.handlers:
            handler.removeFilter(self.clearer)
        self.handlers = []
        elapsed = time.monotonic() - stats.started_at
        if self.live and self.shown:
            self.stream.write("\n")
        self.stream.write(
            f"finished: {stats.done} done, {stats.dead} dead, {stats.retried} "
            f"retried, {stats.released} put back in {elapsed:.2f} s\n"
        )
        self.stream.flush()


class _ClearsBar(logging.Filter):
    """Lets every record through; on the way, clears the live bar it would land on."""

    def __init__(self, progress: Progress):
        super().__init__()
        self.progress = progress

    def filter(self, record: logging.LogRecord) -> bool:
        self.progress.cleared()
        return True


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
