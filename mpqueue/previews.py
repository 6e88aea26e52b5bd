"""Text previews of a job's arguments and result: what a reader that must not unpickle
(the dashboard, ``mpqueue show`` without the code) shows of them.

A preview is made from the Python objects themselves, where they exist as objects:
the arguments in the producer before they are pickled, the result in the child that
ran the job before it is pickled. It is ``reprlib``'s short form (containers cut after
a few items, long strings cut in the middle), then capped at ``PREVIEW_MAX``
characters. A ``__repr__`` that raises gives a placeholder, never a failed enqueue.
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any

PREVIEW_MAX = 200  # characters kept in the record (the cap the store checks too)
NO_PREVIEW = "(no preview)"  # what a record written before previews shows

_short = reprlib.Repr()
_short.maxlevel = 3
_short.maxstring = 60
_short.maxother = 60
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6


def cap(text: str) -> str:
    """``text`` cut to ``PREVIEW_MAX`` characters (an ellipsis marks a cut)."""
    return text if len(text) <= PREVIEW_MAX else text[: PREVIEW_MAX - 3] + "..."


# Values whose repr is short and cheap: repr'd directly, skipping reprlib's dispatch
# (the enqueue path pays for the preview of every job).
_PLAIN = frozenset({int, float, bool, type(None)})


def _repr(value: Any) -> str:
    kind = type(value)
    if kind in _PLAIN and (kind is not int or -(10**40) < value < 10**40):
        return repr(value)
    if kind is str and len(value) <= _short.maxstring:
        return repr(value)
    try:
        return _short.repr(value)
    except Exception as exc:  # user code: any __repr__ may raise anything
        return f"<{type(value).__name__}: repr raised {type(exc).__name__}>"


def of_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """The arguments as a call's argument list reads: ``1, 'a', key=[1, 2]``."""
    text = ", ".join(map(_repr, args))
    if kwargs:
        parts = [text] if args else []
        total = len(text)
        for name, value in kwargs.items():
            if total > PREVIEW_MAX:
                break  # the rest would be cut anyway: repr no more of them
            parts.append(f"{name}={_repr(value)}")
            total += len(parts[-1]) + 2
        text = ", ".join(parts)
    return text if len(text) <= PREVIEW_MAX else cap(text)


def of_value(value: Any) -> str:
    """A result's preview."""
    return cap(_repr(value))


def shown(preview: str | None) -> str:
    """What a reader shows for a stored preview (None: written before previews)."""
    return NO_PREVIEW if preview is None else preview
