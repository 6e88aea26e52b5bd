"""Wake-ups for idle servers on a PostgreSQL store: LISTEN on the queue's channel.

Producers NOTIFY inside their transaction, so PostgreSQL delivers the wake-up only
after the commit (and never for a rollback). A lost wake-up costs only latency: the
server also polls on a timer. That is why a broken listening connection is not an
error here: the listener goes quiet, reconnects with backoff, and reports one
wake-up after reconnecting (jobs may have arrived while it was deaf).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq, sql

from ...errors import StoreError
from .cancels import CANCEL_PAYLOAD

_CANCEL = CANCEL_PAYLOAD.encode()  # libpq's notifications carry bytes

log = logging.getLogger("mpqueue.store")

RECONNECT_BASE_S = 0.5
RECONNECT_MAX_S = 10.0


class PgListener:
    """The server's end: ``fileno()`` is readable when a producer committed jobs."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], channel: str):
        self.channel = channel
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = None
        # While disconnected, fileno() points here: a socket nobody writes to.
        self._quiet_r, self._quiet_w = socket.socketpair()
        self._failures = 0
        self._retry_at = 0.0
        self._cancel_seen = False
        self._reopen()

    def _reopen(self) -> bool:
        try:
            conn = self._connect()
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except (psycopg.Error, StoreError) as exc:  # StoreError: connect's, without secrets
            self._failures += 1
            delay = min(RECONNECT_MAX_S, RECONNECT_BASE_S * 2 ** (self._failures - 1))
            self._retry_at = time.monotonic() + delay
            log.warning("cannot listen for wake-ups (%s); retrying in %.1f s", exc, delay)
            return False
        self._conn, self._failures = conn, 0
        return True

    def fileno(self) -> int:
        # Called before every wait, so this is also where a lost connection is retried.
        if self._conn is None and time.monotonic() >= self._retry_at and self._reopen():
            self._quiet_w.send(b"\0")  # one wake-up: we may have missed some
            return self._quiet_r.fileno()
        return self._quiet_r.fileno() if self._conn is None else self._conn.fileno()

    def drain(self) -> int:
        """Consume pending wake-ups; returns how many there were."""
        count = _drain_socket(self._quiet_r)
        if self._conn is None:
            return count
        pgconn = self._conn.pgconn
        try:
            pgconn.consume_input()
            while (notify := pgconn.notifies()) is not None:
                count += 1
                self._cancel_seen = self._cancel_seen or notify.extra == _CANCEL
            if pgconn.status != pq.ConnStatus.OK:  # e.g. the server said FATAL, then hung up
                raise psycopg.OperationalError(pgconn.get_error_message() or "connection lost")
        except psycopg.Error as exc:
            log.warning("lost the wake-up connection (%s); reconnecting", exc)
            self._drop()
            self._cancel_seen = True
            return count + 1  # wake the server: it may have missed wake-ups
        return count

    def cancels(self) -> bool:
        """Whether a cancel came since the last call (read by ``drain``); after a lost
        connection too, as one may have been missed."""
        seen, self._cancel_seen = self._cancel_seen, False
        return seen

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._retry_at = time.monotonic() + RECONNECT_BASE_S

    def close(self) -> None:
        self._drop()
        self._quiet_r.close()
        self._quiet_w.close()


def _drain_socket(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    try:
        while sock.recv(512):
            count += 1
    except (BlockingIOError, InterruptedError):
        pass
    return count
