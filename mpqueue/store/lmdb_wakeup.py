"""Instant wake-up of idle servers when jobs are added to an LMDB store.

Each running server listens on a Unix datagram socket in the abstract namespace (no
path-length limit, nothing to clean up on disk) and drops a marker file named after
its pid into ``<store>/wake/``. A producer, after its commit, sends one empty datagram
to every listed server; a job handed to one idle server (see ``LmdbStore.add``) wakes
only that server, with the job id as the datagram. Lost or refused datagrams only cost
latency: servers also poll on a timer, so correctness never depends on a wake-up
arriving.
"""

from __future__ import annotations

import hashlib
import os
import socket

from ..identity import parse

WAKE_DIR = "wake"


def _address(store_path: str, pid: int) -> bytes:
    digest = hashlib.sha1(os.path.realpath(store_path).encode()).hexdigest()[:16]
    return f"\0mpqueue-{digest}-{pid}".encode()


class WakeListener:
    """The server's end: readable when a producer added jobs."""

    def __init__(self, store_path: str):
        self.marker = os.path.join(store_path, WAKE_DIR, str(os.getpid()))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(_address(store_path, os.getpid()))
        self.sock.setblocking(False)
        os.makedirs(os.path.dirname(self.marker), exist_ok=True)
        with open(self.marker, "w", encoding="ascii"):
            pass

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Consume pending wake-ups; returns how many said "jobs are ready" (the others
        named a job handed to this server, which ``Store.handed`` finds)."""
        count = 0
        while True:
            try:
                if not self.sock.recv(64):
                    count += 1
            except (BlockingIOError, InterruptedError):
                return count

    def close(self) -> None:
        try:
            os.unlink(self.marker)
        except FileNotFoundError:
            pass
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
        self.hint_addresses: dict[str, bytes] = {}

    def notify(self) -> None:
        for marker, address in self._targets():
            try:
                self._socket().sendto(b"", address)
            except (BlockingIOError, InterruptedError):
                continue  # its buffer is full: it has wake-ups queued already
            except OSError:
                self._forget(marker)  # no listener at that address: a dead server

    def hint(self, worker_id: str, job_id: str) -> None:
        """Wake only the server a job was handed to (its pid is in its worker id)."""
        address = self.hint_addresses.get(worker_id)
        if address is None:
            identity = parse(worker_id)
            if identity is None:
                return
            # cached: the address hashes the store's real path (syscalls per component)
            address = self.hint_addresses[worker_id] = _address(self.store_path,
                                                                identity.pid)
        try:
            self._socket().sendto(job_id.encode("ascii"), address)
        except OSError:
            pass  # not listening (gone?): its jobs are put back when it is found dead

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
