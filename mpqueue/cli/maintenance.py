"""Store maintenance commands: check and backup."""

from __future__ import annotations

import os
import sys

import click

from ..errors import ConfigError, StoreCorrupt
from ..location import is_url
from ..queue import Queue
from ..store.base import CheckReport
from .group import cli
from .output import to_json


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
    if not is_url(queue.path) and not os.path.lexists(os.path.expanduser(queue.path)):
        # Checking must not create the store it was asked about.
        raise ConfigError(f"no store at {queue.path!r}: nothing to check")
    try:
        report = queue.check()
    except StoreCorrupt as exc:
        report = CheckReport(corrupt=[str(exc)])
        if not as_json:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(report.code)
    if as_json:
        click.echo(to_json(report.as_dict()))
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
