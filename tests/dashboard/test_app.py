"""The dashboard app through Starlette's TestClient, on LMDB, PostgreSQL and memory:
every page, escaping, never unpickling, the token, CSRF, read-only mode, and each
action's effect on the store (and refusals leaving it as it was)."""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the dashboard tests need the 'dashboard' extra")

from starlette.testclient import TestClient

from mpqueue import Queue
from mpqueue.dashboard.app import COOKIE, create_app
from mpqueue.records import JobRecord, JobState, new_job_id, now_ms

from ..support.helpers import claim_all, failed, wait_until
from ..support.pg_helpers import pg_url  # noqa: F401
from .helpers import SCRIPT, csrf_of, populate

PAGES = ("/", "/jobs", "/dead", "/servers", "/periodic")


@pytest.fixture(params=["lmdb", "postgres", "memory"])
def queue(request, tmp_path) -> Iterator[Queue]:
    if request.param == "postgres":
        location = request.getfixturevalue("pg_url")
    elif request.param == "memory":
        location = f"memory://{tmp_path.name}"
    else:
        location = str(tmp_path / "store")
    with Queue(location) as q:
        yield q


@pytest.fixture
def jobs(queue) -> dict[str, str]:
    return populate(queue)


def client(queue, base_url: str = "http://127.0.0.1:8080", **options) -> TestClient:
    app = create_app(queue.store, **options)
    return TestClient(app, base_url=base_url, follow_redirects=False)


def test_every_page_answers(queue, jobs):
    web = client(queue)
    for page in PAGES:
        reply = web.get(page)
        assert reply.status_code == 200, (page, reply.text)
        assert "Content-Security-Policy" in reply.headers
    for what in ("done", "dead", "processing", "ready", "scheduled"):
        reply = web.get(f"/jobs/{jobs[what]}")
        assert reply.status_code == 200 and what in reply.text
    assert '<pre id="result">(no preview)</pre>' in web.get(f"/jobs/{jobs['done']}").text
    ran = web.get(f"/jobs/{jobs['ran']}").text
    assert '<pre id="result">42</pre>' in ran and '<pre id="arguments">20, 22</pre>' in ran
    assert web.get("/?fragment=1").text.lstrip().startswith("<h2>")
    assert web.get("/servers?fragment=1").status_code == 200
    assert web.get("/static/dashboard.js").status_code == 200
    assert web.get(f"/jobs/{new_job_id()}").status_code == 404


def test_text_from_the_store_is_escaped(queue, jobs):
    web = client(queue)
    for page in ("/jobs", "/dead", f"/jobs/{jobs['dead']}"):
        html = web.get(page).text
        assert SCRIPT not in html, page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, page
    assert web.get("/jobs?state=<b>").status_code == 400
    assert "<b>" not in web.get("/jobs?state=<b>").text


def test_the_dashboard_never_unpickles(queue, tmp_path):
    proof = tmp_path / "unpickled"

    class Plant:
        def __reduce__(self):
            return (Path.touch, (proof,))

    evil = pickle.dumps(Plant())
    rec = JobRecord(
        id=new_job_id(),
        name="tests.support.tasks.add",
        state=JobState.READY,
        payload=b"\x01" + evil,
        func=evil,
        created_at_ms=now_ms(),
        run_at_ms=now_ms(),
    )
    queue.store.add([rec])
    web = client(queue)
    for page in (*PAGES, f"/jobs/{rec.id}"):
        assert web.get(page).status_code == 200
    assert "(no preview)" in web.get(f"/jobs/{rec.id}").text
    assert not proof.exists()


def test_jobs_page_filters_searches_and_pages_by_cursor(queue, jobs):
    add = queue.task_by_name("tests.support.tasks.add")
    made = [j.id for j in add.map([(i, i) for i in range(120)])]
    web = client(queue)
    seen, url = [], "/jobs?task=tests.support.tasks.add&state=ready"
    while url:
        html = web.get(url).text
        seen += re.findall(r'<td><a href="/jobs/([0-9a-f]{32})">', html)
        found = re.search(r'id="next" href="([^"]+)"', html)
        url = found.group(1).replace("&amp;", "&") if found else None
    assert seen == sorted([*made, jobs["ready"]], reverse=True)
    reply = web.get(f"/jobs?id={jobs['dead']}")
    assert reply.status_code == 303 and reply.headers["location"] == f"/jobs/{jobs['dead']}"
    assert web.get("/jobs?id=nope").status_code == 400
    assert jobs["dead"] in web.get("/jobs?state=dead").text
    assert jobs["dead"] not in web.get("/jobs?queue=other").text


# ---- safety ----------------------------------------------------------------------
def test_a_token_is_needed_on_every_request(queue, jobs):
    web = client(queue, token="s3cret")
    for page in (*PAGES, "/static/dashboard.js"):
        assert web.get(page).status_code == 401, page
    assert web.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert web.get("/", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = web.get("/?token=s3cret")
    assert first.status_code == 303 and first.headers["location"] == "/"
    assert web.cookies.get(COOKIE) == "s3cret"
    csrf = csrf_of(web.get("/dead").text)
    web.cookies.clear()
    reply = web.post("/actions/requeue", data={"csrf": csrf, "ids": jobs["dead"]})
    assert reply.status_code == 401
    assert queue.store.get(jobs["dead"]).state is JobState.DEAD


def test_without_a_token_only_a_loopback_name_is_served(queue, jobs):
    for name in ("http://localhost:8080", "http://[::1]:8080"):
        assert client(queue, base_url=name).get("/").status_code == 200
    rebound = client(queue, base_url="http://evil.example:8080")  # DNS rebinding
    assert rebound.get("/").status_code == 403 and rebound.get("/dead").status_code == 403
    tokened = client(queue, base_url="http://dash.example:8080", token="t")
    assert tokened.get("/", headers={"Authorization": "Bearer t"}).status_code == 200


def test_a_change_needs_the_csrf_token_and_this_origin(queue, jobs):
    web = client(queue)
    csrf = csrf_of(web.get("/dead").text)
    dead = jobs["dead"]
    for form, headers in (
        ({"ids": dead}, {}),
        ({"ids": dead, "csrf": "forged"}, {}),
        ({"ids": dead, "csrf": csrf}, {"Origin": "http://evil.example"}),
        ({"ids": dead, "csrf": csrf}, {"Origin": "null"}),
    ):
        assert web.post("/actions/requeue", data=form, headers=headers).status_code == 403
        assert queue.store.get(dead).state is JobState.DEAD
    assert web.get(f"/actions/requeue?ids={dead}").status_code == 405
    reply = web.post("/actions/requeue", data={"ids": dead, "csrf": csrf, "back": "/dead"})
    assert reply.status_code == 303 and reply.headers["location"].startswith("/dead?msg=")
    assert queue.store.get(dead).state is JobState.READY


def test_read_only_refuses_every_change(queue, jobs):
    web = client(queue, read_only=True)
    html = web.get(f"/jobs/{jobs['dead']}").text
    assert "/actions/" not in html and "/actions/" not in web.get("/dead").text
    before = queue.stats()
    for action in ("requeue", "delete", "purge", "cancel", "requeue-task"):
        # read-only refuses before the CSRF token is even looked at
        reply = web.post(f"/actions/{action}", data={"ids": jobs["dead"], "csrf": "x"})
        assert reply.status_code == 403, action
    assert queue.stats() == before


# ---- actions ------------------------------------------------------------------------
def post(web: TestClient, action: str, **form) -> str:
    form.setdefault("csrf", csrf_of(web.get("/dead").text))
    reply = web.post(f"/actions/{action}", data=form)
    assert reply.status_code in (303, 400), reply.text
    return reply.text if reply.status_code == 400 else ""


def test_a_re_drive_in_minutes_or_at_a_time_goes_through_the_scheduled_queue(queue, jobs):
    web = client(queue)
    start = now_ms()
    post(web, "requeue", ids=jobs["dead"], when="in", minutes="30")
    rec = queue.store.get(jobs["dead"])
    assert rec.state is JobState.SCHEDULED
    assert start + 30 * 60_000 <= rec.run_at_ms <= now_ms() + 30 * 60_000


def test_requeue_all_of_a_task_at_a_time_of_day(queue, jobs):
    echo = queue.task_by_name("tests.support.tasks.noop")
    more = [echo.delay(i).id for i in range(3)]
    claim_all(queue.store)
    for job_id in more:
        failed(queue.store, job_id, retryable=False)
    web = client(queue)
    post(web, "requeue-task", task="tests.support.tasks.noop", when="at", at="02:00")
    for job_id in [*more, jobs["dead"]]:
        rec = queue.store.get(job_id)
        assert rec.state is JobState.SCHEDULED
        assert rec.run_at_ms % 86_400_000 == 2 * 3_600_000  # 02:00 UTC
        assert 0 < rec.run_at_ms - now_ms() <= 86_400_000


def test_bad_input_changes_nothing(queue, jobs):
    web = client(queue)
    before = (queue.stats(), queue.store.get(jobs["dead"]).state)
    for form in (
        {"ids": jobs["dead"], "when": "in", "minutes": "-1"},
        {"ids": jobs["dead"], "when": "in", "minutes": "nan"},
        {"ids": jobs["dead"], "when": "at", "at": "25:99"},
        {"ids": jobs["dead"], "when": "soon"},
        {"ids": "not-an-id"},
        {},
    ):
        text = post(web, "requeue", **form)
        assert 'class="error"' in text, form
    assert (queue.stats(), queue.store.get(jobs["dead"]).state) == before


def test_cancel_delete_and_purge(queue, jobs):
    web = client(queue)
    post(web, "cancel", ids=jobs["ready"])
    assert queue.store.get(jobs["ready"]).state is JobState.CANCELLED
    post(web, "delete", ids=jobs["done"])
    assert queue.store.get(jobs["done"]) is None
    post(web, "purge")
    assert queue.stats()["dead"] == 0


def test_the_overview_shows_figures_read_at_most_a_refresh_ago():
    from mpqueue.dashboard.app import Figures

    reads = []

    def read():
        reads.append(len(reads))
        return {"n": len(reads)}

    figures = Figures(read, max_age_s=0.0)
    assert figures.get() == {"n": 1}  # the first waits for its read
    wait_until(lambda: figures.get()["n"] >= 2, timeout=10, what="a read in the background")
    still = Figures(read, max_age_s=3600)
    first = still.get()
    assert still.get() is first  # fresh enough: no read


def test_the_first_figures_are_read_as_the_dashboard_starts(queue):
    """No page waits for a count: the figures the first overview shows were read when
    the app was made (a job added after it is not in them yet)."""
    web = client(queue)
    queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    assert queue.stats()["ready"] == 1
    total = '<td class="num">{}</td></tr></table>'  # the last cell of the counts row
    assert total.format(0) in web.get("/?fragment=1").text
    assert total.format(1) in client(queue).get("/?fragment=1").text  # made after the add


def test_a_store_failing_as_the_dashboard_starts_is_left_to_the_first_page():
    from mpqueue.dashboard.app import Figures

    calls = []

    def read():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("store down")
        return {"n": len(calls)}

    figures = Figures(read, max_age_s=3600)
    figures.warm()  # swallowed: nothing to show yet
    assert figures.get() == {"n": 2}


def test_the_servers_page_shows_what_each_server_serves(queue):
    from mpqueue.records import now_ms

    beat = {"pid": 4242, "host": "h", "heartbeat_ms": now_ms(), "children": (), "lease_s": 30.0}
    queue.store.heartbeat("picky", {**beat, "queues": ["fast", "default"]})
    queue.store.heartbeat("every", beat)
    page = client(queue).get("/servers?fragment=1").text
    assert "<td>fast, default</td>" in page and "<td>all</td>" in page
