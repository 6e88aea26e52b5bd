"""Who may open an LMDB store: its owner, and nobody who is not trusted like it.

Whoever can write a store runs code as the servers that serve it: a job's payload is
a pickle, loaded in the worker child that runs it. So a store is private: new store
directories are 0700 and their files 0600 whatever the umask, and a store that another
user owns, or that group or others can write, is refused with a message naming the fix.
Setups that share one store between users on purpose (a group of trusted operators)
set ``MPQUEUE_SHARED_STORE=1``; they then trust every user who can write it.
"""

from __future__ import annotations

import os
import stat

from ...errors import ConfigError, StoreError
from ...location import SHARED_STORE_ENV

DIR_MODE = 0o700
FILE_MODE = 0o600
STORE_FILES = ("data.mdb", "lock.mdb")


def shared_store_allowed() -> bool:
    return os.environ.get(SHARED_STORE_ENV, "") not in ("", "0")


def make_store_dir(path: str) -> None:
    """Create the store directory (0700) if missing; parents as the umask says."""
    if os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE)  # the umask may have taken bits mkdir was given
    except FileExistsError:
        if not os.path.isdir(path):
            raise ConfigError(f"store path {path!r} is a file, not a directory") from None
    except NotADirectoryError as exc:
        raise ConfigError(f"store path {path!r} is under a file, not a directory") from exc
    except OSError as exc:
        raise StoreError(f"cannot create store directory {path!r}: {exc}") from exc


def check_trusted(path: str) -> None:
    """Refuse a store another user owns or could write (unless shared on purpose)."""
    if shared_store_allowed():
        return
    me = os.geteuid()
    for entry in (path, *(os.path.join(path, name) for name in STORE_FILES)):
        try:
            info = os.lstat(entry)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(info.st_mode):
            raise ConfigError(f"{entry!r} is a symlink; a store's files must be its own")
        if info.st_uid != me:
            raise ConfigError(
                f"store {path!r} belongs to uid {info.st_uid}, not to this user (uid {me}): "
                f"whoever can write a store runs code in its servers; use it as its owner, "
                f"or set {SHARED_STORE_ENV}=1 to trust its owner (docs/security.md)"
            )
        if info.st_mode & 0o022:
            raise ConfigError(
                f"{entry!r} is writable by group or others (mode "
                f"{stat.S_IMODE(info.st_mode):o}): whoever can write a store runs code in "
                f"its servers; run chmod -R go-w {path!r}, or set {SHARED_STORE_ENV}=1 to "
                f"share it on purpose (docs/security.md)"
            )
