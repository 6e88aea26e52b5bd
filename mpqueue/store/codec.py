"""Binary encoding of job records and claims for the LMDB store.

A record is a pickled tuple of plain values behind a version byte: no user objects
live at this level (payload and result are already bytes), so decoding cannot run
user code.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, cast

from .. import keys
from ..job import Claim, ErrorInfo, JobRecord, JobState

RECORD_V1 = b"\x01"
CLAIM_V2 = b"\x02"
CLAIM_V3 = b"\x03"  # a hand-off: V2 plus the pid of the child it was given to
_CLAIM = struct.Struct(">Qq")
_HANDED_CLAIM = struct.Struct(">QqI")


# The order of fields in an encoded record (version 1); encode_record writes this order.
_FIELDS = ("id", "name", "state", "payload", "priority", "seq", "run_at_ms", "created_at_ms",
           "attempts", "max_retries", "timeout_s", "func", "result", "errors",
           "finished_at_ms", "backoff_base_s", "backoff_cap_s")
_STATES = {state.value: state for state in JobState}


class CorruptRecord(Exception):
    """A stored record could not be decoded."""


def encode_record(rec: JobRecord) -> bytes:
    errors = tuple((e.type, e.message, e.traceback, e.attempt, e.at_ms, e.kind)
                   for e in rec.errors) if rec.errors else ()
    row = (rec.id, rec.name, rec.state.value, rec.payload, rec.priority, rec.seq,
           rec.run_at_ms, rec.created_at_ms, rec.attempts, rec.max_retries, rec.timeout_s,
           rec.func, rec.result, errors, rec.finished_at_ms, rec.backoff_base_s,
           rec.backoff_cap_s)  # the order of _FIELDS
    return RECORD_V1 + pickle.dumps(row, protocol=5)


def decode_record(raw: bytes) -> JobRecord:
    if raw[:1] != RECORD_V1:
        raise CorruptRecord(f"unknown record version {raw[:1]!r}")
    try:
        row = pickle.loads(memoryview(raw)[1:])
        if len(row) != len(_FIELDS):
            raise ValueError(f"record has {len(row)} fields, expected {len(_FIELDS)}")
        # Built without __init__: decoding runs twice per job in the server's hot path.
        rec = object.__new__(JobRecord)
        rec.__dict__.update(zip(_FIELDS, row))
        rec.state = _STATES[rec.state]
        if rec.errors:
            rec.errors = tuple(ErrorInfo(*cast(tuple[Any, ...], e)) for e in rec.errors)
        return rec
    except Exception as exc:
        raise CorruptRecord(f"{type(exc).__name__}: {exc}") from exc


def decode_listing(raw: bytes) -> JobRecord:
    """A record as a listing shows it: every field but the payload, the result and the
    callable, which come back as b"", None and None (``get`` has them). A codec that
    can skip those fields should; this one decodes them and drops them at once, so a
    listing holds no blobs."""
    rec = decode_record(raw)
    rec.payload, rec.result, rec.func = b"", None, None
    return rec


def encode_claim(claim: Claim) -> bytes:
    """Claimed-at and deadline (-1: none) as fixed-width integers; who and which job
    are in the key already. Packed, not pickled: it is written once per claimed job."""
    deadline = -1 if claim.deadline_ms is None else claim.deadline_ms
    if claim.child_pid:
        return CLAIM_V3 + _HANDED_CLAIM.pack(claim.claimed_at_ms, deadline, claim.child_pid)
    return CLAIM_V2 + _CLAIM.pack(claim.claimed_at_ms, deadline)


def decode_claim(key: bytes, raw: bytes) -> Claim:
    worker_id, job_id = keys.decode_processing_key(key)
    version, body = raw[:1], raw[1:]
    if version == CLAIM_V2 and len(body) == _CLAIM.size:
        claimed_at_ms, deadline = _CLAIM.unpack(body)
        child_pid = 0
    elif version == CLAIM_V3 and len(body) == _HANDED_CLAIM.size:
        claimed_at_ms, deadline, child_pid = _HANDED_CLAIM.unpack(body)
    else:
        raise CorruptRecord(f"unknown claim encoding {version!r} ({len(raw)} bytes)")
    return Claim(job_id, worker_id, claimed_at_ms, None if deadline < 0 else deadline,
                 child_pid)
