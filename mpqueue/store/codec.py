"""Binary encoding of job records and server registry entries (both backends use it).

Nothing here runs code while decoding, whatever the bytes: whoever can write a value
into the store must not be able to run code in a process that merely reads it
(``mpqueue list``, a server's claim). Records (version 2) and registry entries are
msgpack, which yields plain values only, checked against the shape they must have.
Payloads and results stay opaque bytes at this level:
they are pickles, loaded only in the child that runs the job and by ``Job.result()``.

Version 3 adds the workflow fields, version 4 the retry lists, version 5 the deadline
to start (``expires_at_ms``), version 6 the named queue and version 7 the text
previews of the arguments and the result (``mpqueue/previews.py``), each written only
when one of its fields is set (a queue other than ``default``, a preview): a record
that uses none of them is version 2, byte for byte. Every record enqueued since
previews exist has one, so new records are version 7; older readers refuse those as
an unknown version rather than misread them.

Version 1 records (and registry entries) were pickles of plain values. They are still
read, by an unpickler that refuses every global, so that no pickle can name a callable
to run; opening a store rewrites them as version 2 (``LmdbStore``'s migration).
"""

from __future__ import annotations

import io
import pickle
from typing import Any

import msgpack

from ..errors import CorruptRecord
from ..queues import DEFAULT_QUEUE, is_queue_name
from ..records import Ending, ErrorInfo, JobRecord, JobState, Progress

RECORD_V1 = b"\x01"  # a pickle: read (without globals), never written
RECORD_V2 = b"\x02"  # msgpack
RECORD_V3 = b"\x03"  # msgpack, with the workflow fields (written only when one is set)
RECORD_V4 = b"\x04"  # msgpack, with the retry lists too (written only when one is set)
RECORD_V5 = b"\x05"  # msgpack, with the deadline to start too (written only when set)
RECORD_V6 = b"\x06"  # msgpack, with the queue too (written only when not the default)
RECORD_V7 = b"\x07"  # msgpack, with the previews too (written only when one is set)
WORKER_V1 = b"\x01"  # a registry entry: msgpack (a bare pickle before it had a version)


# The order of fields in an encoded record; encode_record writes this order. Version 1
# had all but the last.
_FIELDS = (
    "id",
    "name",
    "state",
    "payload",
    "priority",
    "seq",
    "run_at_ms",
    "created_at_ms",
    "attempts",
    "max_retries",
    "timeout_s",
    "func",
    "result",
    "errors",
    "finished_at_ms",
    "backoff_base_s",
    "backoff_cap_s",
    "signature",
    "depends_on",
    "pass_results",
    "allow_failures",
    "key",
    "retry_on",
    "no_retry_on",
    "expires_at_ms",
    "queue",
    "preview",
    "result_preview",
)
_V2_FIELDS = 18  # version 2 ends with the signature; version 1 one field before
_V1_FIELDS = _V2_FIELDS - 1
_V3_FIELDS = 22  # version 3 ends with the workflow fields
_V3_DEFAULTS = ((), "", False, None)  # what a version 2 record holds in the new fields
_V4_FIELDS = 24  # version 4 ends with the retry lists
_V4_DEFAULTS = (None, ())  # what a version 3 (or older) record holds in the retry lists
_V5_FIELDS = 25  # version 5 ends with the deadline to start
_V5_DEFAULTS = (None,)  # what a version 4 (or older) record holds as its deadline
_V6_FIELDS = 26  # version 6 ends with the queue
_V6_DEFAULTS = (DEFAULT_QUEUE,)  # what a version 5 (or older) record's queue is
_V7_DEFAULTS = (None, None)  # what a version 6 (or older) record holds as its previews
_OLDER_DEFAULTS = _V3_DEFAULTS + _V4_DEFAULTS + _V5_DEFAULTS + _V6_DEFAULTS + _V7_DEFAULTS
_NUMBER = (int, float)
_TYPES: tuple[Any, ...] = (
    str,
    str,
    str,
    bytes,
    int,
    int,
    int,
    int,
    int,
    int,
    (*_NUMBER, type(None)),
    (bytes, type(None)),
    (bytes, type(None)),
    tuple,
    (int, type(None)),
    _NUMBER,
    _NUMBER,
    (bytes, type(None)),
    tuple,
    str,
    bool,
    (str, type(None)),
    (tuple, type(None)),
    tuple,
    (int, type(None)),
    str,
    (str, type(None)),
    (str, type(None)),
)
_ERROR_TYPES = (str, str, str, int, int, str)
_GOOD_SHAPES: set[tuple[type, ...]] = set()  # field-type tuples that passed the check
_GOOD_SHAPES_MAX = 1024  # far more than the shapes there are: a bound, not a cache size
_STATES = {state.value: state for state in JobState}
# Surrogates (from undecodable file names in a traceback, say) round-trip unchanged.
_packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")


class _PlainUnpickler(pickle.Unpickler):
    """Loads pickles of plain values only: any global (a class, a function to call)
    is refused, so loading cannot run code."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load {module}.{name} from the store")


def load_plain_pickle(raw: bytes | memoryview) -> Any:
    return _PlainUnpickler(io.BytesIO(raw)).load()


def encode_record(rec: JobRecord) -> bytes:
    errors = (
        tuple((e.type, e.message, e.traceback, e.attempt, e.at_ms, e.kind) for e in rec.errors)
        if rec.errors
        else ()
    )
    row = (
        rec.id,
        rec.name,
        rec.state.value,
        rec.payload,
        rec.priority,
        rec.seq,
        rec.run_at_ms,
        rec.created_at_ms,
        rec.attempts,
        rec.max_retries,
        rec.timeout_s,
        rec.func,
        rec.result,
        errors,
        rec.finished_at_ms,
        rec.backoff_base_s,
        rec.backoff_cap_s,
        rec.signature,
    )  # the order of _FIELDS
    later: tuple[Any, ...] | None = None  # the fields of versions 3 to 7 it needs
    version = RECORD_V2
    if rec.preview is not None or rec.result_preview is not None:
        version = RECORD_V7
        later = (*_later_fields(rec), rec.queue, rec.preview, rec.result_preview)
    elif rec.queue != DEFAULT_QUEUE:
        version, later = RECORD_V6, (*_later_fields(rec), rec.queue)
    elif rec.expires_at_ms is not None:
        version, later = RECORD_V5, _later_fields(rec)
    elif rec.retry_on is not None or rec.no_retry_on:
        version, later = RECORD_V4, _later_fields(rec)[:-1]
    elif rec.depends_on or rec.pass_results or rec.allow_failures or rec.key is not None:
        version, later = RECORD_V3, _later_fields(rec)[:-3]
    if later is not None:
        packed: bytes = _packer.pack(row + later)
        return version + packed
    # Version 2 while no workflow field is set: what older mpqueue versions read.
    body: bytes = _packer.pack(row)
    return RECORD_V2 + body


def _later_fields(rec: JobRecord) -> tuple[Any, ...]:
    """The fields versions 3 to 5 add, in order: workflow, retry lists, deadline."""
    return (
        rec.depends_on,
        rec.pass_results,
        rec.allow_failures,
        rec.key,
        rec.retry_on,
        rec.no_retry_on,
        rec.expires_at_ms,
    )


# Per msgpack version: how many fields it encodes, and what the later fields read as.
_MSGPACK_VERSIONS = {
    RECORD_V2: (_V2_FIELDS, _OLDER_DEFAULTS),
    RECORD_V3: (_V3_FIELDS, _V4_DEFAULTS + _V5_DEFAULTS + _V6_DEFAULTS + _V7_DEFAULTS),
    RECORD_V4: (_V4_FIELDS, _V5_DEFAULTS + _V6_DEFAULTS + _V7_DEFAULTS),
    RECORD_V5: (_V5_FIELDS, _V6_DEFAULTS + _V7_DEFAULTS),
    RECORD_V6: (_V6_FIELDS, _V7_DEFAULTS),
    RECORD_V7: (len(_FIELDS), ()),
}


def _msgpack_row(raw: bytes, version: bytes) -> Any:
    """The fields of a msgpack record, the ones its version lacks at their defaults."""
    row = msgpack.unpackb(
        memoryview(raw)[1:], raw=False, use_list=False, unicode_errors="surrogatepass"
    )
    size, later = _MSGPACK_VERSIONS[version]
    if isinstance(row, tuple) and len(row) == size:
        row += later
    return row


def decode_record(raw: bytes) -> JobRecord:
    """The record in ``raw``; raises CorruptRecord for anything that is not one."""
    version = raw[:1]
    try:
        if version in _MSGPACK_VERSIONS:
            row = _msgpack_row(raw, version)
        elif version == RECORD_V1:
            row = load_plain_pickle(memoryview(raw)[1:])
            if isinstance(row, tuple) and len(row) == _V1_FIELDS:
                row += (None, *_OLDER_DEFAULTS)
        else:
            raise ValueError(f"unknown record version {version!r}")
        _check_row(row)
    except Exception as exc:  # the decoders raise many unrelated classes
        raise CorruptRecord(f"{type(exc).__name__}: {exc}") from None
    # Built without __init__: decoding runs twice per job in the server's hot path.
    rec = object.__new__(JobRecord)
    rec.__dict__.update(zip(_FIELDS, row))
    rec.state = _STATES[row[2]]
    if row[13]:
        rec.errors = tuple(ErrorInfo(*e) for e in row[13])
    return rec


class Row:
    """A record as its decoded fields, for a bulk change that need not build the
    ``JobRecord`` (a bulk cancel): the fields that file it in the queues, and its bytes
    once cancelled. Checked as ``decode_record`` checks; CorruptRecord otherwise."""

    __slots__ = ("fields", "version", "state", "id", "name")

    def __init__(self, raw: bytes):
        self.version = raw[:1]
        if self.version not in _MSGPACK_VERSIONS:  # older: ``decode_record`` reads it
            raise CorruptRecord(f"not a msgpack record: version {self.version!r}")
        try:
            fields = _msgpack_row(raw, self.version)
            _check_row(fields)
        except Exception as exc:
            raise CorruptRecord(f"{type(exc).__name__}: {exc}") from None
        self.fields: tuple[Any, ...] = fields
        self.state = _STATES[fields[2]]
        self.id: str = fields[0]
        self.name: str = fields[1]

    @property
    def priority(self) -> int:
        return int(self.fields[4])

    @property
    def seq(self) -> int:
        return int(self.fields[5])

    @property
    def run_at_ms(self) -> int:
        return int(self.fields[6])

    @property
    def queue(self) -> str:
        return str(self.fields[25])

    def cancelled(self, entry: ErrorInfo) -> bytes:
        """The record's bytes once cancelled: ``entry`` last in its history, finished at
        its time (``encode_record`` of the cancelled record, without building it)."""
        row = list(self.fields)
        error = (entry.type, entry.message, entry.traceback, row[8], entry.at_ms, entry.kind)
        row[2] = JobState.CANCELLED.value
        row[13] = (*row[13], error)
        row[14] = entry.at_ms
        del row[_MSGPACK_VERSIONS[self.version][0] :]  # the version it was in, as written
        packed: bytes = _packer.pack(row)
        return self.version + packed


def _check_row(row: Any) -> None:
    if not isinstance(row, tuple) or len(row) != len(_FIELDS):
        raise ValueError(f"not a record of {len(_FIELDS)} fields")
    # The fields' types, as one tuple built in C: records come in a handful of shapes
    # (optional fields set or not), so a shape checked once is known good after. This
    # runs for every claimed job, where a field-by-field check showed in the claim rate.
    shape = tuple(map(type, row))
    if shape not in _GOOD_SHAPES:
        for name, value, types in zip(_FIELDS, row, _TYPES):
            if not isinstance(value, types):
                raise ValueError(f"field {name} holds a {type(value).__name__}")
        if len(_GOOD_SHAPES) < _GOOD_SHAPES_MAX:
            _GOOD_SHAPES.add(shape)
    if row[2] not in _STATES:
        raise ValueError(f"unknown state {row[2]!r}")
    if row[18] and not all(type(dep) is str for dep in row[18]):
        raise ValueError("malformed dependency list")
    if (row[22] or row[23]) and not all(type(n) is str for n in (*(row[22] or ()), *row[23])):
        raise ValueError("malformed retry lists")
    if row[25] != DEFAULT_QUEUE and not is_queue_name(row[25]):
        raise ValueError(f"bad queue name {row[25][:80]!r}")
    for error in row[13]:
        if (
            not isinstance(error, tuple)
            or len(error) != len(_ERROR_TYPES)
            or not all(isinstance(v, t) for v, t in zip(error, _ERROR_TYPES))
        ):
            raise ValueError("malformed error history")


# ---- progress reports ------------------------------------------------------------------
def encode_progress(report: Progress) -> bytes:
    return bytes(_packer.pack(tuple(report)))


def decode_progress(raw: bytes) -> Progress | None:
    """A stored progress report; None for bytes that are not one (a reader never fails
    on them: progress is shown, never acted on)."""
    try:
        value = msgpack.unpackb(raw, raw=False, use_list=False)
        done, total, message, at_ms = value
        numbers_ok = isinstance(done, _NUMBER) and isinstance(total, (*_NUMBER, type(None)))
        if numbers_ok and isinstance(message, (str, type(None))) and isinstance(at_ms, int):
            return Progress(done, total, message, at_ms)
    except Exception:  # msgpack raises several unrelated classes; a wrong arity too
        pass
    return None


# ---- server registry entries ----------------------------------------------------------
_WORKER_TYPES: dict[str, Any] = {
    "pid": int,
    "host": str,
    "heartbeat_ms": int,
    "monotonic": _NUMBER,
    "children": (list, tuple),
}


def encode_server_info(info: dict[str, Any]) -> bytes:
    body: bytes = _packer.pack(info)
    return WORKER_V1 + body


def decode_server_info(raw: bytes) -> dict[str, Any]:
    """A registry entry; one that cannot be read comes back as ``{"corrupt": reason}``
    with no heartbeat, so recovery sees a dead server and kills no process for it."""
    try:
        if raw[:1] == WORKER_V1:
            info = msgpack.unpackb(
                memoryview(raw)[1:],
                raw=False,
                use_list=False,
                strict_map_key=True,
                unicode_errors="surrogatepass",
            )
        else:  # written by a server of the pickle era, maybe running still
            info = load_plain_pickle(raw)
        _check_server_info(info)
        info["children"] = [(pid, float(started)) for pid, started in info.get("children", ())]
        return dict(info)
    except Exception as exc:
        return {"corrupt": f"{type(exc).__name__}: {exc}", "heartbeat_ms": 0, "children": []}


def _check_server_info(info: Any) -> None:
    if not isinstance(info, dict):
        raise ValueError("not a mapping")
    for key, types in _WORKER_TYPES.items():
        if key in info and not isinstance(info[key], types):
            raise ValueError(f"{key} holds a {type(info[key]).__name__}")
    for child in info.get("children", ()):
        if (
            not isinstance(child, (list, tuple))
            or len(child) != 2
            or not isinstance(child[0], int)
            or not isinstance(child[1], _NUMBER)
        ):
            raise ValueError(f"malformed child entry {child!r}")


def decode_listing(raw: bytes) -> JobRecord:
    """A record as a listing shows it: every field but the payload, the result and the
    callable, which come back as b"", None and None (``get`` has them). A codec that
    can skip those fields should; this one decodes them and drops them at once, so a
    listing holds no blobs."""
    rec = decode_record(raw)
    rec.payload, rec.result, rec.func = b"", None, None
    return rec


def decode_ending(raw: bytes) -> Ending:
    """A record's state, result and last error, checked as ``decode_record`` checks
    them, without building the record; a record that cannot be read is a dead job's
    ending, with the reason (a reader never fails on one)."""
    try:
        if raw[:1] not in _MSGPACK_VERSIONS:
            return _ending(decode_record(raw))  # older versions: the full path
        row = msgpack.unpackb(
            memoryview(raw)[1:], raw=False, use_list=False, unicode_errors="surrogatepass"
        )
        if not isinstance(row, tuple) or len(row) not in _ROW_SIZES:
            raise ValueError("not a record")
        state, result, errors = _STATES[row[2]], row[12], row[13]
        if not isinstance(result, (bytes, type(None))) or not isinstance(errors, tuple):
            raise ValueError("malformed result or errors")
        last = errors[-1] if errors else None
        if last is not None and (
            not isinstance(last, tuple)
            or len(last) != len(_ERROR_TYPES)
            or not all(isinstance(v, t) for v, t in zip(last, _ERROR_TYPES))
        ):
            raise ValueError("malformed error history")
        return Ending(state, result, None if last is None else ErrorInfo(*last))
    except Exception as exc:
        reason = f"record cannot be decoded: {type(exc).__name__}: {exc}"
        return Ending(JobState.DEAD, None, ErrorInfo("CorruptRecord", reason, kind="corrupt"))


_ROW_SIZES = frozenset(size for size, _ in _MSGPACK_VERSIONS.values())


def _ending(rec: JobRecord) -> Ending:
    return Ending(rec.state, rec.result, rec.errors[-1] if rec.errors else None)
