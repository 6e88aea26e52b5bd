"""A damaged ``data.mdb`` is refused before LMDB maps it.

LMDB maps the data file and trusts it: a page the tree points to beyond the end of a
truncated file is a SIGBUS that kills the process with no message, and an empty file
beside an existing store is silently initialized as a new, empty store. So before
``lmdb.open`` the file is read with ``pread`` (never mapped) and checked against its
two meta pages (the layout is LMDB's ``MDB_meta``, native byte order):

    page header (16 bytes), then: magic u32 = 0xBEEFC0DE, version u32 = 1,
    address u64, map size u64, two MDB_db (free pages, main; 48 bytes each: pad u32
    (the page size, in the free one), flags u16, depth u16, branch/leaf/overflow
    page counts u64, entries u64, root u64), last page number u64, txn id u64.

The meta with the higher txn id is the current one. Its trees' roots must lie inside
the file, and so must every page up to its last page number, except pages that the
last commit allocated and freed again without writing them: LMDB leaves those past
the end of the file (measured: 5 of 6,000 random commits), and lists them in its
free-page tree, which is then read to tell such a tail from a truncation.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass

from ...errors import StoreCorrupt
from .wakeup import WAKE_DIR

DATA_FILE = "data.mdb"
LOCK_FILE = "lock.mdb"
MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
PAGE_HEADER = 16
META_PAGES = 2
NO_PAGE = 2**64 - 1  # LMDB's P_INVALID: an empty tree's root
P_BRANCH, P_LEAF, P_OVERFLOW = 0x01, 0x02, 0x04
F_BIGDATA = 0x01  # a leaf node whose data lives on overflow pages
MAX_FREE_PAGES_READ = 4096  # the free tree is small; a bigger walk means a damaged one
NEW_STORE_WAIT_S = 1.0  # how long a half-created data file may stay short (see below)

_PAGE = struct.Struct("=QHHHH")  # pgno, pad, flags, lower, upper
_META = struct.Struct("=II8xQI")  # magic, version, (address), map size, page size
_ROOT = struct.Struct("=Q")
_FREE_ROOT_AT, _MAIN_ROOT_AT, _LAST_AT = 80, 128, 136
_LAST_TXN = struct.Struct("=QQ")
_NODE = struct.Struct("=HHHH")  # lo, hi, flags, key size
_U64 = struct.Struct("=Q")


@dataclass(frozen=True)
class Meta:
    """What one valid meta page says about the file."""

    txn_id: int
    page_size: int
    map_size: int
    last_page: int
    free_root: int
    main_root: int


def parse_meta(page: bytes) -> Meta | None:
    """The meta in one meta page, or None when it is not a valid LMDB meta page."""
    if len(page) < _LAST_AT + _LAST_TXN.size:
        return None
    magic, version, map_size, page_size = _META.unpack_from(page, PAGE_HEADER)
    if magic != MAGIC or version != DATA_VERSION or not _plausible_page_size(page_size):
        return None
    last_page, txn_id = _LAST_TXN.unpack_from(page, _LAST_AT)
    return Meta(
        txn_id,
        page_size,
        map_size,
        last_page,
        _ROOT.unpack_from(page, _FREE_ROOT_AT)[0],
        _ROOT.unpack_from(page, _MAIN_ROOT_AT)[0],
    )


def _plausible_page_size(size: int) -> bool:
    return 512 <= size <= 65536 and size & (size - 1) == 0


def check_data_file(store_dir: str) -> None:
    """Refuse a ``data.mdb`` that LMDB would crash on or silently replace.

    One pread of the two meta pages in the common case. A missing file is a new
    store, unless the store's other files say it existed. Raises StoreCorrupt.
    """
    path = os.path.join(store_dir, DATA_FILE)
    deadline = time.monotonic() + NEW_STORE_WAIT_S
    seen_txn = -1
    while True:
        try:
            problem, txn_id = _problem(path, existed=_store_existed(store_dir))
        except FileNotFoundError:
            return
        if problem is None:
            return
        # Another process creating this store writes its first pages under LMDB's
        # lock: a short file beside a lock file may be that, briefly. And a commit
        # made while the free-page tree was read may have reused its pages: look again.
        creating = problem.startswith("only") and time.monotonic() < deadline
        if not creating and txn_id == seen_txn:
            break
        seen_txn = txn_id
        if creating:
            time.sleep(0.01)
    raise StoreCorrupt(
        f"the store file {path} is corrupt: {problem}; restore it from "
        f"a backup (mpqueue backup), or move the directory away to "
        f"start an empty store"
    )


def _store_existed(store_dir: str) -> bool:
    return any(os.path.exists(os.path.join(store_dir, name)) for name in (LOCK_FILE, WAKE_DIR))


def _problem(path: str, existed: bool) -> tuple[str | None, int]:
    """What is wrong with the data file (None: nothing LMDB would trip on), and the
    txn id of the meta page it was judged by (-1: none)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        head = os.pread(fd, 2 * 65536, 0)
        size = os.fstat(fd).st_size  # after the read: a commit only ever adds pages
        if size == 0:
            return ("only 0 bytes, beside an existing store" if existed else None), -1
        meta = _current_meta(head)
        if meta is None:
            return (
                "only a partial meta page"
                if size < 2 * 512
                else "neither meta page is a valid LMDB meta page"
            ), -1
        pages = size // meta.page_size
        if pages < META_PAGES:
            return f"only {size} bytes, less than its two meta pages", meta.txn_id
        return _tail_problem(fd, meta, pages), meta.txn_id
    finally:
        os.close(fd)


def _current_meta(head: bytes) -> Meta | None:
    first = parse_meta(head)
    size = first.page_size if first is not None else _any_page_size(head)
    second = parse_meta(head[size : 2 * size]) if size else None
    valid = [m for m in (first, second) if m is not None]
    return max(valid, key=lambda m: m.txn_id) if valid else None


def _any_page_size(head: bytes) -> int:
    """The page size from the second meta page when the first is damaged."""
    for size in (4096, 8192, 16384, 32768, 65536, 512, 1024, 2048):
        found = parse_meta(head[size : 2 * size])
        if found is not None and found.page_size == size:
            return size
    return 0


def _tail_problem(fd: int, meta: Meta, pages: int) -> str | None:
    for what, root in (("free-page tree", meta.free_root), ("main tree", meta.main_root)):
        if root != NO_PAGE and root >= pages:
            return (
                f"its {what} starts at page {root}, but the file ends at page "
                f"{pages} ({pages * meta.page_size} bytes): it was truncated"
            )
    if meta.last_page < pages:
        return None
    missing = range(pages, meta.last_page + 1)
    free = _free_pages(fd, meta)
    if free is None or any(page not in free for page in missing):
        return (
            f"it uses pages up to {meta.last_page}, but the file ends at page "
            f"{pages} ({pages * meta.page_size} bytes): it was truncated"
        )
    return None


def _free_pages(fd: int, meta: Meta) -> set[int] | None:
    """Every page number listed in the free-page tree (None: it cannot be read)."""
    free: set[int] = set()
    todo = [] if meta.free_root == NO_PAGE else [meta.free_root]
    reads = 0
    while todo:
        reads += 1
        page = _read_page(fd, todo.pop(), meta.page_size)
        if page is None or reads > MAX_FREE_PAGES_READ:
            return None
        flags = _PAGE.unpack_from(page)[2]
        for node_at in _node_offsets(page):
            lo, hi, node_flags, key_size = _NODE.unpack_from(page, node_at)
            if flags & P_BRANCH:
                todo.append(lo | hi << 16 | node_flags << 32)
                continue
            ids = _leaf_data(fd, page, node_at, lo | hi << 16, node_flags, key_size, meta)
            if ids is None:
                return None
            free.update(ids)
    return free


def _read_page(fd: int, pgno: int, page_size: int) -> bytes | None:
    page = os.pread(fd, page_size, pgno * page_size)
    if len(page) < page_size or _PAGE.unpack_from(page)[0] != pgno:
        return None
    return page


def _node_offsets(page: bytes) -> list[int]:
    lower = _PAGE.unpack_from(page)[3]
    count = max(0, (lower - PAGE_HEADER) // 2)
    offsets = struct.unpack_from(f"={count}H", page, PAGE_HEADER)
    return [at for at in offsets if at + _NODE.size <= len(page)]


def _leaf_data(
    fd: int, page: bytes, node_at: int, data_size: int, node_flags: int, key_size: int, meta: Meta
) -> list[int] | None:
    """The page numbers in one free-tree record (a count, then that many ids)."""
    data_at = node_at + _NODE.size + key_size
    if node_flags & F_BIGDATA:
        overflow = _U64.unpack_from(page, data_at)[0]
        raw = os.pread(fd, data_size, overflow * meta.page_size + PAGE_HEADER)
    else:
        raw = page[data_at : data_at + data_size]
    if len(raw) < _U64.size or len(raw) % _U64.size:
        return None
    count = _U64.unpack_from(raw)[0]
    if count * _U64.size + _U64.size > len(raw):
        return None
    return list(struct.unpack_from(f"={count}Q", raw, _U64.size))
