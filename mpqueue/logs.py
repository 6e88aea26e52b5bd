"""Log output of ``mpqueue serve``: plain lines or one JSON object a line, and the line
a server logs for each job whose run ended.

``--log-format json`` gives every line (the server's and its children's) as one JSON
object: ``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, ``server_id``, plus
``exception`` (a traceback) where there is one. A job's line (logger ``mpqueue.jobs``,
level ``info``: off at the default ``warning``) adds ``job_id``, ``task``, ``attempt``,
``duration_s``, ``outcome`` (one of ``outcomes.ENDINGS`` but ``released``: a job put
back has not ended) and, for a failure, ``error`` and ``error_kind`` (``exception``,
``timeout``, ``crash``...). The coordinator logs it when the outcome is committed, so a
crash or a timeout kill, which the child cannot report, has one too.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .errors import ConfigError
from .outcomes import RELEASED
from .records import JobRecord, Outcome

LOG_FORMATS = ("plain", "json")
DEFAULT_LOG_FORMAT = "plain"  # on a terminal and everywhere else, unless asked
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_LOG_LEVEL = "warning"  # the per-job lines (info) cost nothing unless asked for
PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
FIELDS = "fields"  # the LogRecord attribute holding a line's own JSON fields

jobs_log = logging.getLogger("mpqueue.jobs")


class JsonFormatter(logging.Formatter):
    """One JSON object a line (see the module's docstring)."""

    def __init__(self, server_id: str):
        super().__init__()
        self.server_id = server_id

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "server_id": self.server_id,
        }
        entry.update(getattr(record, FIELDS, None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _utc(created: float) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{stamp}.{int(created * 1000) % 1000:03d}Z"


def check_format(log_format: Any) -> str:
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}; got {log_format!r}")
    return str(log_format)


def check_level(level: Any) -> str:
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}; got {level!r}")
    return str(level)


def setup(level: str, log_format: str, server_id: str) -> None:
    """Log to stderr at ``level`` and up, in ``log_format`` (as ``logging.basicConfig``:
    nothing changes where the root logger has a handler already)."""
    handler = logging.StreamHandler(sys.stderr)
    if check_format(log_format) == "json":
        handler.setFormatter(JsonFormatter(server_id))
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    logging.basicConfig(level=getattr(logging, check_level(level).upper()), handlers=[handler])


def job_lines_wanted() -> bool:
    """Whether per-job lines are logged (asked once, when a server starts)."""
    return jobs_log.isEnabledFor(logging.INFO)


def log_ending(how: str, outcome: Outcome, rec: JobRecord | None, ran_s: float | None) -> None:
    """The line of a job whose run ended ``how`` (``outcomes.ending``); ``rec``: its
    claimed record, if known; ``ran_s``: how long it ran, if known."""
    if how == RELEASED:
        return
    fields: dict[str, Any] = {
        "job_id": outcome.job_id,
        "task": None if rec is None else rec.name,
        "attempt": None if rec is None else rec.attempts,
        "duration_s": None if ran_s is None else round(ran_s, 6),
        "outcome": how,
    }
    error = outcome.error
    if error is not None:
        fields["error"], fields["error_kind"] = str(error), error.kind
    jobs_log.info(
        "job %s (%s) %s after %s s (attempt %s)%s",
        outcome.job_id,
        fields["task"],
        how,
        "?" if ran_s is None else f"{ran_s:.3f}",
        fields["attempt"],
        "" if error is None else f": {error}",
        extra={FIELDS: fields},
    )
