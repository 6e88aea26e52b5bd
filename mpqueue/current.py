"""``current_job()``: the job running in this process, and its progress reports.

A process runs one job at a time (a server's child, or ``Queue.run_pending``), so the
running job is one module-level slot that the runner sets around the task's call:
two assignments per job. The handle is built only when a task asks for it, and a job
that never reports progress costs nothing more.

Progress goes to a *sink* the runner gives: a server's child sends it down its pipe to
the coordinator, which writes it in its next commit; ``run_pending`` writes it to the
store. Reports are throttled here, at most one per ``PROGRESS_EVERY_S`` per job (the
last one is kept, and sent when the job ends), so a task may report in a tight loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from .limits import check_progress
from .records import JobRecord, Progress, now_ms

PROGRESS_EVERY_S = 0.25  # at most four reports a second per job reach the store

Sink = Callable[[str, Progress], None]

_running: JobRecord | None = None  # the job this process is running now
_sink: Sink | None = None
_handle: CurrentJob | None = None  # built on the first current_job() of that job


class CurrentJob:
    """The running job, as a task sees it: ``id``, ``name``, ``attempt`` (1 on the
    first run) and ``progress()``."""

    def __init__(self, rec: JobRecord, sink: Sink | None):
        self.id = rec.id
        self.name = rec.name
        self.attempt = rec.attempts
        self._sink = sink
        self._sent_at = float("-inf")  # monotonic time of the last report sent
        self._held: Progress | None = None  # a report throttled, sent at the job's end

    def __repr__(self) -> str:
        return f"<CurrentJob {self.id} {self.name} attempt {self.attempt}>"

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress: ``done`` (a number from 0) out of ``total`` (None: unknown),
        with an optional short ``message`` (at most 200 characters). It shows in
        ``job.progress``, ``mpqueue show`` and ``mpqueue list`` within a second or so;
        call it as often as you like. ConfigError for values out of bounds."""
        report = Progress(*check_progress(done, total, message), now_ms())
        if self._sink is None:
            return
        now = time.monotonic()
        if now - self._sent_at < PROGRESS_EVERY_S:
            self._held = report
            return
        self._send(report, now)

    def _send(self, report: Progress, now: float) -> None:
        assert self._sink is not None
        self._held = None
        self._sent_at = now
        self._sink(self.id, report)

    def _flush(self) -> None:
        if self._held is not None:
            self._send(self._held, time.monotonic())


def current_job() -> CurrentJob | None:
    """The job this process is running (inside a task), or None outside one."""
    global _handle
    if _running is None:
        return None
    if _handle is None:
        _handle = CurrentJob(_running, _sink)
    return _handle


def started(rec: JobRecord, sink: Sink | None) -> None:
    """The runner is about to call ``rec``'s task."""
    global _running, _sink, _handle
    _running, _sink, _handle = rec, sink, None


def ended() -> None:
    """The task returned (or raised): send a throttled last report, forget the job."""
    global _running, _handle
    if _handle is not None:
        try:
            _handle._flush()
        finally:
            _handle = None
    _running = None
