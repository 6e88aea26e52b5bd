"""The ``mpqueue`` command line: parse options, call the ``Queue`` API, print.

The group builds one ``Queue`` from ``--path``/``--mode`` and hands it to every
subcommand through the click context. Every ``MpqueueError`` and every usage error
is reported as one ``Error: ...`` line on stderr: exit code 1 for errors from the
queue, 2 for bad command-line input. Input is checked before anything is written,
so a rejected command leaves the store as it was.
"""

from __future__ import annotations

from . import (  # noqa: F401  (their commands join the group)
    cancel,
    dashboard,
    jobs,
    limits,
    maintenance,
    metrics,
    pause,
    periodic,
    top,
)
from .group import cli
from .serve import demo_command, serve_command

cli.add_command(serve_command)
cli.add_command(demo_command)


def main() -> None:
    """Console-script entry point (``mpqueue``, ``python -m mpqueue``)."""
    cli.main(prog_name="mpqueue")
