"""serve/protocol.py: every pipe message is a typed value that survives its framing,
and bytes that are not a well-formed message are refused (issue 10, issue 11)."""

from __future__ import annotations

import multiprocessing

import pytest

from mpqueue.errors import ProtocolError
from mpqueue.records import ErrorInfo
from mpqueue.serve import protocol
from mpqueue.serve.protocol import (
    Done,
    Expired,
    Failed,
    Handed,
    InitError,
    ProgressReport,
    Ready,
    Released,
    Run,
    Stop,
    Took,
)

JOB = "a" * 32
OTHER = "b" * 32

REPORTS = [
    Ready(1234, 1700000000.25, True),
    InitError("ImportError: no module named tasks"),
    Took(JOB),
    Done(JOB, b"\x80\x05result", 4096),
    Failed(JOB, ErrorInfo("ValueError", "bad", "Traceback...", 2, 99, "exception"), True, None, 0),
    Failed(JOB, ErrorInfo("Retry", "later", kind="retry"), True, 1.5, 7),
    Expired(JOB),
    Released([JOB, OTHER]),
    Released([]),
    ProgressReport(JOB, 3.0, 10.0, "loading", 1700000000000),
    ProgressReport(JOB, 0, None, None, 5),
]


@pytest.mark.parametrize("report", REPORTS, ids=lambda r: protocol.tag(r))
def test_each_report_comes_back_as_the_same_typed_value(report):
    inbox = bytearray(protocol.encode(report))
    (decoded,) = protocol.split_frames(inbox)
    assert type(decoded) is type(report)
    assert decoded == report
    assert not inbox


def test_frames_split_across_reads_wait_for_their_rest():
    data = protocol.encode(Took(JOB)) + protocol.encode(Done(JOB, b"x", 1))
    inbox = bytearray(data[:-3])
    assert protocol.split_frames(inbox) == [Took(JOB)]
    inbox += data[-3:]
    assert protocol.split_frames(inbox) == [Done(JOB, b"x", 1)]


def test_the_wire_keeps_its_tagged_arrays():
    """The wire format did not change with the types: a tag, then the fields."""
    assert protocol.encode(Done(JOB, b"r", 3)) == protocol.frame(("done", JOB, b"r", 3, None))
    assert protocol.encode(Done(JOB, b"r", 3, "'x'")) == protocol.frame(
        ("done", JOB, b"r", 3, "'x'")
    )
    error = ErrorInfo("E", "m", "tb", 1, 2, "crash")
    assert protocol.encode(Failed(JOB, error, False, 0.0, 5)) == protocol.frame(
        ("failed", JOB, ("E", "m", "tb", 1, 2, "crash"), False, 0.0, 5)
    )
    assert protocol.encode(Expired(JOB)) == protocol.frame(("expired", JOB))


MALFORMED = [
    ("done", 5, "x"),  # a number for the id, text for the result
    ("done", JOB, b"r"),  # a field missing
    ("done", JOB, b"r", True, None),  # a flag where a count belongs
    ("done", JOB, b"r", 3, "x" * 201),  # a preview over its cap
    ("done", JOB, b"r", 3, b"x"),  # bytes for the preview
    ("ready", 1, 2.0, 1),  # a count where a flag belongs
    ("took", "not-an-id"),
    ("failed", JOB, ("E", "m", "tb", 1, 2), True, None, 0),  # a short error
    ("failed", JOB, ("E", "m", "tb", 1, 2, "crash"), True, "soon", 0),
    ("released", (JOB, 7)),
    ("expired", "not-an-id"),
    ("expired", JOB, 0),  # a field more
    ("progress", JOB, -1.0, None, None, 5),  # below 0
    ("progress", JOB, float("nan"), None, None, 5),
    ("progress", JOB, 1.0, 0.0, None, 5),  # a total of 0
    ("progress", JOB, 1.0, None, "x" * 201, 5),  # a message too long
    ("progress", JOB, 1.0, None, None, 5.5),  # a time that is not an int
    ("run", [JOB]),  # a command, which a child never sends
    ("nonsense",),
]


@pytest.mark.parametrize("value", MALFORMED, ids=repr)
def test_a_message_of_the_wrong_shape_is_refused_after_the_good_ones(value):
    inbox = bytearray(protocol.encode(Took(JOB)) + protocol.frame(value))
    with pytest.raises(ProtocolError) as caught:
        protocol.split_frames(inbox)
    assert caught.value.messages == [Took(JOB)]


def test_bad_headers_are_refused():
    with pytest.raises(ProtocolError, match="bad frame header"):
        protocol.split_frames(bytearray(b"\x00\x00\x00\x05hello"))
    with pytest.raises(ProtocolError, match="announced"):
        protocol.split_frames(
            bytearray(protocol.HEADER.pack(protocol.MAGIC, protocol.MAX_FRAME + 1))
        )
    with pytest.raises(ProtocolError, match="bad frame header"):
        protocol.split_frames(bytearray(b"xy"))  # a short tail that is no magic's start


@pytest.mark.parametrize("command", [Run([JOB, OTHER]), Handed([JOB]), Stop()], ids=repr)
def test_commands_reach_the_child_as_the_same_typed_value(command):
    parent, child = multiprocessing.Pipe()
    try:
        protocol.send_command(parent, command)
        received = protocol.receive_command(child)
    finally:
        parent.close()
        child.close()
    assert type(received) is type(command)
    assert received == command
