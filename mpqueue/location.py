"""Where a store is: an LMDB directory, a PostgreSQL URL or ``memory://[NAME]`` (a store
in this process's memory), and the mode it runs in.

The checks here run before a store is opened, so a bad location is refused with one
line before anything is created.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

PATH_ENV = "MPQUEUE_PATH"
SHARED_STORE_ENV = "MPQUEUE_SHARED_STORE"  # =1: open a store others own or can write
DEFAULT_PATH = "./mpqueue-data"  # used when neither a path nor $MPQUEUE_PATH is given
MODES = ("optimized", "legacy")
DEFAULT_MODE = "optimized"

# LMDB map: address space, not disk (files are sparse). Grown by doubling on MapFullError
# (see store/lmdb/env.py); every process passes the same initial size, since a smaller one
# given by a later opener would be refused or would shrink what others see.
DEFAULT_MAP_SIZE = 1 << 30


def resolve_path(path: str | os.PathLike[str] | None) -> str:
    """The store location: the argument, else $MPQUEUE_PATH, else ./mpqueue-data."""
    if path is None or str(path) == "":
        path = os.environ.get(PATH_ENV) or DEFAULT_PATH
    return str(path)


def check_store_dir(path: str) -> Path:
    """Refuse a path that is an existing file; the directory itself is created on open."""
    resolved = Path(path).expanduser()
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"store path {str(resolved)!r} is a file, not a directory")
    return resolved


URL_SCHEMES = ("postgresql://", "postgres://")  # a location with one of these: PostgreSQL


def is_url(location: str) -> bool:
    """True when ``location`` names a PostgreSQL database rather than an LMDB directory."""
    return location.startswith(URL_SCHEMES)


MEMORY_SCHEME = "memory://"  # a location with it: a store in this process's memory


def is_memory(location: str) -> bool:
    """True when ``location`` names an in-process memory store (``memory://[NAME]``)."""
    return location.startswith(MEMORY_SCHEME)


def check_shared_location(location: str) -> None:
    """Refuse a memory store where other processes would have to reach it (a server,
    the command line): its jobs live only in the process that made them."""
    if is_memory(location):
        raise ConfigError(
            f"{location!r} is a store in one process's memory: no server or command can "
            f"reach its jobs; run them in that process with queue.run_pending()"
        )


def redact(location: str) -> str:
    """The location fit for logs and messages: a URL without its password (see
    ``store/pg_url.py``); never raises."""
    if not is_url(location):
        return location
    from .store.postgres.url import display  # the URL rules live with the PostgreSQL store

    return display(location)


def check_location(location: str, mode: str) -> None:
    """Refuse a store location that cannot work: a file as LMDB directory, or a
    PostgreSQL URL or memory store with a mode other than "optimized" (the only one
    they have)."""
    if not is_url(location) and not is_memory(location):
        check_store_dir(location)
    elif mode != "optimized":
        kind = "PostgreSQL store (postgresql://...)" if is_url(location) else "memory store"
        raise ConfigError(
            f"mode {mode!r} exists only for LMDB stores; a {kind} runs in mode 'optimized'"
        )


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ConfigError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode
