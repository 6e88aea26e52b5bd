"""``current_job()`` and its progress reports (mpqueue/current.py), in one process."""

from __future__ import annotations

import time

import pytest

from mpqueue import ConfigError, current_job
from mpqueue import current as running
from mpqueue.records import JobRecord, JobState


def _rec() -> JobRecord:
    return JobRecord("a" * 32, "tasks.t", JobState.PROCESSING, b"\x01", attempts=2)


def test_outside_a_job_there_is_none():
    assert current_job() is None


def test_reports_are_throttled_and_the_last_one_is_sent_at_the_end():
    sent = []
    running.started(_rec(), lambda job_id, report: sent.append((job_id, report)))
    try:
        job = current_job()
        assert job is current_job() and (job.id, job.name, job.attempt) == ("a" * 32, "tasks.t", 2)
        started = time.monotonic()
        for i in range(10_000):
            job.progress(i + 1, 10_000)
        took = time.monotonic() - started
    finally:
        running.ended()
    assert current_job() is None
    assert sent[0][1].done == 1.0  # the first report goes at once
    assert sent[-1][1].done == 10_000.0  # the last, held back, when the job ends
    assert len(sent) <= 2 + took / running.PROGRESS_EVERY_S, (len(sent), took)


def test_without_a_sink_reports_are_checked_and_dropped():
    running.started(_rec(), None)
    try:
        current_job().progress(1)
    finally:
        running.ended()


@pytest.mark.parametrize(
    "args, message",
    [
        ((-1,), "done must be from 0"),
        ((float("nan"),), "done must be a number"),
        ((True,), "done must be a number"),
        ((1, 0), "total must be above 0"),
        ((1, float("inf")), "total must be above 0"),
        ((1, None, 5), "message must be a string"),
        ((1, None, "x" * 201), "at most 200"),
    ],
)
def test_bad_reports_are_refused(args, message):
    running.started(_rec(), lambda job_id, report: None)
    try:
        with pytest.raises(ConfigError, match=message):
            current_job().progress(*args)
    finally:
        running.ended()
