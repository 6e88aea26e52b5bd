"""Defaults, each with its meaning, and the validation of user options."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .limits import (
    check_backoff,
    check_delay,
    check_int,
    check_positive,
    check_priority,
    check_retries,
    check_timeout,
)

PATH_ENV = "MPQUEUE_PATH"
SHARED_STORE_ENV = "MPQUEUE_SHARED_STORE"  # =1: open a store others own or can write
DEFAULT_PATH = "./mpqueue-data"  # used when neither a path nor $MPQUEUE_PATH is given
MODES = ("optimized", "legacy")
DEFAULT_MODE = "optimized"
DEFAULT_LIST_LIMIT = 100  # `mpqueue list` shows this many jobs unless --limit/--all
SHOW_REPR_MAX = 2000  # `mpqueue show` cuts longer argument/result reprs (--full)

DEFAULT_RETRIES = 3  # runs after the first before a job is dead-lettered
DEFAULT_TIMEOUT_S = None  # no per-job time limit unless a task asks for one
DEFAULT_PRIORITY = 0  # higher runs first
DEFAULT_BACKOFF_BASE_S = 1.0  # first retry waits 0.5-1 s, then doubles per attempt
DEFAULT_BACKOFF_CAP_S = 300.0  # no retry waits more than 5 minutes
DEFAULT_RESULT_TTL_S = 7 * 24 * 3600.0  # finished jobs (and results) kept for a week

# LMDB map: address space, not disk (files are sparse). Grown by doubling on MapFullError
# up to MAX_MAP_SIZE; every process passes the same initial size, since a smaller one
# given by a later opener would be refused or would shrink what others see.
DEFAULT_MAP_SIZE = 1 << 30
MAX_MAP_SIZE = 1 << 40
MAX_READERS = 1024  # only the first opener sets it, so set it high everywhere

TASK_OPTIONS = frozenset({"retries", "timeout", "priority", "name", "backoff", "backoff_cap"})


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
    from .store.pg_url import display  # the URL rules live with the PostgreSQL store

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


@dataclass(frozen=True)
class TaskOptions:
    """Validated per-task options (see ``Queue.task``)."""

    retries: int = DEFAULT_RETRIES
    timeout: float | None = DEFAULT_TIMEOUT_S
    priority: int = DEFAULT_PRIORITY
    backoff: float = DEFAULT_BACKOFF_BASE_S
    backoff_cap: float = DEFAULT_BACKOFF_CAP_S

    @classmethod
    def from_kwargs(cls, options: dict[str, Any]) -> TaskOptions:
        unknown = sorted(set(options) - TASK_OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown task option(s): {', '.join(unknown)}; "
                f"known: {', '.join(sorted(TASK_OPTIONS))}"
            )
        values = {k: v for k, v in options.items() if k != "name"}
        return cls(**values)

    def __post_init__(self) -> None:
        self.validate()  # every TaskOptions is in bounds, however it was made

    def validate(self) -> None:
        # The bounds of limits.py: checked once, when the task is declared.
        check_retries(self.retries)
        check_priority(self.priority)
        check_timeout(self.timeout)
        check_backoff("backoff", self.backoff)
        check_backoff("backoff_cap", self.backoff_cap)


DEFAULT_BATCH = 256  # most jobs claimed in one write transaction
DEFAULT_POLL_INTERVAL_S = 1.0  # optimized: a safety net, wake-ups come by socket
LEGACY_POLL_INTERVAL_S = 0.5  # legacy: the fixed interval the old design polled at
DEFAULT_GRACE_S = 30.0  # on SIGTERM, running jobs get this long to finish
DEFAULT_TIMEOUT_GRACE_S = 1.0  # a job past its timeout is SIGKILLed this much later
DEFAULT_PREFETCH_MAX = 64  # most jobs queued at one child beyond the running one
PREFETCH_WINDOW_S = 0.05  # prefetch about this much work per child (adaptive)
DEFAULT_LEASE_S = 10.0  # a coordinator on another host silent this long is dead


@dataclass(frozen=True)
class ServeSettings:
    """Validated options of ``mpqueue serve`` (see ``mpqueue serve --help``)."""

    path: str
    workers: int
    mode: str = DEFAULT_MODE
    imports: tuple[str, ...] = ()
    batch: int = DEFAULT_BATCH
    poll_interval_s: float | None = None
    until_empty: bool = False
    grace_s: float = DEFAULT_GRACE_S
    timeout_grace_s: float = DEFAULT_TIMEOUT_GRACE_S
    max_tasks_per_child: int | None = None
    max_memory_per_child_mb: float | None = None
    prefetch_max: int = DEFAULT_PREFETCH_MAX
    progress: bool | None = None  # None: a bar on a terminal, lines otherwise
    lease_s: float = DEFAULT_LEASE_S
    poll_only: bool = False  # claim only on poll ticks, no wake-ups (the old way; benchmarks)

    def validate(self) -> ServeSettings:
        check_int("workers", self.workers, 1, 4096)
        check_mode(self.mode)
        check_location(self.path, self.mode)
        check_shared_location(self.path)
        check_int("batch", self.batch, 1, 1_000_000)
        check_int("prefetch_max", self.prefetch_max, 0, 100_000)
        if self.poll_interval_s is not None:
            check_positive("poll interval", self.poll_interval_s)
        check_delay(self.grace_s, "grace")
        check_delay(self.timeout_grace_s, "timeout grace")
        if self.max_tasks_per_child is not None:
            check_int("max tasks per child", self.max_tasks_per_child, 1, 2**31)
        check_positive("lease", self.lease_s)
        if self.max_memory_per_child_mb is not None:
            check_positive("max memory per child (MB)", self.max_memory_per_child_mb)
        return self

    @property
    def poll_s(self) -> float:
        if self.poll_interval_s is not None:
            return self.poll_interval_s
        return LEGACY_POLL_INTERVAL_S if self.mode == "legacy" else DEFAULT_POLL_INTERVAL_S
