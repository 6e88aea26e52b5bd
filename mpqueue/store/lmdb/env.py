"""LMDB environment lifecycle: one handle per process, map growth, error translation.

This module and ``lmdb.py``/``legacy.py`` are the only ones that import ``lmdb``.
Rules followed (each guards against a failure LMDB shows when it is broken):
- an environment is opened once per process and never used across ``fork()``;
- commits are synchronous and ``writemap`` is off: durability first, speed by batching;
- ``MapFullError`` grows the map and redoes the whole transaction; ``MapResizedError``
  adopts the size another process set; ``ReadersFullError`` clears stale slots;
- network filesystems are refused, LMDB's locking does not work there.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import lmdb

from ...errors import ConfigError, MpqueueError, StoreCorrupt, StoreError, StoreFull
from ..base import OpCounter
from . import keys
from .meta import DATA_FILE, check_data_file
from .trust import FILE_MODE, check_trusted, make_store_dir

T = TypeVar("T")

NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "ncpfs",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "9p",
        "davfs",
        "sshfs",
        "beegfs",
    }
)
_TRANSIENT_RETRIES = 20
# What LMDB says about a damaged file (MDB_CORRUPTED, MDB_PAGE_NOTFOUND, MDB_INVALID;
# MDB_BAD_TXN follows them on the same transaction).
_CORRUPT_ERRORS = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.BadTxnError)

MAX_MAP_SIZE = 1 << 40  # the map grows by doubling (on MapFullError) up to this
MAX_READERS = 1024  # only the first opener sets it, so set it high everywhere


def mount_fs_type(path: str, mounts_text: str) -> str:
    """The filesystem type of the mount that holds ``path`` (longest mount-point match)."""
    best, best_type = "", ""
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        mount_point = parts[1].replace("\\040", " ")
        inside = path == mount_point or path.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, parts[2]
    return best_type


def is_network_fs(fs_type: str) -> bool:
    return fs_type in NETWORK_FS_TYPES or fs_type.startswith("fuse")


def refuse_network_fs(path: str, mounts_text: str | None = None) -> None:
    if mounts_text is None:
        try:
            with open("/proc/mounts", encoding="utf-8") as fh:
                mounts_text = fh.read()
        except OSError:
            return  # not Linux: nothing to check against
    fs_type = mount_fs_type(os.path.realpath(path), mounts_text)
    if is_network_fs(fs_type):
        raise ConfigError(
            f"store path {path!r} is on a {fs_type} filesystem; LMDB's locks "
            "do not work on network or FUSE filesystems, use a local disk"
        )


class Tx:
    """A transaction with every operation counted (see ``OpCounter``)."""

    __slots__ = ("txn", "dbs", "counter")

    def __init__(self, txn: lmdb.Transaction, dbs: dict[bytes, Any], counter: OpCounter):
        self.txn, self.dbs, self.counter = txn, dbs, counter

    # A database handle of None is one a read-only store lacks (``_open_db``): empty.
    def get(self, db: bytes, key: bytes) -> bytes | None:
        self.counter.gets += 1
        handle = self.dbs[db]
        if handle is None:
            return None
        return cast(bytes | None, self.txn.get(key, db=handle))  # no buffers=True

    def put(self, db: bytes, key: bytes, value: bytes) -> None:
        self.counter.puts += 1
        self.txn.put(key, value, db=self.dbs[db])

    def put_many(self, db: bytes, items: list[tuple[bytes, bytes]]) -> None:
        self.counter.puts += len(items)
        self.txn.cursor(db=self.dbs[db]).putmulti(items)

    def delete(self, db: bytes, key: bytes) -> bool:
        self.counter.deletes += 1
        return bool(self.txn.delete(key, db=self.dbs[db]))

    def pop(self, db: bytes, key: bytes) -> bytes | None:
        """Delete ``key``'s entry and return its value (None: there was none), in one
        lookup; counted as the get and the delete it replaces."""
        self.counter.gets += 1
        handle = self.dbs[db]
        if handle is None:
            return None
        value = cast(bytes | None, self.txn.pop(key, db=handle))
        self.counter.deletes += value is not None
        return value

    def scan(
        self, db: bytes, start: bytes = b"", stop: bytes | None = None, values: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``start <= key`` (and ``key < stop``, or key starting with
        ``start`` when stop is None and start is a prefix scan)."""
        if self.dbs[db] is None:
            return
        cursor = self.txn.cursor(db=self.dbs[db])
        self.counter.cursor_steps += 1
        found = cursor.set_range(start) if start else cursor.first()
        while found:
            key = cast(bytes, cursor.key())
            if stop is not None and key >= stop:
                return
            yield key, (cast(bytes, cursor.value()) if values else b"")
            self.counter.cursor_steps += 1
            found = cursor.next()

    def scan_back(self, db: bytes) -> Iterator[bytes]:
        """Every key of ``db``, last first."""
        if self.dbs[db] is None:
            return
        cursor = self.txn.cursor(db=self.dbs[db])
        self.counter.cursor_steps += 1
        found = cursor.last()
        while found:
            yield cast(bytes, cursor.key())
            self.counter.cursor_steps += 1
            found = cursor.prev()

    def scan_back_below(
        self, db: bytes, stop: bytes | None, values: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``key < stop`` (every entry when stop is None), last first."""
        if self.dbs[db] is None:
            return
        cursor = self.txn.cursor(db=self.dbs[db])
        self.counter.cursor_steps += 1
        if stop is None:
            found = cursor.last()
        elif cursor.set_range(stop):  # at the first key >= stop: the one before it
            found = cursor.prev()
        else:  # every key is below stop
            found = cursor.last()
        while found:
            yield cast(bytes, cursor.key()), (cast(bytes, cursor.value()) if values else b"")
            self.counter.cursor_steps += 1
            found = cursor.prev()

    def scan_prefix(
        self, db: bytes, prefix: bytes, values: bool = True
    ) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.scan(db, prefix, values=values):
            if not key.startswith(prefix):
                return
            yield key, value

    def keys_from(self, db: bytes, start: bytes) -> Iterator[bytes]:
        """The keys >= ``start`` of ``db`` in order, stepped by the cursor's own iterator
        (no generator frame per key) for the merges of hot paths; uncounted: the caller
        adds a cursor step for each key it reads."""
        handle = self.dbs[db]
        if handle is None:
            return iter(())
        cursor = self.txn.cursor(db=handle)
        if not cursor.set_range(start):
            return iter(())
        return cast(Iterator[bytes], cursor.iternext(keys=True, values=False))

    def prefix_items(self, db: bytes, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """The entries whose key starts with ``prefix``, in key order: ``scan_prefix``
        as a list, stepped by the cursor's own iterator (no generator per entry), for
        the few-entry prefixes of hot paths."""
        handle = self.dbs[db]
        if handle is None:
            return []
        cursor = self.txn.cursor(db=handle)
        self.counter.cursor_steps += 1
        if not cursor.set_range(prefix):
            return []
        found: list[tuple[bytes, bytes]] = []
        for key, value in cast(Iterator[tuple[bytes, bytes]], cursor.iternext()):
            if not key.startswith(prefix):  # iternext starts where set_range put it
                break
            found.append((key, value))
        self.counter.cursor_steps += len(found)  # as scan counts: one step per next()
        return found

    def first_key(self, db: bytes) -> bytes | None:
        if self.dbs[db] is None:
            return None
        cursor = self.txn.cursor(db=self.dbs[db])
        self.counter.cursor_steps += 1
        return cast(bytes, cursor.key()) if cursor.first() else None

    def first_key_from(self, db: bytes, start: bytes) -> bytes | None:
        """The first key >= ``start`` in ``db`` (one cursor seek), or None."""
        for key, _ in self.scan(db, start, values=False):
            return key
        return None

    def has_entries(self, db: bytes) -> bool:
        """Whether ``db`` holds anything: ``entries(db) > 0`` without building the stat
        dict (a third of the cost, asked once per finished job), uncounted as it is."""
        handle = self.dbs[db]
        return handle is not None and bool(self.txn.cursor(db=handle).first())

    def entries(self, db: bytes) -> int:
        if self.dbs[db] is None:
            return 0
        return int(self.txn.stat(self.dbs[db])["entries"])


class _SharedEnv:
    def __init__(
        self, env: lmdb.Environment, dbs: dict[bytes, Any], pid: int, read_only: bool = False
    ):
        self.env, self.dbs, self.pid, self.users = env, dbs, pid, 0
        self.read_only = read_only
        self.resize_lock = threading.Lock()


_OPEN_ENVS: dict[str, _SharedEnv] = {}
_OPEN_LOCK = threading.Lock()


def acquire_env(path: str, map_size: int, sync: bool) -> _SharedEnv:
    """Open (or share, within this process) the environment at ``path``."""
    real = os.path.realpath(path)
    with _OPEN_LOCK:
        shared = _OPEN_ENVS.get(real)
        if shared is not None and shared.pid != os.getpid():
            raise StoreError(
                f"the LMDB environment {real!r} was opened before fork(); "
                "open stores after the fork or use spawn/forkserver"
            )
        if shared is None:
            shared = _OPEN_ENVS[real] = _open(real, map_size, sync)
        shared.users += 1
        return shared


def release_env(path: str) -> None:
    real = os.path.realpath(path)
    with _OPEN_LOCK:
        shared = _OPEN_ENVS.get(real)
        if shared is None or shared.pid != os.getpid():
            return
        shared.users -= 1
        if shared.users <= 0:
            del _OPEN_ENVS[real]
            shared.env.close()


def _open(path: str, map_size: int, sync: bool) -> _SharedEnv:
    make_store_dir(path)
    check_trusted(path)
    refuse_network_fs(path)
    check_data_file(path)  # before LMDB maps it: a truncated file is a SIGBUS there
    read_only, lock = _access(path)
    try:
        env = _retry_transient(
            path,
            lambda: lmdb.open(
                path,
                map_size=map_size,
                max_dbs=len(keys.ALL_DBS) + 2,
                max_readers=MAX_READERS,
                sync=sync,
                metasync=sync,
                writemap=False,
                map_async=False,
                max_spare_txns=0,
                subdir=True,
                lock=lock,
                readonly=read_only,
                mode=FILE_MODE,
            ),
        )
    except StoreError as exc:
        if _pid_taken_elsewhere(exc.__cause__):
            raise ConfigError(
                f"cannot open the LMDB store {path!r}: a process in another "
                "pid namespace (container) that has this process's pid "
                "uses it; an LMDB store works within one pid namespace "
                "only: open it from one namespace, or use PostgreSQL "
                "across containers"
            ) from exc
        raise
    try:
        if lock:
            env.reader_check()  # slots left by killed processes pin old pages: free them
        dbs = {name: _open_db(env, name, read_only) for name in keys.ALL_DBS}
    except lmdb.Error as exc:
        env.close()
        raise translate_error(exc, path) from exc
    return _SharedEnv(env, dbs, os.getpid(), read_only)


def _open_db(env: lmdb.Environment, name: bytes, read_only: bool) -> Any:
    """A named database's handle; None for a database that a store written before it
    was added lacks, opened read-only (so it cannot be created): it reads as empty (see
    ``Tx``)."""
    try:
        return env.open_db(name, create=not read_only)
    except lmdb.NotFoundError:
        if read_only and name in keys.ADDED_DBS:
            return None
        raise


def _access(path: str) -> tuple[bool, bool]:
    """(read-only, use the lock file) for this process: a store whose data file it may
    read but not write (permissions, a read-only mount) is opened read-only, so it can
    still be inspected; without write access to the lock file either, lock-free (no
    reader slot: a server writing meanwhile may make a record read as corrupt)."""
    data = os.path.join(path, DATA_FILE)
    if not os.path.exists(data) or os.access(data, os.W_OK):
        return False, True
    return True, os.access(os.path.join(path, "lock.mdb"), os.W_OK)


def _retry_transient(path: str, fn: Callable[[], T]) -> T:
    """LMDB's open can fail while another process opens or closes; retry with backoff."""
    import time

    delay = 0.001
    for attempt in range(_TRANSIENT_RETRIES):
        try:
            return fn()
        except lmdb.Error as exc:
            if isinstance(exc, _CORRUPT_ERRORS):
                raise translate_error(exc, path) from exc
            if attempt == _TRANSIENT_RETRIES - 1:
                raise StoreError(f"cannot open LMDB environment: {exc}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
    raise AssertionError("unreachable")


def _pid_taken_elsewhere(cause: BaseException | None) -> bool:
    """Whether LMDB could not lock this process's pid in the lock file (EAGAIN).

    LMDB marks each process's reader slots with a lock on the byte at offset pid: in one
    pid namespace that byte is ours alone, so EAGAIN there means a process with the same
    pid number in another namespace holds it (two containers on one store).
    """
    return isinstance(cause, lmdb.Error) and os.strerror(errno.EAGAIN) in str(cause)


def _make_private_dir(dest: str) -> None:
    """Create ``dest`` (0700), or take an existing empty directory; anything else is a
    ConfigError, so a backup never mixes with other files."""
    try:
        os.mkdir(dest, 0o700)
        return
    except FileExistsError:
        if not os.path.isdir(dest) or os.listdir(dest):
            raise ConfigError(
                f"backup destination {dest!r} exists and is not an empty directory; give a new path"
            ) from None
    except OSError as exc:
        raise ConfigError(f"cannot create backup directory {dest!r}: {exc}") from exc
    os.chmod(dest, 0o700)


def translate_error(exc: lmdb.Error, path: str) -> MpqueueError:
    """The mpqueue exception for an lmdb.Error in the store at ``path`` (raise it
    ``from`` the original)."""
    if isinstance(exc, lmdb.ReadonlyError):
        return StoreError(
            f"the store is read-only for this user (no write permission, or "
            f"a read-only mount); only reading works: {exc}"
        )
    if isinstance(exc, _CORRUPT_ERRORS):
        data_file = os.path.join(path, DATA_FILE)
        return StoreCorrupt(
            f"the store file {data_file} is corrupt ({exc}); restore it "
            f"from a backup (mpqueue backup), or check what is left with "
            f"mpqueue check"
        )
    if isinstance(exc, lmdb.BadValsizeError):
        return ConfigError(
            f"a key or value is the wrong size for LMDB (keys are 1-511 bytes): {exc}"
        )
    if isinstance(exc, lmdb.DiskError):
        return StoreFull(f"disk error while writing the store (disk full?): {exc}")
    if _looks_like_disk_full(exc):
        return StoreFull(f"the disk holding the store is full: {exc}")
    return StoreError(f"LMDB error: {exc}")


def _looks_like_disk_full(exc: lmdb.Error) -> bool:
    text = str(exc)
    return (
        os.strerror(errno.ENOSPC) in text
        or os.strerror(errno.EIO) in text
        or os.strerror(errno.EDQUOT) in text
    )


class EnvHandle:
    """This store object's view of the shared environment: counted transactions with the
    map-full / map-resized / readers-full recovery loop around them."""

    def __init__(self, path: str, map_size: int, sync: bool, counter: OpCounter):
        self.path = path
        self.counter = counter
        self.shared = acquire_env(path, map_size, sync)
        self.read_only = self.shared.read_only
        self.closed = False

    def write(self, body: Callable[[Tx], T]) -> T:
        """Run ``body`` in one write transaction; it may be run again from the start."""
        return self._run(body, write=True)

    def read(self, body: Callable[[Tx], T]) -> T:
        return self._run(body, write=False)

    def _run(self, body: Callable[[Tx], T], write: bool) -> T:
        if self.closed:
            raise StoreError(f"store {self.path!r} is closed")
        env = self.shared.env
        for _ in range(64):
            # A plain try (no context manager): this runs once per durable enqueue, on
            # the caches an fsync has just left cold.
            try:
                self.counter.txns += 1
                with env.begin(write=write) as txn:
                    return body(Tx(txn, self.shared.dbs, self.counter))
            except lmdb.Error as exc:
                if not self._recover(exc):
                    raise translate_error(exc, self.path) from exc
        raise StoreError("LMDB transaction kept failing after 64 recoveries")

    def _recover(self, cause: lmdb.Error) -> bool:
        """Fix what can be fixed before the transaction is redone; False = give up."""
        env = self.shared.env
        if isinstance(cause, lmdb.MapResizedError):
            env.set_mapsize(0)  # adopt the size another process grew the map to
            return True
        if isinstance(cause, lmdb.ReadersFullError):
            return env.reader_check() > 0
        if isinstance(cause, lmdb.MapFullError):
            self._grow()
            return True
        return False

    def _grow(self) -> None:
        env = self.shared.env
        with self.shared.resize_lock:
            current = env.info()["map_size"]
            if current >= MAX_MAP_SIZE:
                raise StoreFull(f"store map reached its maximum of {MAX_MAP_SIZE} bytes")
            env.set_mapsize(min(current * 2, MAX_MAP_SIZE))

    def reader_check(self) -> int:
        return int(self.shared.env.reader_check())

    def copy_to(self, dest: str) -> None:
        """A compacted copy of the environment in the new directory ``dest`` (0700,
        ``data.mdb`` 0600), from one read transaction: consistent while others write."""
        _make_private_dir(dest)
        target = os.path.join(dest, DATA_FILE)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot create the backup file {target!r}: {exc}") from exc
        try:
            self.shared.env.copyfd(fd, compact=True)
            os.fsync(fd)
        except lmdb.Error as exc:
            raise translate_error(exc, self.path) from exc
        finally:
            os.close(fd)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            release_env(self.path)
