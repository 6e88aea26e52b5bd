"""``mpqueue pause`` and ``mpqueue resume``: stop and restart claims of a task's jobs."""

from __future__ import annotations

import click

from ..pausing import PauseChange, Paused
from ..queue import Queue
from .group import cli
from .output import to_json

_TASK = click.argument("task", required=False, metavar="[TASK]")
_JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print what changed and what is paused as JSON."
)


@cli.command()
@_TASK
@_JSON
@click.pass_obj
def pause(queue: Queue, task: str | None, as_json: bool) -> None:
    """Stop servers claiming TASK's jobs (a task's full name; none given: every job).

    Running jobs finish; queued ones wait, held out of what servers claim, until
    'mpqueue resume'.

    \b
    Examples:
      mpqueue pause tasks.resize     hold one task's jobs
      mpqueue pause                  hold every job
    """
    _report(queue.pause(task), queue.paused(), as_json)


@cli.command()
@_TASK
@_JSON
@click.pass_obj
def resume(queue: Queue, task: str | None, as_json: bool) -> None:
    """Undo 'mpqueue pause [TASK]': servers claim its jobs again.

    Resuming what is not paused changes nothing, and says so.
    """
    _report(queue.resume(task), queue.paused(), as_json)


def _report(change: PauseChange, now: Paused, as_json: bool) -> None:
    if as_json:
        click.echo(to_json({**change.as_dict(), "now_paused": now.as_dict()}))
        return
    what = "every job" if change.task is None else change.task
    if change.changed:
        click.echo(f"{'Paused' if change.paused else 'Resumed'} {what}.")
    else:
        click.echo(f"{what} was {'already' if change.paused else 'not'} paused; nothing changed.")
    click.echo(f"Paused now: {now.describe()}")
