"""``mpqueue serve`` and ``mpqueue demo``: the commands that run jobs."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time

import click

from .. import logs
from ..demo import DEMO_RANGE, count_primes, job_ranges
from ..errors import ConfigError
from ..identity import DEFAULT_LEASE_S, current
from ..location import MODES
from ..logs import DEFAULT_LOG_FORMAT, DEFAULT_LOG_LEVEL, LOG_FORMATS, LOG_LEVELS
from ..queue import Queue
from ..queues import Selection
from ..serve.coordinator import serve
from ..serve.pool import HELPERS_STOP_TIMEOUT_S, stop_helpers
from ..serve.settings import (
    DEFAULT_BATCH,
    DEFAULT_GRACE_S,
    DEFAULT_METRICS_HOST,
    DEFAULT_PREFETCH_MAX,
    DEFAULT_TIMEOUT_GRACE_S,
    ServeSettings,
)


def _setup_logging(level: str, log_format: str = DEFAULT_LOG_FORMAT) -> None:
    logs.setup(level, log_format, current().server_id)  # the coordinator's id: this process


@click.command("serve")
@click.option(
    "--path",
    "--store",
    "path",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR|URL",
    help="Store directory or postgresql:// URL (overrides the global --path / $MPQUEUE_PATH).",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=None,
    help="Store layout and polling: 'optimized' (default) or 'legacy' "
    "(fixed-interval polling, one job per poll; for benchmarks).",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1, 4096),
    default=None,
    help="Worker processes.  [default: CPU count]",
)
@click.option(
    "--import",
    "imports",
    multiple=True,
    metavar="MODULE",
    help="Import this module in every worker at start (repeatable); task "
    "modules are also imported on demand by their task name. The server imports it "
    "too, and fires the periodic schedules (@queue.periodic) it defines.",
)
@click.option(
    "--periodic/--no-periodic",
    default=True,
    show_default=True,
    help="Fire the periodic schedules the --import modules define. --no-periodic: "
    "import them in the workers only (a server process without their memory), and "
    "fire none.",
)
@click.option(
    "--batch",
    type=click.IntRange(1),
    default=DEFAULT_BATCH,
    show_default=True,
    help="Most jobs claimed in one transaction.",
)
@click.option(
    "--poll-interval",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="S",
    help="Seconds between polls when idle. New jobs wake the "
    "server at once anyway; this is a safety net.  [default: 1.0, legacy 0.5]",
)
@click.option(
    "--until-empty",
    is_flag=True,
    help="Exit once nothing is ready, due or running (batch hosts). Shows a "
    "progress bar; exit code 1 if any job ended dead during the run.",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_GRACE_S,
    show_default=True,
    metavar="S",
    help="On SIGTERM/SIGINT/SIGHUP, seconds running jobs get to finish before they "
    "are killed and put back (a second signal stops at once).",
)
@click.option(
    "--timeout-grace",
    type=click.FloatRange(min=0),
    default=DEFAULT_TIMEOUT_GRACE_S,
    show_default=True,
    metavar="S",
    help="A job still running this long after its timeout has its worker killed.",
)
@click.option(
    "--max-tasks-per-child",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Replace a worker after it ran N jobs.",
)
@click.option(
    "--max-memory-per-child",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="MB",
    help="Replace a worker whose RSS exceeds MB after a job (the job that "
    "pushed it over is named in the log).",
)
@click.option(
    "--prefetch",
    type=click.IntRange(0),
    default=DEFAULT_PREFETCH_MAX,
    show_default=True,
    metavar="N",
    help="Most jobs queued at a worker beyond the running one (adapted to job "
    "length: short jobs get more, long jobs 1).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="With --until-empty: --progress forces the live bar, --no-progress "
    "shows nothing (default: a bar on a terminal, a line every few "
    "seconds otherwise; nothing with --log-format json).",
)
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_LEASE_S,
    show_default=True,
    metavar="S",
    help="A server on another host (or another MPQUEUE_HOST_ID) whose heartbeat "
    "is older than this is presumed dead and its jobs are put back. Servers "
    "on this host are checked by pid at once.",
)
@click.option(
    "--poll-only",
    is_flag=True,
    help="Claim only once per --poll-interval, ignoring wake-ups (how queues "
    "without them behave; for benchmarks). With --prefetch 0 a poll claims "
    "at most one job per worker.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default=DEFAULT_LOG_LEVEL,
    show_default=True,
    help="Least severe log messages shown on stderr; 'info' adds one line per job "
    "that ends (done, retried, dead, cancelled: its id, task, attempt, duration).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    default=DEFAULT_LOG_FORMAT,
    show_default=True,
    help="'json': one JSON object a line (time in UTC, level, logger, message, "
    "server_id; a job's line adds job_id, task, attempt, duration_s, outcome), "
    "from the server and its workers alike.",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    metavar="PORT",
    help="Serve Prometheus metrics on this port (needs the 'metrics' extra): what this "
    "server ran, and the store's depth by state read at each scrape.",
)
@click.option(
    "--metrics-host",
    default=DEFAULT_METRICS_HOST,
    show_default=True,
    metavar="HOST",
    help="Address the metrics endpoint listens on ('0.0.0.0': every interface).",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="At exit, write the same metrics to PATH in the node_exporter textfile format "
    "(atomically: a temporary file renamed; for --until-empty runs).",
)
@click.option(
    "--queues",
    "queues",
    default=None,
    metavar="Q1,Q2|Q1=W1,Q2=W2",
    callback=lambda ctx, param, value: _selection(value),
    help="Serve only these named queues: 'heavy,default' in order of preference (a "
    "later queue's jobs are claimed only when the earlier ones have none ready), or "
    "'heavy=3,default=1' in proportion to the weights. [default: every queue]",
)
@click.pass_obj
def serve_command(
    queue: Queue,
    path: str | None,
    mode: str | None,
    workers: int | None,
    imports: tuple[str, ...],
    periodic: bool,
    batch: int,
    poll_interval: float | None,
    until_empty: bool,
    grace: float,
    timeout_grace: float,
    max_tasks_per_child: int | None,
    max_memory_per_child: float | None,
    prefetch: int,
    progress: bool | None,
    lease: float,
    poll_only: bool,
    log_level: str,
    log_format: str,
    metrics_port: int | None,
    metrics_host: str,
    metrics_file: str | None,
    queues: Selection | None,
) -> None:
    """Run queued jobs on worker processes until stopped.

    Claims ready jobs in priority order, runs each in a worker process, commits the
    outcome (done, retried with backoff, or dead-lettered). A crashed or killed worker
    costs only the job it was running. SIGTERM/SIGINT/SIGHUP stops cleanly: running jobs
    get --grace seconds, everything else is put back; SIGUSR1/SIGUSR2 are ignored.
    """
    _setup_logging(log_level, log_format)
    if log_format == "json" and progress is None:
        progress = False  # its lines would break the one-object-a-line stream
    settings = ServeSettings(
        path=path or queue.path,
        workers=workers or os.cpu_count() or 1,
        mode=mode or queue.mode,
        imports=imports,
        periodic=periodic,
        batch=batch,
        poll_interval_s=poll_interval,
        until_empty=until_empty,
        grace_s=grace,
        timeout_grace_s=timeout_grace,
        max_tasks_per_child=max_tasks_per_child,
        max_memory_per_child_mb=max_memory_per_child,
        prefetch_max=prefetch,
        progress=progress,
        lease_s=lease,
        poll_only=poll_only,
        log_level=log_level,
        log_format=log_format,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        metrics_file=metrics_file,
        queues=queues,
    )
    queue.close()  # the coordinator opens its own handle
    try:
        code = serve(settings, queue.result_ttl_s)
    finally:
        _wait_for_helpers()
    sys.exit(code)


def _selection(text: str | None) -> Selection | None:
    if text is None:
        return None
    try:
        return Selection.parse(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def _wait_for_helpers() -> None:
    """Let nothing of this server outlive its main pid (what a supervisor watches)."""
    if not stop_helpers():
        logging.getLogger("mpqueue.serve").warning(
            "the resource tracker did not exit within %.0f s: a process a job started "
            "still holds its pipe",
            HELPERS_STOP_TIMEOUT_S,
        )


@click.command("demo")
@click.option(
    "--jobs",
    "-n",
    type=click.IntRange(1),
    default=200,
    show_default=True,
    help="How many prime-counting jobs to enqueue.",
)
@click.option(
    "--workers",
    "-w",
    type=click.IntRange(1, 4096),
    default=None,
    help="Worker processes.  [default: CPU count]",
)
@click.option(
    "--keep",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Keep the demo store in DIR (default: a temporary directory, removed afterwards).",
)
def demo_command(jobs: int, workers: int | None, keep: str | None) -> None:
    """Enqueue N CPU-bound jobs into a fresh store and run them until done.

    Each job counts the primes in a range of 10,000 numbers by trial division. Shows
    the progress bar, then the jobs/s and the number of primes found.
    """
    _setup_logging("warning")
    path = keep or tempfile.mkdtemp(prefix="mpqueue-demo-")
    workers = workers or os.cpu_count() or 1
    try:
        with Queue(path) as queue:
            task = queue.task(count_primes)
            started = time.monotonic()
            handles = task.map(job_ranges(jobs))
            click.echo(
                f"enqueued {len(handles)} jobs into {path} in "
                f"{time.monotonic() - started:.3f} s; serving with {workers} workers"
            )
            started = time.monotonic()
            code = serve(ServeSettings(path=path, workers=workers, until_empty=True))
            elapsed = time.monotonic() - started
            total = sum(job.result(timeout=0) for job in handles)
        click.echo(
            f"{jobs} jobs done in {elapsed:.2f} s ({jobs / elapsed:.1f} jobs/s): "
            f"{total} primes below {jobs * DEMO_RANGE}"
        )
        sys.exit(code)
    finally:
        if keep is None:
            shutil.rmtree(path, ignore_errors=True)
