"""Store backends behind one interface; ``open_store`` picks one from a location."""

from __future__ import annotations

from ..config import DEFAULT_MAP_SIZE, check_mode, check_store_dir
from .base import OpCounter, Store

__all__ = ["OpCounter", "Store", "open_store"]


def open_store(location: str, *, mode: str = "optimized", map_size: int = DEFAULT_MAP_SIZE,
               sync: bool = True) -> Store:
    """Open the store at ``location`` (a directory path: LMDB) in ``mode``."""
    check_mode(mode)
    check_store_dir(location)
    if mode == "legacy":
        from .legacy import LegacyLmdbStore
        return LegacyLmdbStore(location, map_size=map_size, sync=sync)
    from .lmdb import LmdbStore
    return LmdbStore(location, map_size=map_size, sync=sync)
