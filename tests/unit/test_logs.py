"""logs.py: the JSON formatter's fields, the per-job line, and the checked options."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from mpqueue import ConfigError
from mpqueue.logs import FIELDS, JsonFormatter, check_format, check_level, log_ending
from mpqueue.records import ErrorInfo, JobRecord, JobState, Outcome
from mpqueue.serve.settings import ServeSettings

A = "a" * 32


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mpqueue.serve", logging.WARNING, __file__, 1, message, (), None)
    record.__dict__.update(extra)
    record.created = 0.5  # 1970-01-01T00:00:00.500Z
    return record


def test_a_json_line_has_the_common_fields_and_a_lines_own():
    line = JsonFormatter("srv").format(_record("hello %s", **{FIELDS: {"job_id": A}}))
    assert json.loads(line) == {
        "time": "1970-01-01T00:00:00.500Z",
        "level": "warning",
        "logger": "mpqueue.serve",
        "message": "hello %s",
        "server_id": "srv",
        "job_id": A,
    }


def test_a_json_line_carries_the_traceback_on_one_line():
    try:
        raise ValueError("bad")
    except ValueError:
        record = _record("failed")
        record.exc_info = sys.exc_info()
    line = JsonFormatter("srv").format(record)
    assert "\n" not in line and "ValueError: bad" in json.loads(line)["exception"]


def test_the_job_line_names_the_job_and_how_its_run_ended(caplog):
    rec = JobRecord(A, "pkg.task", JobState.PROCESSING, b"", attempts=2)
    error = ErrorInfo("WorkerCrashed", "killed", kind="crash")
    with caplog.at_level(logging.INFO, logger="mpqueue.jobs"):
        log_ending("retried", Outcome.failed(A, "srv", error), rec, 0.25)
        log_ending("released", Outcome.released(A, "srv"), rec, None)  # not an end: no line
    (record,) = caplog.records
    assert record.getMessage() == (
        f"job {A} (pkg.task) retried after 0.250 s (attempt 2): WorkerCrashed: killed"
    )
    assert getattr(record, FIELDS) == {
        "job_id": A,
        "task": "pkg.task",
        "attempt": 2,
        "duration_s": 0.25,
        "outcome": "retried",
        "error": "WorkerCrashed: killed",
        "error_kind": "crash",
    }


def test_bad_log_options_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="^log format must be one of plain, json; got 'xml'$"):
        check_format("xml")
    with pytest.raises(ConfigError, match="^log level must be one of debug, info"):
        check_level("loud")
    with pytest.raises(ConfigError, match="log format"):
        ServeSettings(str(tmp_path), 1, log_format="yaml").validate()
    with pytest.raises(ConfigError, match="log level"):
        ServeSettings(str(tmp_path), 1, log_level="verbose").validate()
