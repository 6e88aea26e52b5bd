"""Bounded text for user values (job arguments, results, progress) on the command line.

A stored value may be huge (a 500 MB result), deeply nested, or an integer longer than
Python will turn into text (``sys.get_int_max_str_digits``). ``short_repr`` builds a
repr piece by piece within a budget of characters, so showing a huge value costs about
as much as the budget, and never raises on a value that ``repr`` would choke on.
"""

from __future__ import annotations

from typing import Any

from .records import Progress

CUT_MARK = "..."
MAX_DEPTH = 64  # deeper containers are shown as "..." (repr itself would recurse)
_CONTAINERS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
    dict: ("{", "}"),
}


class _Budget:
    """Characters left to write; ``cut`` records that something was left out."""

    def __init__(self, room: int | None):
        self.room = room
        self.cut = False
        self.parts: list[str] = []

    def full(self) -> bool:
        return self.room is not None and self.room <= 0

    def write(self, text: str) -> None:
        if self.room is not None:
            if len(text) > self.room:
                text, self.cut = text[: self.room], True
            self.room -= len(text)
        self.parts.append(text)


def short_repr(value: Any, limit: int | None) -> tuple[str, bool]:
    """``repr(value)``, cut to ``limit`` characters (None: whole); returns (text, cut).

    Long strings and bytes are sliced before their repr is made, containers stop once
    the budget is spent, integers too long to print are described by their size, and
    an object whose ``__repr__`` raises is described by the error.
    """
    budget = _Budget(limit)
    _write(value, budget, 0)
    return "".join(budget.parts), budget.cut


def describe(value: Any, limit: int = 80) -> str:
    """A short repr of a user's value for an error message: never raises, never long."""
    text, cut = short_repr(value, limit)
    return text + CUT_MARK if cut else text


def plain_int(value: int) -> int | str:
    """``value`` if it can be printed, else a description of its size (for JSON)."""
    return value if _printable(value) else _describe_int(value)


def _write(value: Any, budget: _Budget, depth: int) -> None:
    if budget.full():
        budget.cut = True
        return
    kind = type(value)
    if kind in (str, bytes, bytearray) and budget.room is not None and len(value) > budget.room:
        budget.write(repr(value[: budget.room]))  # the slice's repr is at least as long
        budget.cut = True
    elif kind is int and not _printable(value):
        budget.write(_describe_int(value))
    elif kind in _CONTAINERS:
        _write_container(value, budget, depth)
    else:
        budget.write(_safe_repr(value))


def _write_container(value: Any, budget: _Budget, depth: int) -> None:
    kind = type(value)
    if not value and kind in (set, frozenset):
        budget.write(f"{kind.__name__}()")
        return
    if depth >= MAX_DEPTH:
        budget.write(CUT_MARK)
        return
    opening, closing = _CONTAINERS[kind]
    budget.write(opening)
    items = value.items() if kind is dict else value
    for index, item in enumerate(items):
        if budget.full():
            budget.cut = True
            return
        if index:
            budget.write(", ")
        if kind is dict:
            _write(item[0], budget, depth + 1)
            budget.write(": ")
            _write(item[1], budget, depth + 1)
        else:
            _write(item, budget, depth + 1)
    budget.write("," + closing if kind is tuple and len(value) == 1 else closing)


def _safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except RecursionError:
        return f"<{type(value).__name__} nested too deeply to show>"
    except Exception as exc:
        return f"<{type(value).__name__} whose repr failed: {type(exc).__name__}>"


def _printable(value: int) -> bool:
    if value.bit_length() < 10_000:  # ~3,000 digits: below any digit limit Python sets
        return True
    try:
        repr(value)
    except ValueError:  # over sys.get_int_max_str_digits()
        return False
    return True


def _describe_int(value: int) -> str:
    digits = int(value.bit_length() * 0.30103) + 1
    return f"<int of about {digits:,} digits>"


def progress_text(report: Progress | None, now_ms: int) -> str:
    """A progress report on one line: "40/100 (40%) loading, 3 s ago"; "" for none."""
    if report is None:
        return ""
    done, total, message, at_ms = report
    text = f"{done:g}" if total is None else f"{done:g}/{total:g} ({100 * done / total:.0f}%)"
    if message:
        text += f" {message}"
    age_s = max(0, now_ms - at_ms) / 1000
    return f"{text}, {age_s:.0f} s ago" if age_s >= 1 else text
