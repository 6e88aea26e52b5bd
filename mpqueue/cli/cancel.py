"""``mpqueue cancel``: cancel jobs by id, or in bulk by task and state."""

from __future__ import annotations

import click

from ..cancellation import CANCELLABLE, CancelReport
from ..limits import REASON_MAX
from ..queue import Queue
from .group import cli
from .output import to_json

MISSING_SHOWN = 10  # ids of missing jobs named in the error line


@cli.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("--name", metavar="TASK", help="Cancel the jobs of TASK (a task's full name).")
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([state.value for state in CANCELLABLE]),
    help="Cancel only jobs in this state; repeat for several. "
    "[default: every state a job has not ended in]",
)
@click.option(
    "--reason",
    metavar="TEXT",
    help=f"Why (at most {REASON_MAX} characters); kept in each job's history with who "
    "cancelled it.",
)
@click.option("--dry-run", is_flag=True, help="Change nothing; say what would be cancelled.")
@click.option("--json", "as_json", is_flag=True, help="Print the job ids by outcome as JSON.")
@click.pass_obj
def cancel(
    queue: Queue,
    job_ids: tuple[str, ...],
    name: str | None,
    states: tuple[str, ...],
    reason: str | None,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Cancel jobs: each JOB_ID, or every job of --name TASK and/or in --state.

    A waiting, scheduled or ready job ends 'cancelled' at once. A running job is
    stopped by its server: mpqueue.Cancelled is raised inside it, its worker process is
    killed if it has not stopped within the server's --timeout-grace, and it ends
    'cancelled' (a job that finishes first keeps its result). Jobs that have ended
    are left alone. Exits 1 if a JOB_ID names no job.

    \b
    Examples:
      mpqueue cancel 01a2b3...                       one job
      mpqueue cancel --name tasks.resize --dry-run   how many would go
      mpqueue cancel --name tasks.resize --state ready --reason "wrong size"
    """
    if job_ids and (name is not None or states):
        raise click.UsageError("give JOB_IDs or --name/--state, not both")
    if not job_ids and name is None and not states:
        raise click.UsageError("say what to cancel: JOB_IDs, --name TASK or --state STATE")
    state = list(states) if states else None
    if job_ids:
        report = queue.cancel(*job_ids, reason=reason, dry_run=dry_run)
    else:
        report = queue.cancel(name=name, state=state, reason=reason, dry_run=dry_run)
    if as_json:
        click.echo(to_json({"dry_run": dry_run, "counts": report.counts(), **report.as_dict()}))
    else:
        click.echo(_summary(report, dry_run))
    if report.missing:
        shown = ", ".join(report.missing[:MISSING_SHOWN])
        more = len(report.missing) - MISSING_SHOWN
        raise click.ClickException(
            f"no job with id {shown}" + (f" (and {more} more)" if more > 0 else "")
        )


def _summary(report: CancelReport, dry_run: bool) -> str:
    counts = report.counts()
    verb = "Would cancel" if dry_run else "Cancelled"
    parts = [f"{verb} {counts['cancelled']} queued job(s)"]
    if counts["requested"]:
        stop = "would ask" if dry_run else "asked"
        parts.append(f"{stop} the servers of {counts['requested']} running job(s) to stop them")
    if counts["finished"]:
        parts.append(f"{counts['finished']} had ended already")
    return "; ".join(parts) + "."
