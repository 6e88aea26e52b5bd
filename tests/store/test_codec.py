"""Record versions of the codec (``store/codec.py``): a record that uses no newer field
is written exactly as before it existed, and each version decodes to the same fields.

The golden encodings below were made by the codec of commit 8fd9873 (before the retry
lists): a plain record and a workflow record must still encode to those bytes, so that
older mpqueue versions read them and plain jobs cost nothing more to store.
"""

from __future__ import annotations

import msgpack
import pytest

from mpqueue.errors import CorruptRecord
from mpqueue.records import ErrorInfo, JobRecord, JobState
from mpqueue.store.codec import (
    RECORD_V2,
    RECORD_V3,
    RECORD_V4,
    RECORD_V5,
    RECORD_V7,
    Row,
    decode_ending,
    decode_record,
    encode_record,
)

PLAIN_V2 = bytes.fromhex(
    "02dc0012d9203030303030303030303030303030303030303030303030303030303030303030b774657374"
    "732e737570706f72742e7461736b732e616464a464656164c4020170fd07cd03e8cd03840201cb400400"
    "0000000000c402666ec09196aa56616c75654572726f72a3626164a2746201cd03b6a965786365707469"
    "6f6ecd044ccb3fe0000000000000cb4010000000000000c403736967"
)
WORKFLOW_V3 = bytes.fromhex(
    "03dc0016d9203131313131313131313131313131313131313131313131313131313131313131a174a777"
    "616974696e67c40101000000000003c0c0c090c0cb3ff0000000000000cb4072c00000000000c091d920"
    "3232323232323232323232323232323232323232323232323232323232323232a36f6e65c3a16b"
)


def plain() -> JobRecord:
    error = ErrorInfo("ValueError", "bad", "tb", 1, 950, "exception")
    return JobRecord(
        id="0" * 32,
        name="tests.support.tasks.add",
        state=JobState.DEAD,
        payload=b"\x01p",
        priority=-3,
        seq=7,
        run_at_ms=1000,
        created_at_ms=900,
        attempts=2,
        max_retries=1,
        timeout_s=2.5,
        func=b"fn",
        errors=(error,),
        finished_at_ms=1100,
        backoff_base_s=0.5,
        backoff_cap_s=4.0,
        signature=b"sig",
    )


def workflow() -> JobRecord:
    return JobRecord(
        id="1" * 32,
        name="t",
        state=JobState.WAITING,
        payload=b"\x01",
        depends_on=("2" * 32,),
        pass_results="one",
        allow_failures=True,
        key="k",
    )


def test_records_without_retry_lists_encode_byte_for_byte_as_before():
    assert encode_record(plain()) == PLAIN_V2
    assert encode_record(workflow()) == WORKFLOW_V3


def test_older_versions_decode_without_lists():
    for raw, made in ((PLAIN_V2, plain()), (WORKFLOW_V3, workflow())):
        rec = decode_record(raw)
        assert rec.retry_on is None and rec.no_retry_on == ()
        assert rec.__dict__ == made.__dict__


@pytest.mark.parametrize(
    "retry_on, no_retry_on",
    [
        (("builtins.OSError",), ()),
        ((), ()),  # retry nothing: must not come back as None (retry everything)
        (None, ("__main__.Bad", "m.f.<locals>.E", "surrogate \udcff")),
        (("a.B", "c.D"), ("e.F",)),
    ],
)
def test_a_record_with_retry_lists_round_trips_as_version_4(retry_on, no_retry_on):
    for base in (plain(), workflow()):
        rec = base.evolve(retry_on=retry_on, no_retry_on=no_retry_on)
        raw = encode_record(rec)
        assert raw[:1] == RECORD_V4
        assert decode_record(raw).__dict__ == rec.__dict__
        ending = decode_ending(raw)
        assert (ending.state, ending.result) == (rec.state, rec.result)
        assert ending.error == (rec.errors[-1] if rec.errors else None)


def test_versions_are_the_smallest_that_holds_the_fields():
    assert encode_record(plain())[:1] == RECORD_V2
    assert encode_record(workflow())[:1] == RECORD_V3
    assert encode_record(plain().evolve(no_retry_on=("x.Y",)))[:1] == RECORD_V4


@pytest.mark.parametrize(
    "retry_on, no_retry_on",
    [((1,), ()), (None, (b"bytes",)), ("builtins.OSError", ()), (None, None), ((), 5)],
)
def test_malformed_retry_lists_are_corrupt_records(retry_on, no_retry_on):
    row = msgpack.unpackb(encode_record(workflow())[1:], use_list=False)
    raw = RECORD_V4 + msgpack.packb((*row, retry_on, no_retry_on), use_bin_type=True)
    with pytest.raises(CorruptRecord):
        decode_record(raw)


def test_a_version_byte_with_too_few_fields_is_corrupt():
    row = msgpack.unpackb(PLAIN_V2[1:], use_list=False)
    for version in (RECORD_V3, RECORD_V4, RECORD_V5):
        with pytest.raises(CorruptRecord):
            decode_record(version + msgpack.packb(row, use_bin_type=True))
    assert decode_record(RECORD_V2 + msgpack.packb(row, use_bin_type=True)).id == "0" * 32


def with_lists() -> JobRecord:
    return plain().evolve(retry_on=("a.B",), no_retry_on=("c.D",))


def test_records_without_a_deadline_are_written_as_before_it_existed():
    """Version 5 only where a deadline is set: the others keep their version and their
    field count (the version 2 and 3 bytes are pinned above)."""
    for rec, version, fields in (
        (plain(), RECORD_V2, 18),
        (workflow(), RECORD_V3, 22),
        (with_lists(), RECORD_V4, 24),
    ):
        raw = encode_record(rec)
        assert raw[:1] == version and len(msgpack.unpackb(raw[1:])) == fields
        assert decode_record(raw).expires_at_ms is None


def test_a_record_with_a_deadline_round_trips_as_version_5():
    for base in (plain(), workflow(), with_lists()):
        rec = base.evolve(expires_at_ms=253_402_300_799_999)
        raw = encode_record(rec)
        assert raw[:1] == RECORD_V5
        assert decode_record(raw).__dict__ == rec.__dict__
        ending = decode_ending(raw)
        assert (ending.state, ending.error) == (rec.state, rec.errors[-1] if rec.errors else None)
        assert Row(raw).id == rec.id


@pytest.mark.parametrize("deadline", ["soon", 1.5, b"\x00", [1]])
def test_a_malformed_deadline_is_a_corrupt_record(deadline):
    row = msgpack.unpackb(encode_record(with_lists())[1:], use_list=False)
    raw = RECORD_V5 + msgpack.packb((*row, deadline), use_bin_type=True)
    with pytest.raises(CorruptRecord):
        decode_record(raw)


def test_records_without_previews_keep_their_version():
    """Version 7 only where a preview is set: older records, and records of producers
    that write none, keep their version and field count (and the pinned bytes above)."""
    assert encode_record(plain()) == PLAIN_V2
    assert encode_record(workflow()) == WORKFLOW_V3
    for rec in (plain(), workflow(), with_lists(), plain().evolve(queue="heavy")):
        got = decode_record(encode_record(rec))
        assert (got.preview, got.result_preview) == (None, None)
        assert encode_record(rec)[:1] != RECORD_V7


@pytest.mark.parametrize("preview, result_preview", [("1, 'a'", None), (None, "42"), ("", "x")])
def test_a_record_with_previews_round_trips_as_version_7(preview, result_preview):
    for base in (plain(), workflow(), with_lists().evolve(queue="heavy", expires_at_ms=5)):
        rec = base.evolve(preview=preview, result_preview=result_preview)
        raw = encode_record(rec)
        assert raw[:1] == RECORD_V7 and len(msgpack.unpackb(raw[1:])) == 28
        assert decode_record(raw).__dict__ == rec.__dict__
        assert decode_ending(raw).state is rec.state
        row = Row(raw)
        assert (row.id, row.queue) == (rec.id, rec.queue)
        cancelled = decode_record(
            row.cancelled(ErrorInfo("Cancelled", "by test", kind="cancelled"))
        )
        assert cancelled.state is JobState.CANCELLED and cancelled.preview == preview


@pytest.mark.parametrize("preview", [1, b"bytes", ["a"], True])
def test_a_malformed_preview_is_a_corrupt_record(preview):
    row = msgpack.unpackb(encode_record(plain().evolve(preview="ok"))[1:], use_list=False)
    raw = RECORD_V7 + msgpack.packb((*row[:26], preview, None), use_bin_type=True)
    with pytest.raises(CorruptRecord):
        decode_record(raw)
