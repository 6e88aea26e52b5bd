"""The messages on a coordinator-child pipe: one typed value per kind, and their framing.

Coordinator -> child: ``Run`` (job ids to run, in order), ``Handed`` (hand-offs the
child may have missed: it runs those it has not taken yet), ``Stop``. The child trusts
its coordinator, so these keep multiprocessing's own framing (``send_command``,
``receive_command``).

Child -> coordinator: ``Ready`` (its pid and create time, whether it listens for
hand-offs), ``InitError``, ``Took`` (it started a job handed to it), ``Done``,
``Failed``, ``Expired`` (a job it did not start: past its deadline), ``Released`` (the
jobs it hands back when stopped), ``ProgressReport`` (the running job's progress,
throttled by the child).

The child runs user code, and user code can write anything to any fd it has, the
pipe included. So the coordinator trusts nothing it reads there: each frame starts
with a magic and a bounded length, its body is msgpack (plain values only, never a
pickle), and every message is checked against its shape before it becomes a typed
value. Anything else raises ``ProtocolError``, which the coordinator treats as that
child's crash: it kills the child and charges the job it was running. Bytes a child
sent can cost that child's job an attempt; they can never stop the server.

On the wire a message is an array, its kind's tag first: ``["ready", pid,
create_time, inbox]``, ``["init_error", text]``, ``["took", job_id]``, ``["done",
job_id, result, rss, preview | None]``, ``["failed", job_id, [type, message, traceback, attempt,
at_ms, kind], retryable, retry_delay_s | None, rss]``, ``["expired", job_id]``,
``["released", [job_id, ...]]``,
``["progress", job_id, done, total | None, message | None, at_ms]``;
``("run", [ids])``, ``("handed", [ids])``, ``("stop",)`` the other way. Only this module
knows it: everything else handles the typed values.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

import msgpack

from ..errors import ProtocolError
from ..limits import PROGRESS_MAX, PROGRESS_MESSAGE_MAX
from ..previews import PREVIEW_MAX
from ..records import ErrorInfo, is_job_id

MAGIC = b"mpq\x01"
HEADER = struct.Struct(">4sI")
# The largest message: a job's pickled result travels in one. A child refuses to send a
# bigger one (the job fails with a clear error), so a header over it is never genuine.
MAX_FRAME = 1 << 30
MAX_RESULT = MAX_FRAME - (1 << 16)  # room for the rest of a "done" message

# NamedTuples rather than dataclasses: one of these is built, sent and read per job,
# and a tuple is the cheapest value to build and to turn into its wire array.


# ---- coordinator -> child ------------------------------------------------------------
class Run(NamedTuple):
    """Jobs for the child to run after what it holds, in this order."""

    job_ids: list[str]


class Handed(NamedTuple):
    """Jobs handed to the child by producers that it has not reported taking."""

    job_ids: list[str]


class Stop(NamedTuple):
    """Finish the running job, hand back the rest (``Released``) and exit."""


Command = Run | Handed | Stop


# ---- child -> coordinator ------------------------------------------------------------
class Ready(NamedTuple):
    """The child's first message once it can run jobs."""

    pid: int
    create_time: float  # for pid-reuse checks
    has_inbox: bool  # it listens for jobs handed to it by producers


class InitError(NamedTuple):
    """The child's first (and last) message when it cannot start."""

    text: str


class Took(NamedTuple):
    """The child starts a job a producer handed to it (before anything queued)."""

    job_id: str


class Done(NamedTuple):
    """The running job returned; ``result`` is its pickled value."""

    job_id: str
    result: bytes
    rss: int  # the child's resident memory after the job (0: not measured)
    preview: str | None = None  # the result's text preview (previews.py)


class Failed(NamedTuple):
    """The running job failed (or could not be run)."""

    job_id: str
    error: ErrorInfo
    retryable: bool
    retry_delay_s: float | None  # None: the job's own backoff
    rss: int


class Expired(NamedTuple):
    """The next job was past its deadline when its turn came: not started."""

    job_id: str


class Released(NamedTuple):
    """Jobs the child was sent but will not run (it was told to stop)."""

    job_ids: list[str]


class ProgressReport(NamedTuple):
    """The running job's progress (``current_job().progress``)."""

    job_id: str
    done: float
    total: float | None
    message: str | None
    at_ms: int


Report = Ready | InitError | Took | Done | Failed | Expired | Released | ProgressReport


_COMMAND_TAGS: dict[type, str] = {Run: "run", Handed: "handed", Stop: "stop"}
_COMMANDS: dict[str, type] = {tag: cls for cls, tag in _COMMAND_TAGS.items()}


def send_command(conn: Connection, command: Command) -> None:
    """Send one command to a child (raises OSError if its pipe is gone)."""
    conn.send((_COMMAND_TAGS[type(command)], *command))


def receive_command(conn: Connection) -> Command:
    """The next command from the coordinator (blocking)."""
    tag, *fields = conn.recv()
    command: Command = _COMMANDS[tag](*fields)
    return command


# Text a job produced (an error message, a traceback) may hold lone surrogates, which
# UTF-8 cannot carry: they arrive as U+FFFD rather than failing the message.
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="replace")


def encode(report: Report) -> bytes:
    """One framed message: header and msgpack body."""
    if type(report) is Failed:
        job_id, e, retryable, delay, rss = report
        error = (e.type, e.message, e.traceback, e.attempt, e.at_ms, e.kind)
        return frame(("failed", job_id, error, retryable, delay, rss))
    return frame((_REPORT_TAGS[type(report)], *report))


def frame(value: tuple[Any, ...]) -> bytes:
    """Frame any plain value as a message body (``encode`` builds the genuine ones)."""
    body: bytes = _packer.pack(value)
    if len(body) > MAX_FRAME:
        raise ValueError(f"message of {len(body)} bytes is over the {MAX_FRAME}-byte limit")
    return HEADER.pack(MAGIC, len(body)) + body


def write(fd: int, report: Report) -> None:
    """Send one message on the pipe ``fd`` (blocking until all of it is written)."""
    data = memoryview(encode(report))
    while data:
        data = data[os.write(fd, data) :]


def split_frames(inbox: bytearray) -> list[Report]:
    """Decode the complete frames at the start of ``inbox`` and remove them; a partial
    frame stays for the next read. Raises ProtocolError on the first bad one, with the
    good ones before it."""
    messages: list[Report] = []
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


def tag(message: Report | Command) -> str:
    """The name of a message's kind, as on the wire (for error messages)."""
    return _REPORT_TAGS.get(type(message)) or _COMMAND_TAGS[type(message)]


def _decode(body: bytes, before: list[Report]) -> Report:
    try:
        value = msgpack.unpackb(body, raw=False, use_list=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated classes
        raise ProtocolError(f"undecodable message ({type(exc).__name__}: {exc})", before) from None
    if not isinstance(value, tuple) or not value or value[0] not in _SHAPES:
        raise ProtocolError(f"unknown message {_preview(value)}", before)
    shape, build = _SHAPES[value[0]]
    if len(value) != len(shape) + 1 or not all(ok(v) for ok, v in zip(shape, value[1:])):
        raise ProtocolError(f"malformed {value[0]!r} message {_preview(value)}", before)
    return build(value[1:])


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
    """Distinct job ids: a list naming one job twice would make the coordinator hand
    back (or run) that job twice."""
    return isinstance(v, tuple) and all(is_job_id(x) for x in v) and len(set(v)) == len(v)


def _optional_number(v: Any) -> bool:
    return v is None or _is(int, float)(v)


def _progress_number(v: Any) -> bool:
    return _is(int, float)(v) and 0 <= v <= PROGRESS_MAX


def _optional_total(v: Any) -> bool:
    return v is None or (_progress_number(v) and v > 0)


def _optional_message(v: Any) -> bool:
    return v is None or (isinstance(v, str) and len(v) <= PROGRESS_MESSAGE_MAX)


def _optional_preview(v: Any) -> bool:
    return v is None or (isinstance(v, str) and len(v) <= PREVIEW_MAX)


def _failed(fields: tuple[Any, ...]) -> Failed:
    job_id, error, retryable, delay, rss = fields
    return Failed(job_id, ErrorInfo(*error), retryable, delay, rss)


def _released(fields: tuple[Any, ...]) -> Released:
    (job_ids,) = fields
    return Released(list(job_ids))


_REPORT_TAGS: dict[type, str] = {
    Ready: "ready",
    InitError: "init_error",
    Took: "took",
    Done: "done",
    Failed: "failed",
    Expired: "expired",
    Released: "released",
    ProgressReport: "progress",
}

# Per tag: the check of each field after it, and what builds the typed value from them.
_SHAPES: dict[str, tuple[tuple[Callable[[Any], bool], ...], Callable[..., Report]]] = {
    "ready": ((_is(int), _is(int, float), _is(bool)), Ready._make),
    "init_error": ((_is(str),), InitError._make),
    "took": ((is_job_id,), Took._make),
    "done": ((is_job_id, _is(bytes), _is(int), _optional_preview), Done._make),
    "failed": ((is_job_id, _error_tuple, _is(bool), _optional_number, _is(int)), _failed),
    "expired": ((is_job_id,), Expired._make),
    "released": ((_id_list,), _released),
    "progress": (
        (is_job_id, _progress_number, _optional_total, _optional_message, _is(int)),
        ProgressReport._make,
    ),
}
