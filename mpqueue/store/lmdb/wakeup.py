"""Instant wake-up of idle servers when jobs are added to an LMDB store.

Each running server listens on a Unix datagram socket ``<store>/wake/<pid>``. A
producer, after its commit, sends one empty datagram to every server socket in that
directory. A job handed to an idle child (see ``LmdbStore.add``) wakes only that
child, at ``<store>/wake/c<pid>``, with the job id as the datagram. A cancel of a
running job sends ``CANCEL`` to every server, which then reads its cancel requests. Lost or refused
datagrams only cost latency: servers also poll on a timer and re-send hand-offs their
children have not taken, so correctness never depends on a wake-up arriving.

Who may talk to them: ``wake/`` is a 0700 directory of the store's owner, so no other
local user can reach, bind or replace a socket in it (an abstract-namespace socket,
which these once were, is listed in /proc/net/unix and reachable by anyone). Even so, a
datagram that is neither an empty wake-up, a "get ready" nor a job id is dropped and
counted, never acted on.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import sys

from ...errors import StoreError
from ...records import is_job_id

WAKE_DIR = "wake"
GET_READY = b"?"  # to a child: a job id follows once the producer's commit is durable
CANCEL = b"!"  # to a server: a cancel was requested for a job some server runs
CHILD_PREFIX = "c"
_SUN_PATH_MAX = 107  # bytes of a socket path, less the terminating NUL


def open_private_dir(store_path: str) -> int:
    """The store's ``wake/`` directory, created 0700 if missing, as an open fd.

    Refuses a directory that is a symlink or belongs to another user, and takes away
    any group or other access it has (it holds nothing but our sockets)."""
    path = os.path.join(store_path, WAKE_DIR)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"cannot create {path!r}: {exc}") from exc
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    info = os.fstat(fd)
    if info.st_uid != os.geteuid():
        os.close(fd)
        raise StoreError(
            f"{path!r} belongs to uid {info.st_uid}, not to this user "
            f"(uid {os.geteuid()}): remove it, it is re-created"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.fchmod(fd, 0o700)
    return fd


class _SocketDir:
    """Socket addresses in the wake directory. A path too long for a socket address
    goes through the directory's open fd (/proc/self/fd/N/name) instead."""

    def __init__(self, store_path: str):
        self.path = os.path.join(store_path, WAKE_DIR)
        self.fd = open_private_dir(store_path)

    def address(self, name: str) -> str:
        full = os.path.join(self.path, name)
        if len(os.fsencode(full)) <= _SUN_PATH_MAX:
            return full
        return f"/proc/self/fd/{self.fd}/{name}"

    def bind(self, name: str) -> socket.socket:
        """A non-blocking datagram socket bound at ``name``; a file left there by a
        dead process of the same pid is replaced (only our uid can write here)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            try:
                sock.bind(self.address(name))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                self.unlink(name)
                sock.bind(self.address(name))
        except BaseException:
            sock.close()
            raise
        sock.setblocking(False)
        return sock

    def unlink(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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
        self.dir = _SocketDir(store_path)
        self.name = str(os.getpid())
        self.cancel_seen = False
        try:
            self.sock = self.dir.bind(self.name)
        except BaseException:
            self.dir.close()
            raise

    def fileno(self) -> int:
        return self.sock.fileno()

    def drain(self) -> int:
        """Consume pending wake-ups; returns how many there were."""
        datagrams = _receive_all(self.sock)
        self.cancel_seen = self.cancel_seen or CANCEL in datagrams
        return len(datagrams)

    def cancels(self) -> bool:
        """Whether a cancel came since the last call (by ``drain``)."""
        seen, self.cancel_seen = self.cancel_seen, False
        return seen

    def close(self) -> None:
        self.dir.unlink(self.name)
        self.sock.close()
        self.dir.close()


class HandOffInbox:
    """A worker child's end: the ids of jobs handed to it. Producers learn a child's pid
    from its server's offer; the ``c`` prefix keeps it out of the servers' list."""

    def __init__(self, store_path: str):
        self.dir = _SocketDir(store_path)
        self.name = f"{CHILD_PREFIX}{os.getpid()}"
        try:
            self.sock = self.dir.bind(self.name)
        except BaseException:
            self.dir.close()
            raise
        self.dropped = 0  # datagrams that were neither a job id nor a "get ready"

    def fileno(self) -> int:
        return self.sock.fileno()

    def job_ids(self) -> tuple[list[str], bool]:
        """The job ids received, and whether a "get ready" came (see ``get_ready``)."""
        ids, get_ready = [], False
        for datagram in _receive_all(self.sock):
            if datagram == GET_READY:
                get_ready = True
                continue
            text = datagram.decode("ascii", "replace")
            if is_job_id(text):
                ids.append(text)
            else:
                self._drop(datagram)
        return ids, get_ready

    def _drop(self, datagram: bytes) -> None:
        self.dropped += 1
        if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
            print(
                f"mpqueue worker {os.getpid()}: dropped {self.dropped} malformed "
                f"hand-off datagram(s), the last {datagram[:40]!r}",
                file=sys.stderr,
            )

    def close(self) -> None:
        self.dir.unlink(self.name)
        self.sock.close()
        self.dir.close()


class WakeSender:
    """The producer's end. Caches the list of servers until the wake dir changes."""

    def __init__(self, store_path: str):
        self.store_path = store_path
        self.dir: _SocketDir | None = None
        self.sock: socket.socket | None = None
        self.cached_mtime = -1
        self.targets: list[tuple[str, str]] = []
        self.child_addresses: dict[int, str] = {}

    def notify(self, datagram: bytes = b"") -> None:
        for name, address in self._targets():
            try:
                self._socket().sendto(datagram, address)
            except (BlockingIOError, InterruptedError):
                continue  # its buffer is full: it has wake-ups queued already
            except ConnectionRefusedError:
                self._forget(name)  # nobody listens there: a server that was killed
            except OSError:
                self.cached_mtime = -1  # gone meanwhile (or unreachable): list again

    def cancel(self) -> None:
        """Tell every server that a cancel was requested for a running job."""
        self.notify(CANCEL)

    def get_ready(self, child_pid: int) -> None:
        """Tell a child, before the commit that hands it a job, that the job's id follows
        soon: it wakes while the commit waits for the disk, instead of after it."""
        self._send_child(child_pid, GET_READY)

    def hint(self, child_pid: int, job_id: str) -> None:
        """Wake the child a job was handed to, naming the job. If it is not listening
        (gone?), its server recalls the job when it sees the exit."""
        self._send_child(child_pid, job_id.encode("ascii"))

    def _send_child(self, child_pid: int, datagram: bytes) -> None:
        address = self.child_addresses.get(child_pid)
        try:
            if address is None:
                if len(self.child_addresses) > 1024:
                    self.child_addresses.clear()  # pids of children long gone
                address = self._dir().address(f"{CHILD_PREFIX}{child_pid}")
                self.child_addresses[child_pid] = address
            self._socket().sendto(datagram, address)
        except OSError:
            pass

    def _targets(self) -> list[tuple[str, str]]:
        # fstat of an open directory: no path walk per enqueue (this runs after every
        # one-by-one commit, on caches the fsync left cold).
        try:
            socket_dir = self._dir()
            mtime = os.fstat(socket_dir.fd).st_mtime_ns
        except (OSError, StoreError):
            return []
        if mtime != self.cached_mtime:
            self.cached_mtime = mtime
            self.targets = [
                (name, socket_dir.address(name))
                for name in os.listdir(socket_dir.fd)
                if name.isdigit()
            ]
        return self.targets

    def _dir(self) -> _SocketDir:
        if self.dir is None:
            self.dir = _SocketDir(self.store_path)
        return self.dir

    def _socket(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.sock.setblocking(False)
        return self.sock

    def _forget(self, name: str) -> None:
        if self.dir is not None:
            self.dir.unlink(name)
        self.cached_mtime = -1

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.dir is not None:
            self.dir.close()
            self.dir = None
