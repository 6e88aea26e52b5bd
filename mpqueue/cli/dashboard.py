"""``mpqueue dashboard``: the web dashboard (``mpqueue/dashboard/``), served by uvicorn.

Starlette, Jinja2 and uvicorn come with the ``dashboard`` extra and are imported only
when this command runs.
"""

from __future__ import annotations

import ipaddress

import click

from ..errors import ConfigError
from ..queue import Queue
from .group import cli

TOKEN_ENV = "MPQUEUE_DASHBOARD_TOKEN"  # as mpqueue/dashboard/app.py names it
NEEDS_EXTRA = "the dashboard needs its extra: pip install 'mpqueue[dashboard]'"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option(
    "--path",
    "location",
    default=None,
    metavar="DIR|URL",
    help="The store to show: an LMDB directory or a postgresql:// URL. "
    "[default: the group's --path]",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="The port."
)
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    show_envvar=True,
    default=None,
    help="A secret every request must carry (needed to listen on any address but "
    "loopback). Open http://HOST:PORT/?token=TOKEN once; a cookie keeps it.",
)
@click.option("--read-only", is_flag=True, help="Show everything, change nothing.")
@click.pass_obj
def dashboard(
    queue: Queue, location: str | None, host: str, port: int, token: str | None, read_only: bool
) -> None:
    """Serve the web dashboard: overview, jobs, dead letters, servers, periodic.

    It shows arguments and results from their text previews and never unpickles
    anything from the store. Every change is a POST with a CSRF token; --read-only
    refuses them all.
    """
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"listening on {host} needs a token: pass --token or set ${TOKEN_ENV} "
            "(or listen on 127.0.0.1)"
        )
    try:
        import uvicorn

        from ..dashboard.app import create_app
    except ImportError:
        raise ConfigError(NEEDS_EXTRA) from None
    shown = Queue(location) if location is not None else queue
    try:
        app = create_app(shown.store, token=token, read_only=read_only)
        click.echo(
            f"mpqueue dashboard on http://{host}:{port}/"
            + (" (read-only)" if read_only else "")
            + (" (token required)" if token else ""),
            err=True,
        )
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        if shown is not queue:
            shown.close()
