"""Payload serialization, kept apart from storage.

Arguments, results and by-value callables are pickled with cloudpickle (so lambdas,
closures and ``__main__`` functions survive) inside a one-byte version envelope.
The store only ever sees the resulting bytes.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from .errors import PayloadError, SerializationError

ENVELOPE_V1 = b"\x01"


def _dump(value: Any, what: str) -> bytes:
    try:
        data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        return ENVELOPE_V1 + data
    except Exception as exc:  # pickling raises many unrelated types
        raise SerializationError(f"cannot pickle {what}: {type(exc).__name__}: {exc}") from exc


def _load(raw: bytes, what: str, job_id: str | None) -> Any:
    if raw[:1] != ENVELOPE_V1:
        raise PayloadError(
            f"{what} of job {job_id} has an unknown envelope {raw[:1]!r}", job_id=job_id, raw=raw
        )
    try:
        return pickle.loads(raw[1:])
    except Exception as exc:
        raise PayloadError(
            f"cannot unpickle {what} of job {job_id}: {type(exc).__name__}: {exc}",
            job_id=job_id,
            raw=raw,
        ) from exc


def _plain_pickle(value: Any) -> bytes | None:
    """``value`` pickled without cloudpickle, if it refers to nothing importable.

    Builtin data (numbers, strings, bytes, containers of them) pickles the same either
    way, and plain pickle is several times faster. Anything that names a class or a
    function (which cloudpickle may need to carry by value) goes to cloudpickle; a data
    byte that merely looks like such an opcode only costs the slower path.
    """
    try:
        data = pickle.dumps(value, protocol=5)
    except Exception:
        return None
    # STACK_GLOBAL and the copyreg extension codes: the only ways protocol 5 refers to
    # something importable (written out: a generator here costs as much as the pickling).
    if b"\x93" in data or b"\x82" in data or b"\x83" in data or b"\x84" in data:
        return None
    return data


def dump_payload(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """Pickle a job's arguments; raises SerializationError naming the problem."""
    try:
        value = (tuple(args), dict(kwargs))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"job arguments must be a tuple and a mapping: {exc}") from exc
    data = _plain_pickle(value)
    if data is not None:
        return ENVELOPE_V1 + data
    return _dump(value, "the job arguments")


def load_payload(
    raw: bytes, *, job_id: str | None = None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    args, kwargs = _load(raw, "the payload", job_id)
    return args, kwargs


def dump_result(value: Any) -> bytes:
    return _dump(value, "the job's return value")


def load_result(raw: bytes, *, job_id: str | None = None) -> Any:
    return _load(raw, "the result", job_id)


def dump_callable(fn: Callable[..., Any]) -> bytes:
    return _dump(fn, f"the callable {getattr(fn, '__qualname__', fn)!r}")


def load_callable(raw: bytes, *, job_id: str | None = None) -> Callable[..., Any]:
    fn = _load(raw, "the callable", job_id)
    if not callable(fn):
        raise PayloadError(
            f"stored callable of job {job_id} is not callable", job_id=job_id, raw=raw
        )
    return fn  # type: ignore[no-any-return]
