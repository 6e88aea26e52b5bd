"""Store backends behind one interface; ``open_store`` picks one from a location."""

from __future__ import annotations

from ..location import DEFAULT_MAP_SIZE, check_location, check_mode, is_memory, is_url
from .base import OpCounter, Store

__all__ = ["OpCounter", "Store", "open_store"]


def open_store(
    location: str, *, mode: str = "optimized", map_size: int = DEFAULT_MAP_SIZE, sync: bool = True
) -> Store:
    """Open the store at ``location`` in ``mode``: a ``postgresql://`` (or
    ``postgres://``) URL opens a ``PostgresStore``, ``memory://[NAME]`` a
    ``MemoryStore`` (see store/memory.py), anything else is an LMDB directory
    (``map_size`` and ``sync`` apply to LMDB only)."""
    check_mode(mode)
    check_location(location, mode)
    if is_memory(location):
        from .memory import MemoryStore

        return MemoryStore(location)
    if is_url(location):
        from .postgres.store import PostgresStore

        return PostgresStore(location)
    from .lmdb import open_lmdb

    return open_lmdb(location, mode, map_size=map_size, sync=sync)
