"""The ``mpqueue`` click group: its options, the ``Queue`` it hands every command, and
the rule that every error is one ``Error: ...`` line."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from .. import __version__
from ..errors import MpqueueError
from ..location import DEFAULT_MODE, DEFAULT_PATH, MODES, PATH_ENV, check_shared_location
from ..queue import Queue


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
