"""``mpqueue periodic``: list, pause and resume the periodic schedules of a store."""

from __future__ import annotations

from typing import Any

import click

from ..periodic import report
from ..queue import Queue
from ..records import now_ms
from .group import cli
from .output import table, to_json, when


@cli.group()
def periodic() -> None:
    """Periodic schedules (@queue.periodic): what servers enqueue on a clock.

    Servers whose --import modules define a schedule declare it in the store at
    start and enqueue each of its slots once, however many servers run. A schedule
    that no running server defines any more shows as retired and is not fired.
    """


@periodic.command("list")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the schedules as a JSON list (one object per schedule).",
)
@click.pass_obj
def list_schedules(queue: Queue, as_json: bool) -> None:
    """Show each schedule: its spec, next and last run, the state of the job of its
    last run (done, dead, ...; 'gone' once deleted), and whether it is paused or
    retired (no running server defines it).

    Times are UTC. A paused or retired schedule has no next run.
    """
    rows = report(queue.store, now_ms())
    if as_json:
        click.echo(to_json(rows))
        return
    table(
        ["NAME", "SPEC", "NEXT RUN", "LAST RUN", "LAST OUTCOME", "STATUS"],
        [_line(row) for row in rows],
        empty="No periodic schedules in this store.",
    )


def _line(row: dict[str, Any]) -> list[str]:
    status = "retired" if row["retired"] else "paused" if row["paused"] else "active"
    if row["retired"] and row["paused"]:
        status = "retired, paused"
    next_run = "-" if row["retired"] else when(row["next_due_ms"])
    return [
        row["name"],
        row["spec"] + ("" if row["catch_up"] == "latest" else f", catch_up={row['catch_up']}"),
        next_run,
        when(row["last_fired_ms"]),
        row["last_outcome"] or "-",
        status,
    ]


@periodic.command("pause")
@click.argument("name")
@click.pass_obj
def pause_schedule(queue: Queue, name: str) -> None:
    """Stop servers enqueueing schedule NAME (its full name, as 'periodic list'
    shows it). Jobs it enqueued already are left as they are."""
    changed = queue.pause_schedule(name)
    click.echo(f"Paused {name}." if changed else f"{name} was already paused; nothing changed.")


@periodic.command("resume")
@click.argument("name")
@click.pass_obj
def resume_schedule(queue: Queue, name: str) -> None:
    """Undo 'periodic pause NAME': servers enqueue it again, from its first slot after
    now (the slots of the pause are skipped)."""
    changed = queue.resume_schedule(name)
    click.echo(f"Resumed {name}." if changed else f"{name} was not paused; nothing changed.")
