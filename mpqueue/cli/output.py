"""How the command line prints: JSON for scripts, tables and cut reprs for people."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click

from ..display import CUT_MARK, plain_int, short_repr


def to_json(value: Any) -> str:
    return json.dumps(value)


def shown(value: Any, width: int | None) -> str:
    """The repr of an argument or result, cut to ``width`` characters (None: whole)."""
    text, cut = short_repr(value, width)
    return text + cut_note(width) if cut else text


def cut_note(width: int | None) -> str:
    return f"{CUT_MARK} (cut at {width:,} characters; --full shows all)"


def plain(value: Any, width: int | None = None) -> Any:
    """Arguments and results may be any picklable object: keep what JSON can hold
    (containers, str, numbers, None) and show everything else by its repr; strings and
    reprs longer than ``width`` are cut (and say so)."""
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else shown(k, width): plain(v, width) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [plain(v, width) for v in value]
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return plain_int(value)
    if isinstance(value, str):
        return value if width is None or len(value) <= width else value[:width] + cut_note(width)
    return shown(value, width)


def when(ms: int | None) -> str:
    if ms is None:
        return "-"
    try:
        stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    except (OverflowError, ValueError, OSError, TypeError):
        # A stored time no entry check lets in (older code, by hand): show the number.
        return f"{ms!r} ms"
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def table(header: list[str], rows: list[list[str]], *, empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
