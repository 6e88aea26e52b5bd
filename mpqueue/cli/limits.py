"""``mpqueue limits``: the concurrency and rate limits in the store, and changing them."""

from __future__ import annotations

import click

from ..concurrency import QUEUE, TASK, Limit, check_concurrency, parse_key
from ..errors import ConfigError
from ..queue import Queue
from ..rates import Rate, parse_rate
from .group import cli
from .output import table, to_json

Change = tuple[str, str, str, object]  # kind, name, what ("concurrency"/"rate"/"remove"), value


@cli.command()
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KIND:NAME=N",
    help="Set a concurrency limit: task:NAME=N or queue:NAME=N (repeatable); "
    "a rate the limit has stays.",
)
@click.option(
    "--rate",
    "rates",
    multiple=True,
    metavar="KIND:NAME=N/UNIT",
    help="Set a rate limit: task:NAME=100/m, queue:NAME=5/s, 1000/h, 30/10s (repeatable); "
    "a concurrency the limit has stays.",
)
@click.option(
    "--remove",
    "removals",
    multiple=True,
    metavar="KIND:NAME",
    help="Remove a limit, concurrency and rate: task:NAME or queue:NAME (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the limits as JSON.")
@click.pass_obj
def limits(
    queue: Queue,
    settings: tuple[str, ...],
    rates: tuple[str, ...],
    removals: tuple[str, ...],
    as_json: bool,
) -> None:
    """List the concurrency and rate limits and how many of their jobs run now; with
    --set, --rate or --remove, change them first (see docs/queues.md, 'Concurrency
    limits' and 'Rate limits').

    \b
    Examples:
      mpqueue limits                              every limit and its running jobs
      mpqueue limits --set queue:heavy=4          at most 4 jobs of queue heavy at once
      mpqueue limits --rate task:tasks.fetch=100/m  at most 100 starts a minute
      mpqueue limits --remove task:tasks.load     no limit on that task any more
    """
    # Every argument checked before any is applied: bad input changes nothing.
    changes: list[Change] = [_parse(text, "--set", "N") for text in settings]
    changes += [_parse(text, "--rate", "N/UNIT") for text in rates]
    changes += [(*parse_key(text), "remove", None) for text in removals]
    for kind, name, what, value in changes:
        _apply(queue, kind, name, what, value)
    found = queue.limits()
    if as_json:
        click.echo(to_json([_as_dict(lim) for lim in found]))
        return
    rows = [
        [lim.kind, lim.name, _text(lim.concurrency), _text(lim.rate), str(lim.running)]
        for lim in found
    ]
    table(["KIND", "NAME", "LIMIT", "RATE", "RUNNING"], rows, empty="No limits.")


def _parse(text: str, option: str, form: str) -> Change:
    key, sep, value = text.rpartition("=")
    if not sep or not value.strip():
        raise ConfigError(
            f"{option} takes KIND:NAME={form} (task:NAME or queue:NAME), got {text!r}"
        )
    kind, name = parse_key(key)
    if option == "--rate":
        return kind, name, "rate", parse_rate(value.strip(), f"the rate of {key}")
    if not value.strip().isdigit():
        raise ConfigError(
            f"{option} takes KIND:NAME={form} (task:NAME or queue:NAME), got {text!r}"
        )
    return kind, name, "concurrency", check_concurrency(int(value), f"the limit of {key}")


def _apply(queue: Queue, kind: str, name: str, what: str, value: object) -> None:
    """One change; --set and --rate keep the other half of the limit as it is."""
    old = next((lim for lim in queue.limits() if (lim.kind, lim.name) == (kind, name)), None)
    concurrency = None if old is None else old.concurrency
    rate = None if old is None else old.rate
    if what == "concurrency":
        assert isinstance(value, int)
        concurrency = value
    elif what == "rate":
        assert isinstance(value, Rate)
        rate = value
    else:
        concurrency = rate = None
    assert kind in (TASK, QUEUE)
    if kind == TASK:
        queue.limit_task(name, concurrency=concurrency, rate=rate)
    else:
        queue.limit(name, concurrency=concurrency, rate=rate)


def _as_dict(lim: Limit) -> dict[str, object]:
    rate = lim.rate
    return {
        "kind": lim.kind,
        "name": lim.name,
        "concurrency": lim.concurrency,
        "rate": None if rate is None else str(rate),
        "rate_count": None if rate is None else rate.count,
        "rate_window_s": None if rate is None else rate.window_ms / 1000,
        "running": lim.running,
    }


def _text(value: object) -> str:
    return "-" if value is None else str(value)
