"""The PostgreSQL store against hostile or unlucky input (GitHub issue 10, item 8).

- A password in the URL (``user:secret@`` or ``?password=secret``) never reaches an
  error, a log line, a repr or the CLI's output, also when libpq cannot parse the URL.
- Schema names that need quoting (``we'ird``) or are long in bytes (31 x ``é``) work
  for enqueue, claims, outcomes and wake-ups.
- After the database restarts or drops the connections, the next call on a ``Queue``
  succeeds by itself, and an enqueue whose commit landed but whose reply was lost is
  stored once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import struct
import subprocess
import sys
import threading
import traceback
from urllib.parse import quote

import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from mpqueue import ConfigError, Queue, StoreError
from mpqueue.location import redact
from mpqueue.records import JobState, Outcome, now_ms

from ..support.pg_helpers import (  # noqa: F401
    admin,
    drop_schema,
    pg_url,
    require_restartable,
    restart_database,
    server_url,
    terminate_connections,
)
from ..support.serve_helpers import ROOT

SECRET = "Hunter2-s3cret"


def with_password(url: str, secret: str = SECRET) -> str:
    """``url`` with ``secret`` as the password in its userinfo."""
    scheme, rest = url.split("://", 1)
    user, at, hostpart = rest.partition("@")
    return f"{scheme}://{user}:{secret}@{hostpart}" if at else f"{scheme}://:{secret}@{rest}"


def with_query_password(url: str, secret: str = SECRET) -> str:
    return f"{url}{'&' if '?' in url else '?'}password={secret}"


def everything_said(exc: BaseException) -> str:
    """What a user can see of ``exc``: its message and the whole printed traceback."""
    return str(exc) + "".join(traceback.format_exception(exc))


def mpqueue_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, "-m", "mpqueue", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=90,
    )


# The test server trusts local connections, so it accepts any password: these URLs work.
@pytest.fixture(params=["userinfo", "query"])
def secret_url(request, pg_url):
    return (with_password if request.param == "userinfo" else with_query_password)(pg_url)


# libpq refuses each of these, and its message quotes the password or the whole URL.
UNPARSABLE_URLS = [
    f"postgresql://u:{SECRET}%ZZ@127.0.0.1/db",  # bad percent-encoding
    f"postgresql://u:{SECRET}%00@127.0.0.1/db",  # NUL in the password
    f"postgresql://u:{SECRET}@[::1/db",  # unclosed IPv6 bracket
    f"postgresql://u:{SECRET}@[::1]x/db",  # stray character after the host
    f"postgresql://u:{SECRET}@[]/db",  # empty IPv6 host
    f"postgresql://u@127.0.0.1/db?password={SECRET}%ZZ",  # bad encoding in the query
    f"postgresql://u:{SECRET}@127.0.0.1/db?bogus=1",  # unknown parameter
]


# ---- 1. the password never leaks ---------------------------------------------------------


@pytest.mark.parametrize("url", UNPARSABLE_URLS)
def test_an_unparsable_url_names_the_problem_without_the_password(url):
    assert redact(url) == "postgresql://<unparsable>"
    queue = Queue(url)
    assert SECRET not in repr(queue)
    with pytest.raises(
        ConfigError, match="invalid PostgreSQL URL postgresql://<unparsable>"
    ) as info:
        queue.stats()
    assert SECRET not in everything_said(info.value)
    done = mpqueue_cli("--path", url, "stats")
    assert done.returncode == 1 and done.stderr.startswith("Error: invalid PostgreSQL URL")
    assert SECRET not in done.stdout + done.stderr and "Traceback" not in done.stderr


def test_the_problem_is_named_when_the_message_holds_no_secret():
    with pytest.raises(ConfigError, match='invalid URI query parameter: "bogus"'):
        Queue(f"postgresql://u:{SECRET}@127.0.0.1/db?bogus=1").stats()


@pytest.mark.parametrize(
    "url",
    [
        with_password("postgresql://u@127.0.0.1:1/none"),
        with_query_password("postgresql://u@127.0.0.1:1/none"),
    ],
)
def test_a_failed_connection_says_where_without_the_password(url, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(
        StoreError,
        match=r"cannot connect to PostgreSQL at "
        r"postgresql://u@127\.0\.0\.1:1/none",
    ) as info:
        Queue(url + ("&" if "?" in url else "?") + "connect_timeout=2").stats()
    assert SECRET not in everything_said(info.value) + caplog.text


def test_repr_log_and_errors_of_a_working_url(secret_url, caplog):
    caplog.set_level(logging.DEBUG)
    queue = Queue(secret_url)
    assert SECRET not in repr(queue) and SECRET not in redact(secret_url)
    assert redact(secret_url).startswith("postgresql://mpqueue@127.0.0.1:")
    job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    with pytest.raises(StoreError) as info:  # the same id again: the database refuses
        queue.store.add([queue.store.get(job.id)])
    assert SECRET not in everything_said(info.value) + caplog.text
    queue.close()


def test_the_cli_never_prints_the_password(secret_url):
    queue = Queue(secret_url)
    job = queue.task_by_name("tests.support.tasks.fail").delay()
    (claimed,) = queue.store.claim("w1", 1, now_ms())
    queue.store.finish([Outcome.failed(claimed.id, "w1", None, retryable=False)], now_ms())
    assert job.id == claimed.id and queue.stats()["dead"] == 1
    queue.close()
    declined = mpqueue_cli("--path", secret_url, "dead", "purge", stdin="n\n")
    assert "Delete 1 dead job(s) from postgresql://mpqueue@127.0.0.1:" in declined.stdout
    served = mpqueue_cli(
        "--path", secret_url, "serve", "--workers", "1", "--until-empty", "--log-level", "info"
    )
    assert served.returncode == 0, served.stderr
    assert "serving postgresql://mpqueue@127.0.0.1:" in served.stderr
    for done in (declined, served, mpqueue_cli("--path", secret_url, "stats")):
        assert SECRET not in done.stdout + done.stderr


# ---- 2. schema names that need quoting, or are long in bytes -------------------------------


@pytest.fixture(params=["we'ird", "é" * 31], ids=["quote", "31-e-acute"])
def odd_schema_url(request):
    """A URL whose search_path is a new schema with an awkward name; dropped after."""
    server, schema = server_url(), request.param
    with admin(server) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        search_path = quote(f'-csearch_path="{schema}"', safe="")
        yield f"{server}{'&' if '?' in server else '?'}options={search_path}"
    finally:
        drop_schema(server, schema)


def test_an_odd_schema_name_enqueues_claims_finishes_and_wakes(odd_schema_url, tmp_path):
    queue = Queue(odd_schema_url)
    store = queue.store
    assert len(store.channel.encode()) <= 63
    listener = store.listen()
    try:
        first = queue.task_by_name("tests.support.tasks.add").delay(1, 2)  # nextval in add
        assert select.select([listener], [], [], 5)[0] and listener.drain() >= 1
        failing = queue.task_by_name("tests.support.tasks.fail").delay()
        acks, claimed = store.finish_and_claim([], "w1", 10, now_ms())
        assert acks == [] and {r.id for r in claimed} == {first.id, failing.id}
        outcomes = [
            Outcome.done(first.id, "w1", b"3"),
            Outcome.failed(failing.id, "w1", None),
        ]  # retried: nextval in finish
        assert store.finish_and_claim(outcomes, "w1", 10, now_ms())[0] == [True, True]
        assert store.get(failing.id).state is JobState.SCHEDULED
        store.finish_and_claim([], "w1", 10, now_ms() + 10_000)  # promote and claim it
        store.finish([Outcome.failed(failing.id, "w1", None, retryable=False)], now_ms())
        listener.drain()
        store.requeue_dead(failing.id, now_ms())  # nextval in requeue
        assert select.select([listener], [], [], 5)[0] and listener.drain() >= 1
        assert store.delete(failing.id)  # it would only fail again in the serve below
    finally:
        listener.close()
        queue.close()
    queue = Queue(odd_schema_url)
    job = queue.task_by_name("tests.support.tasks.add").delay(20, 22)
    served = mpqueue_cli("--path", odd_schema_url, "serve", "--workers", "1", "--until-empty")
    assert served.returncode == 0, served.stderr
    assert job.result(timeout=5) == 42 and queue.stats()["ready"] == 0
    queue.close()


# ---- 3. lost connections ------------------------------------------------------------------


class CommitCutter:
    """A TCP proxy to the test server that, once armed, passes the next COMMIT on and
    hangs up on the client as soon as the server has answered it: the commit landed,
    and the client never hears so (a reply lost on the network, for real)."""

    def __init__(self, url: str):
        params = conninfo_to_dict(url)
        self.target = (str(params["host"]), int(params.get("port") or 5432))
        self.listener = socket.create_server(("127.0.0.1", 0))
        port = self.listener.getsockname()[1]
        netloc = f"{self.target[0]}:{self.target[1]}"
        assert netloc in url
        self.url = (
            url.replace(netloc, f"127.0.0.1:{port}", 1)  # plain TCP: no TLS to read
            + f"{'&' if '?' in url else '?'}sslmode=disable&gssencmode=disable"
        )
        self.armed = threading.Event()
        self.cuts = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            cutting = threading.Event()
            threading.Thread(
                target=self._to_client, args=(upstream, client, cutting), daemon=True
            ).start()
            threading.Thread(
                target=self._to_server, args=(client, upstream, cutting), daemon=True
            ).start()

    def _to_server(
        self, client: socket.socket, upstream: socket.socket, cutting: threading.Event
    ) -> None:
        """Forward whole protocol messages, watching for a simple-query COMMIT."""
        with contextlib.suppress(OSError):
            startup = _read_exactly(client, 4)  # the startup message has no type byte
            size = struct.unpack("!I", startup)[0]
            upstream.sendall(startup + _read_exactly(client, size - 4))
            while True:
                head = _read_exactly(client, 5)
                body = _read_exactly(client, struct.unpack("!I", head[1:])[0] - 4)
                if head[:1] == b"Q" and body.startswith(b"COMMIT") and self.armed.is_set():
                    self.armed.clear()
                    cutting.set()
                upstream.sendall(head + body)

    def _to_client(
        self, upstream: socket.socket, client: socket.socket, cutting: threading.Event
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                if cutting.is_set():
                    if b"COMMIT\x00" in data:  # CommandComplete: the commit is durable
                        self.cuts += 1
                        break
                    continue
                client.sendall(data)
        for sock in (client, upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data


@pytest.fixture
def cutter(pg_url):
    made = CommitCutter(pg_url)
    try:
        yield made
    finally:
        made.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("outage", ["restart", "terminate"])
def test_a_queue_carries_on_after_the_database_drops_it(pg_url, outage, caplog):
    """Each first call after an outage (a read, an enqueue, a get) succeeds by itself."""
    if outage == "restart":
        require_restartable()
    caplog.set_level(logging.INFO, logger="mpqueue.store")

    def drop_everything() -> None:
        restart_database() if outage == "restart" else terminate_connections(pg_url)

    queue = Queue(with_query_password(pg_url))
    add = queue.task_by_name("tests.support.tasks.add")
    first = add.delay(1, 2)
    drop_everything()
    assert queue.stats()["ready"] == 1
    drop_everything()
    second = add.delay(3, 4)
    drop_everything()
    assert queue.get(first.id).id == first.id and queue.get(second.id).id == second.id
    assert queue.stats()["ready"] == 2
    assert caplog.text.count("reconnecting to make the call again") == 3
    assert SECRET not in caplog.text
    queue.close()


def test_an_enqueue_whose_commit_reply_was_lost_is_stored_once(cutter, caplog):
    caplog.set_level(logging.INFO, logger="mpqueue.store")
    queue = Queue(cutter.url)
    add = queue.task_by_name("tests.support.tasks.add")
    add.delay(0, 0)  # connected (and the schema made) before the cut
    cutter.armed.set()
    jobs = add.map([(1, 2), (3, 4), (5, 6)])  # committed; the reply never comes
    assert cutter.cuts == 1 and "reconnecting to make the call again" in caplog.text
    assert queue.stats() == {
        "ready": 4,
        "scheduled": 0,
        "processing": 0,
        "done": 0,
        "dead": 0,
        "waiting": 0,
        "cancelled": 0,
        "expired": 0,
        "total": 4,
    }
    for job in jobs:
        stored = queue.get(job.id)
        assert stored is not None and stored.record.seq == job.record.seq
    queue.close()


def test_another_write_whose_commit_reply_was_lost_says_so(cutter):
    queue = Queue(cutter.url)
    job = queue.task_by_name("tests.support.tasks.add").delay(1, 2)
    cutter.armed.set()
    with pytest.raises(StoreError, match="may or may not have been applied"):
        queue.store.delete(job.id)  # not safe to repeat blindly: reported, not retried
    assert cutter.cuts == 1
    assert queue.get(job.id) is None and queue.stats()["total"] == 0  # it did land
    queue.close()
