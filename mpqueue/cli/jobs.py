"""Job commands: enqueue, list, show, stats and the dead-letter queue."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any

import click

from ..display import progress_text
from ..errors import ConfigError, JobNotFound, MpqueueError, SerializationError
from ..handle import Job
from ..history import Point, parse_duration
from ..limits import PRIORITY_MAX, PRIORITY_MIN
from ..location import redact
from ..queue import Queue
from ..queues import DEFAULT_QUEUE
from ..records import JobState, Progress, now_ms
from ..serializer import load_result
from .group import cli
from .output import clip, plain, shown, table, to_json, when

DEFAULT_LIST_LIMIT = 100  # `mpqueue list` shows this many jobs unless --limit/--all
SHOW_REPR_MAX = 2000  # `mpqueue show` cuts longer argument/result reprs (--full)
# What a workflow job receives as its first argument (JobRecord.pass_results).
INPUTS = {"one": "its dependency's result", "all": "its dependencies' results, as a list"}
SHOW_LINKS_MAX = 20  # `mpqueue show` lists this many dependencies and dependents (--full)
STATES = [state.value for state in JobState]


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
    "--expires",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Give up on the job (state 'expired') if it has not started SECONDS after "
    "now. [default: the task's own, else never]",
)
@click.option(
    "--key",
    default=None,
    help="A unique key: while a job of TASK with this key exists (not dead, "
    "cancelled or expired), print that job instead of adding another.",
)
@click.option(
    "--queue",
    "queue_name",
    default=None,
    metavar="QUEUE",
    help="The named queue to put it in (servers started with --queues serve only "
    "theirs). [default: the task's own, else 'default']",
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
    expires: float | None,
    key: str | None,
    queue_name: str | None,
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
    if queue_name is not None:
        found = found.options(queue=queue_name)
    job = queue.enqueue(
        found, tuple(positional), keywords, delay=delay, priority=priority, expires=expires, key=key
    )
    click.echo(to_json(job.to_dict()) if as_json else job.id)


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
    "--queue",
    "queue_name",
    default=None,
    metavar="QUEUE",
    help="Only jobs of this named queue (read by walking the listing: a rare queue "
    "among many jobs takes longer to list).",
)
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
    queue_name: str | None,
    limit: int | None,
    all_jobs: bool,
    as_json: bool,
) -> None:
    """List jobs, oldest first (at most --limit; says so on stderr when there are more)."""
    jobs = _listed(queue, name, state, _list_limit(limit, all_jobs), queue_name)
    reports = queue.store.progress([job.id for job in jobs]) if jobs else []
    if as_json:
        listed = [job.to_dict() | {"progress": _progress_dict(p)} for job, p in zip(jobs, reports)]
        click.echo(to_json(listed))
        return
    now = now_ms()
    named = any(job.record.queue != DEFAULT_QUEUE for job in jobs)  # else no QUEUE column
    rows = [
        [
            job.id,
            job.name,
            job.state,
            *([job.record.queue] if named else []),
            str(job.attempts),
            str(job.priority),
            when(job.record.run_at_ms),
            clip(progress_text(report, now), 40),
        ]
        for job, report in zip(jobs, reports)
    ]
    header = ["ID", "NAME", "STATE", *(["QUEUE"] if named else []), "ATTEMPTS", "PRIORITY"]
    header += ["RUN AT (UTC)", "PROGRESS"]
    table(header, rows, empty="No jobs.")


def _progress_dict(report: Progress | None) -> dict[str, Any] | None:
    return None if report is None else report.as_dict()


def _list_limit(limit: int | None, all_jobs: bool) -> int | None:
    """The --limit of a listing: the default unless --all (None: no limit)."""
    if all_jobs and limit is not None:
        raise click.UsageError("give --limit or --all, not both")
    return None if all_jobs else DEFAULT_LIST_LIMIT if limit is None else limit


def _listed(
    queue: Queue,
    name: str | None,
    state: str | None,
    limit: int | None,
    queue_name: str | None = None,
) -> list[Job]:
    """At most ``limit`` jobs; when the store has more, a note on stderr says so (stderr,
    so ``--json`` output stays one parseable array)."""
    more = None if limit is None else limit + 1
    jobs = queue.list(name=name, state=state, limit=more, queue=queue_name)
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
                details[key] = plain(details[key], width)
        click.echo(to_json(plain(details)))
    else:
        _print_details(queue, details, width)


class Unloadable(str):
    """Stands in for stored arguments or a result that cannot be unpickled."""

    def __new__(cls, exc: Exception) -> Unloadable:
        return super().__new__(cls, f"<cannot load: {exc}>")

    def __repr__(self) -> str:
        return str(self)


def _details(job: Job) -> dict[str, Any]:
    """``Job.to_dict()`` plus the fields it leaves out, with the arguments and the
    result unpickled (as Python objects: ``plain`` makes them JSON-ready)."""
    rec = job.record
    details = job.to_dict()
    details.update(
        backoff_base_s=rec.backoff_base_s,
        backoff_cap_s=rec.backoff_cap_s,
        by_value=rec.func is not None,
        pass_results=rec.pass_results,
        allow_failures=rec.allow_failures,
        dependents=job.dependents(),
        progress=_progress_dict(job.progress),
        retry_on=None if rec.retry_on is None else list(rec.retry_on),
        no_retry_on=list(rec.no_retry_on),
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


def _print_details(queue: Queue, d: dict[str, Any], width: int | None) -> None:
    retries = d["max_retries"]
    lines = [
        ("id", d["id"]),
        ("name", d["name"]),
        ("state", d["state"]),
        ("queue", d["queue"]),
        ("priority", d["priority"]),
        ("attempts", f"{d['attempts']} (up to {retries + 1}: {retries} retries)"),
        ("timeout", "none" if d["timeout_s"] is None else f"{d['timeout_s']} s"),
        ("backoff", f"{d['backoff_base_s']} s, at most {d['backoff_cap_s']} s"),
        *_retry_lists(d),
        ("stored as", "value (pickled callable)" if d["by_value"] else "import path"),
        ("created at", when(d["created_at_ms"])),
        ("run at", when(d["run_at_ms"])),
        ("finished at", when(d["finished_at_ms"])),
        ("args", shown(d["args"], width)),
        ("kwargs", shown(d["kwargs"], width)),
    ]
    if d["key"] is not None:
        lines.insert(3, ("key", d["key"]))
    if d["pass_results"]:
        inputs = INPUTS[d["pass_results"]] + (", failures too" if d["allow_failures"] else "")
        lines.append(("inputs", inputs))
    if d["progress"] is not None:
        lines.append(("progress", progress_text(Progress(**d["progress"]), now_ms())))
    if "result" in d:
        lines.append(("result", shown(d["result"], width)))
    for label, value in lines:
        click.echo(f"{label + ':':<13}{value}")
    _print_links(queue, "depends on", d["depends_on"], width)
    _print_links(queue, "dependents", d["dependents"], width)
    _print_errors(d["errors"])


def _retry_lists(d: dict[str, Any]) -> list[tuple[str, str]]:
    """The lines of a job's retry lists, the ones it has (most jobs have none)."""
    lines = []
    if d["retry_on"] is not None:
        lines.append(("retry on", ", ".join(d["retry_on"]) or "nothing (no exception)"))
    if d["no_retry_on"]:
        lines.append(("no retry on", ", ".join(d["no_retry_on"])))
    return lines


def _print_links(queue: Queue, label: str, job_ids: list[str], width: int | None) -> None:
    """A job's dependencies or dependents, each with its state (one read for all)."""
    if not job_ids:
        return
    click.echo(f"{label + ':':<13}{len(job_ids)}")
    shown_ids = job_ids if width is None else job_ids[:SHOW_LINKS_MAX]
    for job_id, rec in zip(shown_ids, queue.store.get_many(shown_ids)):
        state = "gone (deleted or expired)" if rec is None else f"{rec.state.value:<10} {rec.name}"
        click.echo(f"  {job_id}  {state}")
    if len(shown_ids) < len(job_ids):
        click.echo(f"  ... and {len(job_ids) - len(shown_ids)} more (--full lists them all)")


def _print_errors(errors: list[dict[str, Any]]) -> None:
    click.echo(f"{'errors:':<13}{len(errors) or 'none'}")
    for number, error in enumerate(errors, 1):
        message = f"{error['type']}: {error['message']}" if error["message"] else error["type"]
        click.echo(
            f"  #{number} attempt {error['attempt']} at {when(error['at_ms'])} "
            f"({error['kind']}): {message}"
        )
        for line in error["traceback"].rstrip().splitlines():
            click.echo(f"      {line}")


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    try:
        return None if value is None else parse_duration(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
@click.option(
    "--history",
    "history_ms",
    callback=_duration,
    metavar="DURATION",
    help="Print the depth by state over the last DURATION (30m, 1h, 7d; at most "
    "30d) that servers sampled, oldest first: 10 s points for the last day, 5 min "
    "points beyond.",
)
@click.pass_obj
def stats(queue: Queue, as_json: bool, history_ms: int | None) -> None:
    """Count jobs per state and queue, and say what is paused ('mpqueue pause').

    A paused task's queued jobs count as ready: they wait to be claimed. "oldest ready"
    is how long the ready job due first has waited (a paused task's are left out).
    "queues" lists the ready and running jobs of each named queue (and 'default').
    With --json, "paused" holds {"all": ..., "tasks": [...]}, "oldest_ready_age_s"
    the age in seconds (null when none is ready) and "queues" {queue: {"ready": n,
    "processing": m}} beside the counts. With --history, the sampled history instead
    (--json: a list of {"at", "at_ms", "counts"}).
    """
    if history_ms is not None:
        _print_history(queue.history(history_ms), as_json)
        return
    gauges = queue.gauges()
    age = gauges.oldest_ready_age_s(now_ms())
    if as_json:
        fields = {
            "paused": gauges.paused.as_dict(),
            "oldest_ready_age_s": age,
            "queues": gauges.queues,
        }
        click.echo(to_json({**gauges.counts, **fields}))
        return
    for state, count in gauges.counts.items():
        click.echo(f"{state + ':':<12}{count:>10}")
    click.echo(f"{'paused:':<12}{gauges.paused.describe()}")
    click.echo(f"{'oldest ready:':<12} {'none' if age is None else f'due {age:.1f} s ago'}")
    if set(gauges.queues) != {DEFAULT_QUEUE}:  # named queues in use: their depths
        click.echo("queues:")
        rows = [[name, str(d["ready"]), str(d["processing"])] for name, d in gauges.queues.items()]
        table(["QUEUE", "READY", "PROCESSING"], rows, empty="")


def _print_history(points: list[Point], as_json: bool) -> None:
    if as_json:
        click.echo(to_json([{"at": when(at), "at_ms": at, "counts": c} for at, c in points]))
        return
    if not points:
        click.echo("no history in that time: no server sampled this store then")
        return
    states = list(dict.fromkeys(state for _, counts in points for state in counts))
    rows = [[when(at)] + [str(counts.get(s, 0)) for s in states] for at, counts in points]
    table(["time", *states], rows, empty="")


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
        click.echo(to_json([job.to_dict() for job in jobs]))
        return
    rows = [
        [
            job.id,
            job.name,
            str(job.attempts),
            when(job.record.finished_at_ms),
            clip(str(job.error or ""), 60),
        ]
        for job in jobs
    ]
    table(["ID", "NAME", "ATTEMPTS", "DIED AT (UTC)", "LAST ERROR"], rows, empty="No dead jobs.")


@dead.command("requeue", short_help="Move dead jobs back to ready (now or later).")
@click.argument("job_id", required=False)
@click.option("--all", "all_jobs", is_flag=True, help="Requeue every dead job.")
@click.option(
    "--delay",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Run them SECONDS from now: they wait in the scheduled queue. [default: now]",
)
@click.option(
    "--at",
    "at_text",
    default=None,
    metavar="TIME",
    help="Run them at TIME, an ISO date and time (UTC unless it says otherwise), "
    "e.g. 2026-01-02T02:00. [default: now]",
)
@click.pass_obj
def dead_requeue(
    queue: Queue, job_id: str | None, all_jobs: bool, delay: float | None, at_text: str | None
) -> None:
    """Move dead job JOB_ID (or every dead job, with --all) back to ready, or with
    --delay/--at to the scheduled queue to run then (a scheduled re-drive).

    Attempts start again from zero.
    """
    if (job_id is None) == (not all_jobs):
        raise click.UsageError("give a JOB_ID or --all, not both")
    at = None if at_text is None else _utc_time(at_text)
    if job_id is not None:
        click.echo(f"Requeued {queue.requeue(job_id, delay=delay, at=at).id}")
        return
    ids = [job.id for job in queue.list(state=JobState.DEAD.value)]
    skipped = 0
    for dead_id in ids:
        try:
            queue.requeue(dead_id, delay=delay, at=at)
        except MpqueueError as exc:  # e.g. purged meanwhile, or an unreadable record
            click.echo(f"Skipped {dead_id}: {exc}", err=True)
            skipped += 1
    click.echo(f"Requeued {len(ids) - skipped} dead job(s).")
    if skipped:
        raise click.ClickException(f"{skipped} dead job(s) could not be requeued")


def _utc_time(text: str) -> datetime:
    """An ISO date and time; UTC unless it names its offset. ConfigError otherwise."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(
            f"--at must be an ISO date and time, e.g. 2026-01-02T02:00; got {text!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


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
