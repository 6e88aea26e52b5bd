"""``mpqueue limits``: the concurrency limits in the store, and setting or removing one."""

from __future__ import annotations

import click

from ..concurrency import QUEUE, TASK, check_concurrency, parse_key
from ..errors import ConfigError
from ..queue import Queue
from .group import cli
from .output import table, to_json


@cli.command()
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KIND:NAME=N",
    help="Set a limit: task:NAME=N or queue:NAME=N (repeatable).",
)
@click.option(
    "--remove",
    "removals",
    multiple=True,
    metavar="KIND:NAME",
    help="Remove a limit: task:NAME or queue:NAME (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the limits as JSON.")
@click.pass_obj
def limits(
    queue: Queue, settings: tuple[str, ...], removals: tuple[str, ...], as_json: bool
) -> None:
    """List the concurrency limits and how many of their jobs run now; with --set or
    --remove, change them first (see docs/queues.md, 'Concurrency limits').

    \b
    Examples:
      mpqueue limits                              every limit and its running jobs
      mpqueue limits --set queue:heavy=4          at most 4 jobs of queue heavy at once
      mpqueue limits --remove task:tasks.load     no limit on that task any more
    """
    # Every argument checked before any is applied: bad input changes nothing.
    changes: list[tuple[str, str, int | None]] = [_parse_setting(text) for text in settings]
    changes += [(*parse_key(text), None) for text in removals]
    for kind, name, concurrency in changes:
        if kind == TASK:
            queue.limit_task(name, concurrency=concurrency)
        else:
            queue.limit(name, concurrency=concurrency)
    found = queue.limits()
    if as_json:
        click.echo(
            to_json(
                [
                    {
                        "kind": lim.kind,
                        "name": lim.name,
                        "concurrency": lim.concurrency,
                        "running": lim.running,
                    }
                    for lim in found
                ]
            )
        )
        return
    rows = [[lim.kind, lim.name, str(lim.concurrency), str(lim.running)] for lim in found]
    table(["KIND", "NAME", "LIMIT", "RUNNING"], rows, empty="No concurrency limits.")


def _parse_setting(text: str) -> tuple[str, str, int]:
    key, sep, value = text.rpartition("=")
    if not sep or not value.strip().isdigit():
        raise ConfigError(f"--set takes KIND:NAME=N (task:NAME or queue:NAME), got {text!r}")
    kind, name = parse_key(key)
    concurrency = check_concurrency(int(value), f"the limit of {key}")
    assert kind in (TASK, QUEUE) and concurrency is not None
    return kind, name, concurrency
