"""One PostgreSQL connection of a store: transactions, error translation, reconnects.

Every store call is one ``run(body)``: ``body`` gets a ``Query`` (a counting cursor)
and runs inside one transaction, which PostgreSQL commits or rolls back as a whole, so
a failed call changes nothing. ``psycopg.Error`` becomes ``StoreError`` (chained, and
without the password). A lost connection is reopened at once and the call made again
when that is safe (see ``run``); after that, with backoff while the server stays
unreachable. Deadlocks and serialization failures are retried here: the whole
transaction was rolled back, so running it again is safe.

A connection never crosses ``fork()``: in the child, the inherited socket is pointed
at /dev/null and the store opens its own connection on first use, so a child using (or
closing) an inherited store can never talk on the parent's socket.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg

from ...errors import StoreError
from ..base import OpCounter
from . import url as pg_url

T = TypeVar("T")
log = logging.getLogger("mpqueue.store")

CONNECT_TIMEOUT_S = 10  # libpq waits forever by default
RECONNECT_BASE_S = 0.1  # first wait before reconnecting after a failed attempt
RECONNECT_MAX_S = 5.0  # the longest wait between attempts
TX_ATTEMPTS = 5  # tries of a transaction that lost a deadlock

_SESSIONS: weakref.WeakSet[PgSession] = weakref.WeakSet()


def connection_params(url: str) -> dict[str, Any]:
    """libpq parameters from ``url``, with mpqueue's defaults where the URL is silent."""
    params: dict[str, Any] = pg_url.parse(url)
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_S))
    params.setdefault("application_name", "mpqueue")
    return params


class Query:
    """A cursor that counts: each statement is a ``txn``, each row read a ``get``."""

    def __init__(self, cursor: psycopg.Cursor[Any], counter: OpCounter):
        self.cursor = cursor
        self.counter = counter

    def rows(self, query: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        self.counter.txns += 1
        self.cursor.execute(query, params)
        rows = self.cursor.fetchall()
        self.counter.gets += len(rows)
        return rows

    def one(self, query: str, params: Sequence[Any] | None = None) -> tuple[Any, ...] | None:
        rows = self.rows(query, params)
        return rows[0] if rows else None

    def write(
        self, query: str, params: Sequence[Any] | None = None, *, deletes: bool = False
    ) -> int:
        """Run a statement without results; returns (and counts) the rows it changed."""
        self.counter.txns += 1
        self.cursor.execute(query, params)
        changed = max(0, self.cursor.rowcount)
        if deletes:
            self.counter.deletes += changed
        else:
            self.counter.puts += changed
        return changed


class PgSession:
    """The connection a ``PostgresStore`` works through (thread-safe, fork-aware)."""

    def __init__(self, url: str, counter: OpCounter):
        self.params = connection_params(url)
        self.where = pg_url.shown(pg_url.parse(url))  # without mpqueue's defaults
        self._secrets = pg_url.secrets_of(self.params)
        self.counter = counter
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = os.getpid()
        self._lock = threading.RLock()
        self._failures = 0
        self._retry_at = 0.0
        self._orphans: list[psycopg.Connection[Any]] = []
        _SESSIONS.add(self)

    def connect(self) -> psycopg.Connection[Any]:
        """A new raw connection with this session's parameters (autocommit).

        Raises StoreError naming the problem (never the password).
        """
        try:
            return psycopg.connect(**self.params, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self.where}: {self.detail(exc)}"
            ) from self._cause(exc)

    def detail(self, exc: psycopg.Error) -> str:
        """libpq's message for ``exc``, without this session's secrets."""
        return pg_url.scrub(str(exc).strip() or type(exc).__name__, self._secrets)

    def _cause(self, exc: psycopg.Error) -> psycopg.Error | None:
        """``exc`` to chain to, unless its text holds a secret (a traceback prints it)."""
        return exc if self.detail(exc) == (str(exc).strip() or type(exc).__name__) else None

    def connection(self) -> psycopg.Connection[Any]:
        """The open connection, (re)connecting first if needed; raises StoreError."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        wait_s = self._retry_at - time.monotonic()
        if wait_s > 0:
            time.sleep(wait_s)  # backoff: the caller is retrying against a dead server
        try:
            self._conn = self.connect()
        except StoreError:
            self._failures += 1
            self._retry_at = time.monotonic() + min(
                RECONNECT_MAX_S, RECONNECT_BASE_S * 2 ** (self._failures - 1)
            )
            raise
        self._failures = 0
        return self._conn

    def run(
        self,
        body: Callable[[Query], T],
        *,
        write: bool = True,
        resume: Callable[[Query], T] | None = None,
    ) -> T:
        """``body`` in one transaction (``write``) or as autocommitted reads.

        A lost connection (the database restarted, or dropped it) is reopened and the
        call made once more where that cannot apply a write twice: always for reads and
        for a write lost before its COMMIT was sent (the database rolled it back). A
        write whose COMMIT went out unanswered may have landed: it is made again only
        through ``resume``, which must find out and finish the work (a write that is
        safe to repeat); without one, StoreError says the outcome is unknown.
        """
        with self._lock:
            step, attempt, reconnected = body, 0, False
            while True:
                attempt += 1
                conn = self.connection()
                committing = False
                try:
                    with conn.cursor(binary=True) as cursor:
                        if not write:
                            return step(Query(cursor, self.counter))
                        with conn.transaction():
                            result = step(Query(cursor, self.counter))
                            committing = True  # the block's exit sends COMMIT
                        return result
                except psycopg.errors.TransactionRollback as exc:
                    if attempt < TX_ATTEMPTS and not conn.broken:
                        continue
                    raise self._translate(exc, conn, committing) from self._cause(exc)
                except psycopg.Error as exc:
                    lost = conn.broken or conn.closed
                    if lost and not reconnected and (resume is not None or not committing):
                        log.info(
                            "lost the connection to PostgreSQL at %s (%s); "
                            "reconnecting to make the call again",
                            self.where,
                            self.detail(exc),
                        )
                        self._drop()
                        step = resume if committing and resume is not None else step
                        reconnected = True
                        continue
                    raise self._translate(exc, conn, committing) from self._cause(exc)

    def _translate(
        self, exc: psycopg.Error, conn: psycopg.Connection[Any], committing: bool = False
    ) -> StoreError:
        detail = self.detail(exc)
        if conn.broken or conn.closed:
            self._drop()
            outcome = (
                "the commit was sent but not answered, so it may or may not have been applied"
                if committing
                else "the transaction was rolled back"
            )
            return StoreError(
                f"lost the connection to PostgreSQL at {self.where} "
                f"({outcome}; the next call reconnects): {detail}"
            )
        return StoreError(f"PostgreSQL error ({type(exc).__name__}): {detail}")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def _abandon_after_fork(self) -> None:
        """In a forked child: forget the parent's connection without touching it."""
        self._lock = threading.RLock()
        self._pid = os.getpid()
        if self._conn is None:
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, self._conn.pgconn.socket)
        except (OSError, psycopg.Error):
            pass
        finally:
            os.close(devnull)
        self._orphans.append(self._conn)  # its finalizer now writes to /dev/null
        self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._drop()
            _SESSIONS.discard(self)


def _after_fork_in_child() -> None:
    for session in list(_SESSIONS):
        session._abandon_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
