"""What a worker child tells its coordinator, and how it is framed on their pipe.

The child runs user code, and user code can write anything to any fd it has, the
pipe included. So the coordinator trusts nothing it reads there: each frame starts
with a magic and a bounded length, its body is msgpack (plain values only, never a
pickle), and every message is checked against its shape before the coordinator acts
on it. Anything else raises ``ProtocolError``, which the coordinator treats as that
child's crash: it kills the child and charges the job it was running. Bytes a child
sent can cost that child's job an attempt; they can never stop the server.

Messages, child -> coordinator (msgpack arrays):
``["ready", pid, create_time, inbox]`` (inbox: whether it listens for hand-offs),
``["init_error", text]``, ``["took", job_id]``, ``["done", job_id, result, rss]``,
``["failed", job_id, [type, message, traceback, attempt, at_ms, kind], retryable,
retry_delay_s | None, rss]``, ``["released", [job_id, ...]]``.
The coordinator -> child direction keeps multiprocessing's own framing: the child
trusts its coordinator.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import msgpack

from ..errors import ProtocolError
from ..records import is_job_id

MAGIC = b"mpq\x01"
HEADER = struct.Struct(">4sI")
# The largest message: a job's pickled result travels in one. A child refuses to send a
# bigger one (the job fails with a clear error), so a header over it is never genuine.
MAX_FRAME = 1 << 30
MAX_RESULT = MAX_FRAME - (1 << 16)  # room for the rest of a "done" message

# Text a job produced (an error message, a traceback) may hold lone surrogates, which
# UTF-8 cannot carry: they arrive as U+FFFD rather than failing the message.
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="replace")


def encode(message: tuple[Any, ...]) -> bytes:
    body: bytes = _packer.pack(message)
    if len(body) > MAX_FRAME:
        raise ValueError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return HEADER.pack(MAGIC, len(body)) + body


def write(fd: int, message: tuple[Any, ...]) -> None:
    """Send one message on the pipe ``fd`` (blocking until all of it is written)."""
    data = memoryview(encode(message))
    while data:
        data = data[os.write(fd, data) :]


def split_frames(inbox: bytearray) -> list[tuple[Any, ...]]:
    """Decode the complete frames at the start of ``inbox`` and remove them; a partial
    frame stays for the next read. Raises ProtocolError on the first bad one."""
    messages: list[tuple[Any, ...]] = []
    pos = 0
    try:
        while len(inbox) - pos >= HEADER.size:
            magic, size = HEADER.unpack_from(inbox, pos)
            if magic != MAGIC:
                raise ProtocolError(f"bad frame header {bytes(inbox[pos : pos + 8])!r}", messages)
            if size > MAX_FRAME:
                raise ProtocolError(
                    f"frame of {size} bytes announced (limit {MAX_FRAME})", messages
                )
            start = pos + HEADER.size
            if len(inbox) - start < size:
                break
            messages.append(_decode(bytes(inbox[start : start + size]), messages))
            pos = start + size
        else:
            tail = bytes(inbox[pos : pos + len(MAGIC)])
            if not MAGIC.startswith(tail):  # a short tail can be judged already
                raise ProtocolError(f"bad frame header {tail!r}", messages)
    finally:
        del inbox[:pos]
    return messages


def _decode(body: bytes, before: list[tuple[Any, ...]]) -> tuple[Any, ...]:
    try:
        value = msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated classes
        raise ProtocolError(f"undecodable message ({type(exc).__name__}: {exc})", before) from None
    if not isinstance(value, tuple) or not value or value[0] not in _SHAPES:
        raise ProtocolError(f"unknown message {_preview(value)}", before)
    shape = _SHAPES[value[0]]
    if len(value) != len(shape) + 1 or not all(ok(v) for ok, v in zip(shape, value[1:])):
        raise ProtocolError(f"malformed {value[0]!r} message {_preview(value)}", before)
    return value


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is(*types: type) -> Callable[[Any], bool]:
    # bool is an int subclass: a flag where a count belongs (or back) is malformed
    return lambda v: isinstance(v, types) and (bool in types or not isinstance(v, bool))


def _error_tuple(v: Any) -> bool:
    kinds = (str, str, str, int, int, str)
    return (
        isinstance(v, tuple) and len(v) == len(kinds) and all(_is(t)(x) for t, x in zip(kinds, v))
    )


def _id_list(v: Any) -> bool:
    return isinstance(v, tuple) and all(is_job_id(x) for x in v)


def _optional_number(v: Any) -> bool:
    return v is None or _is(int, float)(v)


_SHAPES: dict[str, tuple[Callable[[Any], bool], ...]] = {
    "ready": (_is(int), _is(int, float), _is(bool)),
    "init_error": (_is(str),),
    "took": (is_job_id,),
    "done": (is_job_id, _is(bytes), _is(int)),
    "failed": (is_job_id, _error_tuple, _is(bool), _optional_number, _is(int)),
    "released": (_id_list,),
}
