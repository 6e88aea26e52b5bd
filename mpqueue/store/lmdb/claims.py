"""The value of an LMDB ``processing`` entry: when a job was claimed, its deadline and,
for a hand-off, the child it was given to. Who holds it and which job are in the key.
Packed fixed-width integers, not pickled: one is written per claimed job."""

from __future__ import annotations

import struct

from ...errors import CorruptRecord
from ...records import Claim
from . import keys

CLAIM_V2 = b"\x02"
CLAIM_V3 = b"\x03"  # a hand-off: V2 plus the pid of the child it was given to
_CLAIM = struct.Struct(">Qq")
_HANDED_CLAIM = struct.Struct(">QqI")


def encode_claim(claim: Claim) -> bytes:
    """Claimed-at and deadline (-1: none) as fixed-width integers; who and which job
    are in the key already. Packed, not pickled: it is written once per claimed job."""
    deadline = -1 if claim.deadline_ms is None else claim.deadline_ms
    if claim.child_pid:
        return CLAIM_V3 + _HANDED_CLAIM.pack(claim.claimed_at_ms, deadline, claim.child_pid)
    return CLAIM_V2 + _CLAIM.pack(claim.claimed_at_ms, deadline)


def decode_claim(key: bytes, raw: bytes) -> Claim:
    server_id, job_id = keys.decode_processing_key(key)
    version, body = raw[:1], raw[1:]
    if version == CLAIM_V2 and len(body) == _CLAIM.size:
        claimed_at_ms, deadline = _CLAIM.unpack(body)
        child_pid = 0
    elif version == CLAIM_V3 and len(body) == _HANDED_CLAIM.size:
        claimed_at_ms, deadline, child_pid = _HANDED_CLAIM.unpack(body)
    else:
        raise CorruptRecord(f"unknown claim encoding {version!r} ({len(raw)} bytes)")
    return Claim(job_id, server_id, claimed_at_ms, None if deadline < 0 else deadline, child_pid)
