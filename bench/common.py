"""Helpers shared by the ``python -m bench`` scenarios: statistics, a progress bar,
timing and the mode names. Store and server helpers are imported from
``bench.store_bench`` and ``bench.serve_bench``, not copied here."""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

MODES = ("legacy", "optimized")  # every scenario runs both, side by side
BAR_WIDTH = 28


def summary(samples: list[float]) -> dict[str, Any]:
    """Median and spread (min, max) of repeated measurements, with the raw samples."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "samples": list(samples),
    }


def spread(s: dict[str, Any], scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
    """``median (min-max)`` of a ``summary``, scaled (e.g. 1000 for s -> ms)."""
    med, lo, hi = (s[k] * scale for k in ("median", "min", "max"))
    return f"{med:,.{digits}f} ({lo:,.{digits}f}-{hi:,.{digits}f}){unit}"


def same_order(measured: float, published: float) -> bool:
    """Whether two positive figures are within the same order of magnitude, i.e. less
    than half a decade apart (ratio between 1/3.16 and 3.16)."""
    return measured > 0 and abs(math.log10(measured / published)) < 0.5


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of ``fn()`` and its value."""
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("PASS" if ok else "**FAIL**")


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; cells are converted with ``str``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, one line per step
    otherwise (so logs stay readable). ``total`` is the number of ``step`` calls."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = max(1, total)
        self.done = 0
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.started = time.monotonic()

    def step(self, label: str) -> None:
        """Announce the next unit of work (``label``) and advance when it is called
        again; the bar shows the units finished so far."""
        self._draw(label)
        self.done = min(self.total, self.done + 1)

    def _draw(self, label: str) -> None:
        filled = int(BAR_WIDTH * self.done / self.total)
        bar = "#" * filled + "." * (BAR_WIDTH - filled)
        elapsed = time.monotonic() - self.started
        line = f"[{bar}] {self.done}/{self.total} {elapsed:5.0f}s {label}"
        if self.live:
            self.stream.write("\r" + line[:150] + "\x1b[K")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        self.done = self.total
        self._draw("done")
        if self.live:
            self.stream.write("\n")
        self.stream.flush()


class NullProgress(Progress):
    """For callers (tests) that want no output."""

    def __init__(self) -> None:
        super().__init__(1)

    def _draw(self, label: str) -> None:
        pass


def save_json(result: Any, path: str | None, indent: int = 1) -> None:
    """Write a benchmark's result to ``path`` (its ``--out``), if one was given."""
    if path:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=indent)
