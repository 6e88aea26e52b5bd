"""Instant wake-up of idle servers when jobs are added to an LMDB store.

Each running server listens on a Unix datagram socket in the abstract namespace (no
path-length limit, nothing to clean up on disk) and drops a marker file named after
its pid into ``<store>/wake/``. A producer, after its commit, sends one empty datagram
to every listed server. A job handed to an idle child (see ``LmdbStore.add``) wakes
only that child, at the same kind of address (its pid), with the job id as the
datagram. Lost or refused datagrams only cost latency: servers also poll on a timer
and re-send hand-offs their children have not taken, so correctness never depends on
a wake-up arriving.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket

WAKE_DIR = "wake"
GET_READY = b"?"  # to a child: a job id follows once the producer's commit is durable


@functools.lru_cache(maxsize=16)
def _store_digest(store_path: str) -> str:
    # cached: realpath costs a syscall per path component, on every producer's enqueue
    return hashlib.sha1(os.path.realpath(store_path).encode()).hexdigest()[:16]


def _address(store_path: str, pid: int) -> bytes:
    return f"\0mpqueue-{_store_digest(store_path)}-{pid}".encode()


def _bound_socket(store_path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(_address(store_path, os.getpid()))
    sock.setblocking(False)
    return sock


def _receive_all(sock: socket.socket) -> list[bytes]:
    datagrams = []
    while True:
        try:
            datagrams.append(sock.recv(64))
        except (BlockingIOError, InterruptedError):
            return datagrams


class WakeListener:
    """The server's end: readable when a producer added jobs."""

    def __init__(self, store_path: str):
        self.marker = os.path.join(store_path, WAKE_DIR, str(os.getpid()))
        self.sock = _bound_socket(store_path)
        os.makedirs(os.path.dirname(self.marker), exist_ok=True)
        with open(self.marker, "w", encoding="ascii"):
            pass

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Consume pending wake-ups; returns how many there were."""
        return len(_receive_all(self.sock))

    def close(self) -> None:
        try:
            os.unlink(self.marker)
        except FileNotFoundError:
            pass
        self.sock.close()


class HandOffInbox:
    """A worker child's end: the ids of jobs handed to it. Not listed in the wake dir
    (producers learn a child's pid from its server's offer)."""

    def __init__(self, store_path: str):
        self.sock = _bound_socket(store_path)

    def fileno(self) -> int:
        return self.sock.fileno()

    def job_ids(self) -> tuple[list[str], bool]:
        """The job ids received, and whether a "get ready" came (see ``get_ready``)."""
        datagrams = _receive_all(self.sock)
        ids = [d.decode("ascii") for d in datagrams if d and d != GET_READY]
        return ids, GET_READY in datagrams

    def close(self) -> None:
        self.sock.close()


class WakeSender:
    """The producer's end. Caches the list of servers until the wake dir changes."""

    def __init__(self, store_path: str):
        self.store_path = store_path
        self.wake_dir = os.path.join(store_path, WAKE_DIR)
        self.sock: socket.socket | None = None
        self.dir_fd = -1
        self.cached_mtime = -1
        self.targets: list[tuple[str, bytes]] = []

    def notify(self) -> None:
        for marker, address in self._targets():
            try:
                self._socket().sendto(b"", address)
            except (BlockingIOError, InterruptedError):
                continue  # its buffer is full: it has wake-ups queued already
            except OSError:
                self._forget(marker)  # no listener at that address: a dead server

    def get_ready(self, child_pid: int) -> None:
        """Tell a child, before the commit that hands it a job, that the job's id follows
        soon: it wakes while the commit waits for the disk, instead of after it."""
        try:
            self._socket().sendto(GET_READY, _address(self.store_path, child_pid))
        except OSError:
            pass

    def hint(self, child_pid: int, job_id: str) -> None:
        """Wake the child a job was handed to, naming the job."""
        try:
            self._socket().sendto(job_id.encode("ascii"), _address(self.store_path, child_pid))
        except OSError:
            pass  # not listening (gone?): its server recalls the job when it sees the exit

    def _targets(self) -> list[tuple[str, bytes]]:
        # fstat of an open directory: no path walk per enqueue (this runs after every
        # one-by-one commit, on caches the fsync left cold).
        try:
            mtime = os.fstat(self._dir_fd()).st_mtime_ns
        except OSError:
            return []
        if mtime != self.cached_mtime:
            self.cached_mtime = mtime
            self.targets = [(os.path.join(self.wake_dir, name),
                             _address(self.store_path, int(name)))
                            for name in os.listdir(self.wake_dir) if name.isdigit()]
        return self.targets

    def _dir_fd(self) -> int:
        if self.dir_fd < 0:
            os.makedirs(self.wake_dir, exist_ok=True)
            self.dir_fd = os.open(self.wake_dir, os.O_RDONLY | os.O_DIRECTORY)
        return self.dir_fd

    def _socket(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
        return self.sock

    def _forget(self, marker: str) -> None:
        try:
            os.unlink(marker)
        except FileNotFoundError:
            pass
        self.cached_mtime = -1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1
