"""The dashboard's Starlette app: routes, the safety checks, the templates.

Safety, on every request: with a token, a request must carry it (``Authorization:
Bearer``, or the cookie a first visit with ``?token=`` sets); every state change is a
POST carrying this process's CSRF token, from this origin; ``read_only`` refuses every
POST. Templates escape everything (Jinja2 autoescape), and the Content-Security-Policy
allows this app's own script and style only, so text from the store can never run as
a script in a browser.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import ConfigError, MpqueueError
from ..records import JobState, is_job_id, now_ms
from ..store.base import Store
from . import actions, views

HERE = Path(__file__).parent
COOKIE = "mpqueue_dashboard"
TOKEN_ENV = "MPQUEUE_DASHBOARD_TOKEN"
REFRESH_S = 5  # the live parts of the overview and servers pages poll this often
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class Figures:
    """The overview's figures, shown for up to ``max_age_s`` after they were read.

    Counting the jobs of a big PostgreSQL table scans them (a million ready jobs: about
    0.7 s for the counts by state and by queue), so a page shows the last figures read,
    and a background thread reads the next ones once those are older than ``max_age_s``
    (a store handle may be shared by threads). The first figures are read as the
    dashboard starts (``warm``), so no page waits for a count."""

    def __init__(self, read: Callable[[], dict[str, Any]], max_age_s: float):
        self._read, self._max_age_s = read, max_age_s
        self._lock = threading.Lock()
        self._value: dict[str, Any] | None = None
        self._at = 0.0
        self._reading = False

    def get(self) -> dict[str, Any]:
        with self._lock:
            if self._value is None:
                self._value, self._at = self._read(), time.monotonic()
            elif time.monotonic() - self._at >= self._max_age_s and not self._reading:
                self._reading = True
                threading.Thread(
                    target=self._refresh, name="dashboard-figures", daemon=True
                ).start()
            return self._value

    def warm(self) -> None:
        """Read the first figures now, before any page asks; a store failing now leaves
        it to the first page, which shows the error."""
        try:
            self.get()
        except Exception:  # the first page reads again, and reports it
            pass

    def _refresh(self) -> None:
        try:
            value = self._read()
        except Exception:  # the store is failing: keep the last figures, try again later
            value = None
        with self._lock:
            if value is not None:
                self._value, self._at = value, time.monotonic()
            self._reading = False


@dataclass
class Settings:
    token: str | None = None
    read_only: bool = False
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def create_app(store: Store, *, token: str | None = None, read_only: bool = False) -> Starlette:
    """The dashboard over ``store`` (which the caller opens and closes)."""
    settings = Settings(token=token or None, read_only=read_only)
    templates = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )

    def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        base = {
            "request": request,
            "csrf": settings.csrf,
            "read_only": settings.read_only,
            "message": request.query_params.get("msg", ""),
            "refresh_s": REFRESH_S,
            "path": request.url.path,
        }
        page = templates.get_template(name).render(**base, **context)
        return HTMLResponse(page, status_code=status)

    def fragment(request: Request) -> bool:
        return request.query_params.get("fragment") == "1"

    figures = Figures(lambda: views.overview(store), REFRESH_S)
    figures.warm()

    async def overview(request: Request) -> Response:
        data = figures.get()
        return render(
            request, "_overview_live.html" if fragment(request) else "overview.html", **data
        )

    async def jobs(request: Request) -> Response:
        params = request.query_params
        wanted = params.get("id", "").strip()
        if wanted:
            if not is_job_id(wanted):
                raise ConfigError(f"not a job id: {wanted[:80]!r}")
            return RedirectResponse(f"/jobs/{wanted}", status_code=303)
        state = params.get("state") or None
        if state is not None and state not in views.STATES:
            raise ConfigError(f"no state {state[:40]!r}")
        filters = {k: params.get(k) or None for k in ("task", "queue")}
        listed, page = views.jobs_page(
            store, state, filters["task"], filters["queue"], params.get("before") or None
        )
        more = None
        if page.next is not None:
            kept = {k: v for k, v in (("state", state), *filters.items()) if v}
            more = "/jobs?" + urlencode({**kept, "before": page.next})
        return render(
            request,
            "jobs.html",
            rows=listed,
            more=more,
            state=state,
            states=views.STATES,
            task=filters["task"],
            queue=filters["queue"],
        )

    async def job(request: Request) -> Response:
        job_id = request.path_params["job_id"]
        data = views.job(store, job_id) if is_job_id(job_id) else None
        if data is None:
            return render(request, "error.html", 404, error=f"no job with id {job_id[:80]!r}")
        return render(request, "job.html", **data)

    async def dead(request: Request) -> Response:
        params = request.query_params
        task = params.get("task") or None
        listed, page = views.jobs_page(store, "dead", task, None, params.get("before") or None)
        more = None
        if page.next is not None:
            more = "/dead?" + urlencode({**({"task": task} if task else {}), "before": page.next})
        return render(request, "dead.html", rows=listed, more=more, task=task)

    async def servers(request: Request) -> Response:
        listed = views.servers(store)
        name = "_servers_live.html" if fragment(request) else "servers.html"
        return render(request, name, servers=listed)

    async def periodic(request: Request) -> Response:
        return render(request, "periodic.html", schedules=views.periodic(store))

    async def favicon(request: Request) -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=301)

    # ---- state changes (POST only; see guard) -------------------------------------
    def when_of(form: Any) -> int | None:
        return actions.run_at(
            str(form.get("when", "now")),
            str(form.get("at", "")),
            str(form.get("minutes", "")),
            now_ms(),
        )

    async def act(request: Request) -> Response:
        form = await request.form()
        if not _same(str(form.get("csrf", "")), settings.csrf):
            return PlainTextResponse("refused: missing or wrong CSRF token", 403)
        action = request.path_params["action"]
        ids = [str(v) for v in form.getlist("ids")]
        if action == "requeue":
            said = actions.requeue(store, ids, when_of(form))
        elif action == "requeue-task":
            said = actions.requeue_task(store, str(form.get("task", "")), when_of(form))
        elif action == "delete":
            said = actions.delete(store, ids)
        elif action == "cancel":
            said = actions.cancel(store, actions.job_ids(ids)[0])
        elif action == "purge":
            said = actions.purge(store)
        else:
            return render(request, "error.html", 404, error=f"no action {action[:40]!r}")
        back = str(form.get("back", "/"))
        if not back.startswith("/") or back.startswith("//"):
            back = "/"
        joiner = "&" if "?" in back else "?"
        return RedirectResponse(f"{back}{joiner}{urlencode({'msg': said})}", status_code=303)

    async def guard(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refused = _refusal(request, settings)
        if refused is not None:
            return _headers(refused)
        if settings.token and request.query_params.get("token"):
            # a first visit with ?token=: keep it in a cookie, and drop it from the URL
            response: Response = RedirectResponse(request.url.path, status_code=303)
            response.set_cookie(COOKIE, settings.token, httponly=True, samesite="strict")
            return _headers(response)
        try:
            response = await call_next(request)
        except MpqueueError as exc:
            response = render(request, "error.html", 400, error=str(exc))
        return _headers(response)

    app = Starlette(
        routes=[
            Route("/", overview),
            Route("/jobs", jobs),
            Route("/jobs/{job_id}", job),
            Route("/dead", dead),
            Route("/servers", servers),
            Route("/periodic", periodic),
            Route("/actions/{action}", act, methods=["POST"]),
            Route("/favicon.ico", favicon),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=guard)],
    )
    return app


# The names a browser uses for a loopback dashboard. Without a token, a request naming
# any other host is refused: a page elsewhere could point its own name at 127.0.0.1
# (DNS rebinding) and read the dashboard, CSRF token and all, as its own origin.
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _refusal(request: Request, settings: Settings) -> Response | None:
    """Why this request is refused (a response), or None: the token (or, without one,
    a host name that is not loopback), read-only mode, a POST from another origin."""
    if not settings.token and (request.url.hostname or "") not in LOOPBACK_NAMES:
        return PlainTextResponse("refused: without a token, only a loopback address", 403)
    if settings.token:
        bearer = request.headers.get("authorization", "")
        given = bearer[7:] if bearer.lower().startswith("bearer ") else None
        given = given or request.cookies.get(COOKIE) or request.query_params.get("token")
        if not _same(given, settings.token):
            return PlainTextResponse("refused: this dashboard needs its token", 401)
    if request.method not in ("GET", "HEAD", "POST"):
        return PlainTextResponse("refused: method not allowed", 405)
    if request.method == "POST":
        if settings.read_only:
            return PlainTextResponse("refused: the dashboard is read-only", 403)
        origin = request.headers.get("origin")
        host = request.headers.get("host", "")
        if origin is not None and origin.split("://", 1)[-1] != host:
            return PlainTextResponse("refused: a state change from another origin", 403)
    return None


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    # same-origin, not no-referrer: under no-referrer a browser sends "Origin: null"
    # with a form's POST, which the origin check must refuse
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


__all__ = ["JobState", "Settings", "create_app"]
