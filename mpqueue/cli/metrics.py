"""``mpqueue metrics``: the store-wide Prometheus gauges, printed once (cron checks)."""

from __future__ import annotations

import click

from ..queue import Queue
from .group import cli


@cli.command(short_help="Print the store's Prometheus gauges once.")
@click.pass_obj
def metrics(queue: Queue) -> None:
    """Print the store-wide gauges (jobs by state, what is paused) in the Prometheus
    text format, as `serve --metrics-port` serves them, from one read. Needs the
    'metrics' extra: pip install 'mpqueue[metrics]'.
    """
    from ..metrics import render, store_registry  # imports prometheus_client

    click.echo(render(store_registry(queue.store)), nl=False)
