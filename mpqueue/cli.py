"""The ``mpqueue`` command line: parse options, call the ``Queue`` API, print.

The group builds one ``Queue`` from ``--path``/``--mode`` and hands it to every
subcommand through the click context. Every ``MpqueueError`` and every usage error
is reported as one ``Error: ...`` line on stderr: exit code 1 for errors from the
queue, 2 for bad command-line input. Input is checked before anything is written,
so a rejected command leaves the store as it was.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NoReturn

import click

from . import __version__
from .app import Queue
from .cli_serve import demo_command, serve_command
from .config import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_MODE,
    DEFAULT_PATH,
    MODES,
    PATH_ENV,
    SHOW_REPR_MAX,
    check_shared_location,
    is_url,
    redact,
)
from .display import CUT_MARK, plain_int, short_repr
from .errors import ConfigError, JobNotFound, MpqueueError, SerializationError, StoreCorrupt
from .job import Job, JobState
from .limits import PRIORITY_MAX, PRIORITY_MIN
from .serializer import load_result
from .store.base import CheckReport

STATES = [state.value for state in JobState]


class MpqueueGroup(click.Group):
    """A click group that turns expected errors into one ``Error: ...`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MpqueueError as exc:
            raise click.ClickException(str(exc)) from exc
        except UnicodeError as exc:  # argv bytes that are not UTF-8 reach an encoder
            raise click.ClickException(f"text that is not valid UTF-8: {exc}") from exc
        except RecursionError as exc:  # a stored value nested deeper than Python recurses
            raise click.ClickException(f"a value is nested too deeply to handle: {exc}") from exc
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # `mpqueue list | head`: click exits quietly
                raise
            raise click.ClickException(
                f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
            ) from exc

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # bare `mpqueue`: the help text, not an error line
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            _fail(exc)
        except click.Abort:
            click.echo("Aborted.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(exc: click.ClickException) -> NoReturn:
    """Print a click error on one line; usage errors point at the right --help."""
    message = " ".join(line.strip() for line in exc.format_message().splitlines())
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message = f"{message.rstrip('.')}. (see '{exc.ctx.command_path} --help')"
    click.echo(f"Error: {message}", err=True)
    sys.exit(exc.exit_code)


@click.group(cls=MpqueueGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--path",
    type=click.Path(file_okay=False),
    envvar=PATH_ENV,
    show_envvar=True,
    metavar="DIR",
    help=f"Directory of the job store (created if missing). [default: {DEFAULT_PATH}]",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=DEFAULT_MODE,
    show_default=True,
    help="Store layout: 'optimized', or 'legacy' (the old layout, kept for "
    "benchmarks). Use the mode the store was written with.",
)
@click.version_option(__version__, prog_name="mpqueue")
@click.pass_context
def cli(ctx: click.Context, path: str | None, mode: str) -> None:
    """mpqueue: a durable, embedded, multiprocess job queue on LMDB.

    Every command works on the store given by --path (or $MPQUEUE_PATH).
    """
    # Task modules in the current directory must import, as with `python -m`.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    queue = Queue(path, mode=mode)
    if ctx.invoked_subcommand != "demo":  # the demo makes a store of its own
        check_shared_location(queue.path)
    ctx.obj = queue
    ctx.call_on_close(queue.close)


# ---- enqueue ----------------------------------------------------------------------
@cli.command()
@click.argument("task")
@click.argument("args", required=False, default="[]")
@click.option(
    "--kwargs",
    "kwargs_json",
    default="{}",
    metavar="JSON",
    help="Keyword arguments as a JSON object, e.g. '{\"scale\": 2}'. [default: {}]",
)
@click.option(
    "--delay",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Run no sooner than SECONDS (0 to 100 years) from now. [default: run now]",
)
@click.option(
    "--priority",
    type=int,
    default=None,
    help=f"Higher runs first; an integer from {PRIORITY_MIN} to {PRIORITY_MAX}. "
    "[default: the task's own priority]",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the new job as a JSON object instead of its id."
)
@click.pass_obj
def enqueue(
    queue: Queue,
    task: str,
    args: str,
    kwargs_json: str,
    delay: float | None,
    priority: int | None,
    as_json: bool,
) -> None:
    """Add one job of TASK to the queue and print its id.

    TASK is an import path, such as 'package.module.function'; modules in the
    current directory can be imported. ARGS is a JSON array of positional
    arguments, e.g. '[1, "two"]'.
    """
    positional = _parse_json(args, list, "ARGS", "a JSON array, e.g. '[1, 2]'")
    keywords = _parse_json(kwargs_json, dict, "--kwargs", "a JSON object, e.g. '{\"x\": 1}'")
    found = queue.task_by_name(task)
    job = queue.enqueue(found, tuple(positional), keywords, delay=delay, priority=priority)
    click.echo(_to_json(job.to_dict()) if as_json else job.id)


def _parse_json(text: str, kind: type, what: str, expected: str) -> Any:
    try:
        value = json.loads(text)
    except RecursionError:
        raise click.BadParameter(
            f"JSON nested too deeply; expected {expected}", param_hint=what
        ) from None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"invalid JSON ({exc}); expected {expected}", param_hint=what
        ) from None
    except ValueError:  # the only other: an integer over Python's digit limit
        raise click.BadParameter(
            f"a number in it has more than "
            f"{sys.get_int_max_str_digits()} digits; expected {expected}",
            param_hint=what,
        ) from None
    if not isinstance(value, kind):
        raise click.BadParameter(
            f"expected {expected}; got a JSON {_json_kind(value)}", param_hint=what
        )
    return value


def _json_kind(value: Any) -> str:
    names = {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)


# ---- reading ----------------------------------------------------------------------
@cli.command("list")
@click.option("--name", default=None, metavar="TASK", help="Only jobs of this task name.")
@click.option("--state", type=click.Choice(STATES), default=None, help="Only jobs in this state.")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help=f"Show at most N (>= 0) jobs, the oldest. [default: {DEFAULT_LIST_LIMIT}]",
)
@click.option("--all", "all_jobs", is_flag=True, help="Show every job (no limit).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON array of job objects instead of a table."
)
@click.pass_obj
def list_jobs(
    queue: Queue,
    name: str | None,
    state: str | None,
    limit: int | None,
    all_jobs: bool,
    as_json: bool,
) -> None:
    """List jobs, oldest first (at most --limit; says so on stderr when there are more)."""
    jobs = _listed(queue, name, state, _list_limit(limit, all_jobs))
    if as_json:
        click.echo(_to_json([job.to_dict() for job in jobs]))
        return
    rows = [
        [
            job.id,
            job.name,
            job.state,
            str(job.attempts),
            str(job.priority),
            _time(job.record.run_at_ms),
        ]
        for job in jobs
    ]
    _table(["ID", "NAME", "STATE", "ATTEMPTS", "PRIORITY", "RUN AT (UTC)"], rows, empty="No jobs.")


def _list_limit(limit: int | None, all_jobs: bool) -> int | None:
    """The --limit of a listing: the default unless --all (None: no limit)."""
    if all_jobs and limit is not None:
        raise click.UsageError("give --limit or --all, not both")
    return None if all_jobs else DEFAULT_LIST_LIMIT if limit is None else limit


def _listed(queue: Queue, name: str | None, state: str | None, limit: int | None) -> list[Job]:
    """At most ``limit`` jobs; when the store has more, a note on stderr says so (stderr,
    so ``--json`` output stays one parseable array)."""
    jobs = queue.list(name=name, state=state, limit=None if limit is None else limit + 1)
    if limit is not None and len(jobs) > limit:
        click.echo(f"... more jobs than the {limit} shown; use --limit N or --all", err=True)
        del jobs[limit:]
    return jobs


@cli.command(short_help="Show one job in full.")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as one JSON object.")
@click.option(
    "--full",
    is_flag=True,
    help=f"Show arguments and result whole (default: each cut to {SHOW_REPR_MAX:,} characters).",
)
@click.pass_obj
def show(queue: Queue, job_id: str, as_json: bool, full: bool) -> None:
    """Show every field of one job, with its arguments, result and error history."""
    job = queue.get(job_id)
    if job is None:
        raise JobNotFound(f"no job with id {job_id!r}")
    details = _details(job)
    width = None if full else SHOW_REPR_MAX
    if as_json:
        for key in ("args", "kwargs", "result"):  # user values: cut (the rest is ours)
            if key in details:
                details[key] = _plain(details[key], width)
        click.echo(_to_json(_plain(details)))
    else:
        _print_details(details, width)


class Unloadable(str):
    """Stands in for stored arguments or a result that cannot be unpickled."""

    def __new__(cls, exc: Exception) -> Unloadable:
        return super().__new__(cls, f"<cannot load: {exc}>")

    def __repr__(self) -> str:
        return str(self)


def _details(job: Job) -> dict[str, Any]:
    """``Job.to_dict()`` plus the fields it leaves out, with the arguments and the
    result unpickled (as Python objects: ``_plain`` makes them JSON-ready)."""
    rec = job.record
    details = job.to_dict()
    details.update(
        backoff_base_s=rec.backoff_base_s,
        backoff_cap_s=rec.backoff_cap_s,
        by_value=rec.func is not None,
    )
    try:
        args, kwargs = job.args()
        details.update(args=args, kwargs=kwargs)
    except SerializationError as exc:
        details.update(args=Unloadable(exc), kwargs=Unloadable(exc))
    if rec.state is JobState.DONE and rec.result is not None:
        try:
            details["result"] = load_result(rec.result, job_id=rec.id)
        except SerializationError as exc:
            details["result"] = Unloadable(exc)
    return details


def _print_details(d: dict[str, Any], width: int | None) -> None:
    retries = d["max_retries"]
    lines = [
        ("id", d["id"]),
        ("name", d["name"]),
        ("state", d["state"]),
        ("priority", d["priority"]),
        ("attempts", f"{d['attempts']} (up to {retries + 1}: {retries} retries)"),
        ("timeout", "none" if d["timeout_s"] is None else f"{d['timeout_s']} s"),
        ("backoff", f"{d['backoff_base_s']} s, at most {d['backoff_cap_s']} s"),
        ("stored as", "value (pickled callable)" if d["by_value"] else "import path"),
        ("created at", _time(d["created_at_ms"])),
        ("run at", _time(d["run_at_ms"])),
        ("finished at", _time(d["finished_at_ms"])),
        ("args", _shown(d["args"], width)),
        ("kwargs", _shown(d["kwargs"], width)),
    ]
    if "result" in d:
        lines.append(("result", _shown(d["result"], width)))
    for label, value in lines:
        click.echo(f"{label + ':':<13}{value}")
    _print_errors(d["errors"])


def _print_errors(errors: list[dict[str, Any]]) -> None:
    click.echo(f"{'errors:':<13}{len(errors) or 'none'}")
    for number, error in enumerate(errors, 1):
        message = f"{error['type']}: {error['message']}" if error["message"] else error["type"]
        click.echo(
            f"  #{number} attempt {error['attempt']} at {_time(error['at_ms'])} "
            f"({error['kind']}): {message}"
        )
        for line in error["traceback"].rstrip().splitlines():
            click.echo(f"      {line}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@click.pass_obj
def stats(queue: Queue, as_json: bool) -> None:
    """Count jobs per state."""
    counts = queue.stats()
    if as_json:
        click.echo(_to_json(counts))
        return
    for state, count in counts.items():
        click.echo(f"{state + ':':<12}{count:>10}")


# ---- dead-letter queue --------------------------------------------------------------
@cli.group()
def dead() -> None:
    """Inspect, requeue or delete jobs that failed for good."""


@dead.command("list")
@click.option(
    "--limit",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help=f"Show at most N (>= 0) jobs, the oldest. [default: {DEFAULT_LIST_LIMIT}]",
)
@click.option("--all", "all_jobs", is_flag=True, help="Show every dead job (no limit).")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON array of job objects instead of a table."
)
@click.pass_obj
def dead_list(queue: Queue, limit: int | None, all_jobs: bool, as_json: bool) -> None:
    """List dead jobs, oldest first, with their last error (at most --limit)."""
    jobs = _listed(queue, None, JobState.DEAD.value, _list_limit(limit, all_jobs))
    if as_json:
        click.echo(_to_json([job.to_dict() for job in jobs]))
        return
    rows = [
        [
            job.id,
            job.name,
            str(job.attempts),
            _time(job.record.finished_at_ms),
            _clip(str(job.error or ""), 60),
        ]
        for job in jobs
    ]
    _table(["ID", "NAME", "ATTEMPTS", "DIED AT (UTC)", "LAST ERROR"], rows, empty="No dead jobs.")


@dead.command("requeue", short_help="Move dead jobs back to ready.")
@click.argument("job_id", required=False)
@click.option("--all", "all_jobs", is_flag=True, help="Requeue every dead job.")
@click.pass_obj
def dead_requeue(queue: Queue, job_id: str | None, all_jobs: bool) -> None:
    """Move dead job JOB_ID (or every dead job, with --all) back to ready.

    Attempts start again from zero.
    """
    if (job_id is None) == (not all_jobs):
        raise click.UsageError("give a JOB_ID or --all, not both")
    if job_id is not None:
        click.echo(f"Requeued {queue.requeue(job_id).id}")
        return
    ids = [job.id for job in queue.list(state=JobState.DEAD.value)]
    skipped = 0
    for dead_id in ids:
        try:
            queue.requeue(dead_id)
        except MpqueueError as exc:  # e.g. purged meanwhile, or an unreadable record
            click.echo(f"Skipped {dead_id}: {exc}", err=True)
            skipped += 1
    click.echo(f"Requeued {len(ids) - skipped} dead job(s).")
    if skipped:
        raise click.ClickException(f"{skipped} dead job(s) could not be requeued")


@dead.command("purge")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def dead_purge(queue: Queue, yes: bool) -> None:
    """Delete every dead job for good (asks first unless --yes)."""
    count = queue.stats().get("dead", 0)
    if count == 0:
        click.echo("No dead jobs.")
        return
    if not yes and not click.confirm(f"Delete {count} dead job(s) from {redact(queue.path)}?"):
        raise click.ClickException("nothing deleted")
    click.echo(f"Deleted {queue.purge_dead()} dead job(s).")


# ---- checking and copying the store -------------------------------------------------------
@cli.command(short_help="Check that the store is consistent and readable.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.pass_obj
def check(queue: Queue, as_json: bool) -> None:
    """Check every index of the store against its jobs, and that every stored record
    decodes (payloads and results are not loaded).

    Exit code 0: all well; 1: an index disagrees with the jobs; 2: something is
    corrupt (a record that cannot be decoded, or a page LMDB cannot read).
    """
    try:
        report = queue.check()
    except StoreCorrupt as exc:
        report = CheckReport(corrupt=[str(exc)])
        if not as_json:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(report.code)
    if as_json:
        click.echo(_to_json(report.as_dict()))
    else:
        for kind, problems in (("corrupt", report.corrupt), ("inconsistent", report.inconsistent)):
            for problem in problems:
                click.echo(f"{kind}: {problem}")
        click.echo(
            f"{report.jobs} job(s) checked: "
            + (
                "ok"
                if not report.code
                else f"{len(report.corrupt)} corrupt, {len(report.inconsistent)} inconsistent"
            )
        )
    sys.exit(report.code)


@cli.command(short_help="Copy the store to a new directory, also while servers run.")
@click.argument("dest", type=click.Path(file_okay=False))
@click.pass_obj
def backup(queue: Queue, dest: str) -> None:
    """Write a consistent, compacted copy of the LMDB store into DEST, a new or empty
    directory (created 0700, its file 0600). Servers may keep running. The copy opens
    as a store: `mpqueue --path DEST check`. A PostgreSQL store is backed up with
    pg_dump instead (exit code 2).
    """
    if is_url(queue.path):
        click.echo(
            "Error: a PostgreSQL store is backed up with the database's own tools: "
            "pg_dump (see the README)",
            err=True,
        )
        sys.exit(2)
    try:
        queue.backup(dest)
    except ConfigError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"Backed up {queue.path} to {dest}")


# ---- serve and demo (mpqueue/cli_serve.py) ---------------------------------------------
cli.add_command(serve_command)
cli.add_command(demo_command)


# ---- output helpers -------------------------------------------------------------------
def _to_json(value: Any) -> str:
    return json.dumps(value)


def _shown(value: Any, width: int | None) -> str:
    """The repr of an argument or result, cut to ``width`` characters (None: whole)."""
    text, cut = short_repr(value, width)
    return text + _cut_note(width) if cut else text


def _cut_note(width: int | None) -> str:
    return f"{CUT_MARK} (cut at {width:,} characters; --full shows all)"


def _plain(value: Any, width: int | None = None) -> Any:
    """Arguments and results may be any picklable object: keep what JSON can hold
    (containers, str, numbers, None) and show everything else by its repr; strings and
    reprs longer than ``width`` are cut (and say so)."""
    if isinstance(value, dict):
        return {
            k if isinstance(k, str) else _shown(k, width): _plain(v, width)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_plain(v, width) for v in value]
    if value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return plain_int(value)
    if isinstance(value, str):
        return value if width is None or len(value) <= width else value[:width] + _cut_note(width)
    return _shown(value, width)


def _time(ms: int | None) -> str:
    if ms is None:
        return "-"
    try:
        stamp = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    except (OverflowError, ValueError, OSError, TypeError):
        # A stored time no entry check lets in (older code, by hand): show the number.
        return f"{ms!r} ms"
    return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(header: list[str], rows: list[list[str]], *, empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def main() -> None:
    """Console-script entry point (``mpqueue``, ``python -m mpqueue``)."""
    cli.main(prog_name="mpqueue")
