"""PostgreSQL for the tests: the server's URL, and a fresh schema per test.

The server comes from ``$MPQUEUE_TEST_PG_URL`` (``scripts/test`` starts a throwaway one
and sets it). Without a reachable server the PostgreSQL tests skip, except under
``CI=true``, where they fail: CI must never pass by not running them.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

URL_ENV = "MPQUEUE_TEST_PG_URL"
HOW_TO_ENABLE = (
    f"set {URL_ENV}=postgresql://user@host/db (a database the tests may "
    f"create schemas in), or run scripts/test, which starts a throwaway server"
)
_names = itertools.count()


@lru_cache(maxsize=1)
def _server() -> tuple[str | None, str]:
    """The server URL, or None with the reason it cannot be used."""
    url = os.environ.get(URL_ENV)
    if not url:
        return None, f"{URL_ENV} is not set"
    try:
        with psycopg.connect(url, connect_timeout=5):
            return url, ""
    except psycopg.Error as exc:
        return None, f"cannot connect to {URL_ENV}: {str(exc).strip()}"


def server_url() -> str:
    """The test server's URL; skips (fails under CI) when there is none."""
    url, reason = _server()
    if url is None:
        message = f"PostgreSQL tests need a server: {reason}. To run them, {HOW_TO_ENABLE}."
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return url


def with_schema(url: str, schema: str) -> str:
    """``url`` with the schema as its search_path (where the store keeps its tables)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


def create_schema(url: str) -> str:
    schema = f"mpq_test_{os.getpid()}_{next(_names)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '5s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def require_restartable() -> None:
    """Skip (fail under CI) unless the server is one that ``scripts/test`` started."""
    if not os.environ.get("MPQUEUE_PG_STATE"):
        if os.environ.get("CI"):
            pytest.fail("CI must run the suite through scripts/test (it owns the server)")
        pytest.skip("restarting needs the throwaway server that scripts/test starts")


def restart_database() -> None:
    """Restart the throwaway server (``scripts/pg-test-server restart``)."""
    require_restartable()
    script = Path(__file__).resolve().parents[2] / "scripts" / "pg-test-server"
    subprocess.run([str(script), "restart"], check=True, timeout=90, env=os.environ)


def terminate_connections(url: str) -> None:
    """Make the server drop every other connection to the database of ``url``."""
    with admin(url) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


def admin(url: str) -> psycopg.Connection:
    """A plain autocommit connection (for poking at the tables from outside the store)."""
    return psycopg.connect(url, autocommit=True)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL whose search_path is a new, empty schema; dropped after the test."""
    server = server_url()
    schema = create_schema(server)
    try:
        yield with_schema(server, schema)
    finally:
        drop_schema(server, schema)


def schema_at(pg_url: str, version: int) -> dict[str, str]:
    """Build the schema of ``pg_url`` up to ``version`` (as an older mpqueue left it);
    returns its qualified names (``schema.qualified_names``)."""
    from mpqueue.store.postgres import schema as pg_schema

    with admin(pg_url) as conn:
        names = pg_schema.qualified_names(conn, pg_schema.current_schema(conn))
        conn.execute(
            pg_schema.render(
                "CREATE TABLE {version} (version integer PRIMARY KEY, "
                "applied_at timestamptz NOT NULL DEFAULT now())",
                names,
            )
        )
        for number, statements in enumerate(pg_schema.MIGRATIONS[:version], 1):
            for statement in statements:
                conn.execute(pg_schema.render(statement, names))
            conn.execute(pg_schema.render("INSERT INTO {version} VALUES (%s)", names), (number,))
    return names


def insert_ready(conn: psycopg.Connection, names: dict[str, str], rec, key: str | None = None):
    """Write ``rec`` as a ready row with only the columns of schema version 1 (and
    ``key``, version 3), as an older mpqueue wrote its jobs."""
    from mpqueue.store.postgres import schema as pg_schema

    conn.execute(
        pg_schema.render(
            "INSERT INTO {jobs} (id, name, state, payload, priority, seq, run_at_ms, "
            "created_at_ms, attempts, max_retries, backoff_base_s, backoff_cap_s, key) "
            "VALUES (%s, %s, 'ready', %s, 0, 1, 0, 0, 0, 3, 1.0, 300.0, %s)",
            names,
        ),
        (rec.id, rec.name, rec.payload, key),
    )
