"""The LMDB backend: the embedded default, one directory on the local file system.

``store`` holds the optimized layout's store and ``legacy`` the old design's, ``keys``
encodes the index keys, ``env`` opens the environment and runs transactions, ``meta``
and ``trust`` check a store before it is used, ``check`` verifies one, ``wakeup`` is the
servers' and children's local sockets. Nothing outside this package imports ``lmdb``.
"""

from __future__ import annotations

from ..base import Store


def open_lmdb(path: str, mode: str, *, map_size: int, sync: bool) -> Store:
    """The LMDB store at ``path`` in the layout ``mode`` names (a checked mode)."""
    # Imported here: importing the package (for its keys, say) opens nothing.
    from .legacy import LegacyLmdbStore
    from .store import LmdbStore

    layout = {cls.mode: cls for cls in (LmdbStore, LegacyLmdbStore)}[mode]
    return layout(path, map_size=map_size, sync=sync)
