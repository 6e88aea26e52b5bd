"""``ServeSettings``: the validated options of ``mpqueue serve``, each default with its
meaning."""

from __future__ import annotations

from dataclasses import dataclass

from ..identity import DEFAULT_LEASE_S
from ..limits import check_delay, check_int, check_positive
from ..location import DEFAULT_MODE, check_location, check_mode, check_shared_location
from ..logs import DEFAULT_LOG_FORMAT, check_format, check_level

DEFAULT_BATCH = 256  # most jobs claimed in one write transaction
DEFAULT_POLL_INTERVAL_S = 1.0  # a safety net: wake-ups come by socket (stores may differ)
DEFAULT_GRACE_S = 30.0  # on SIGTERM, running jobs get this long to finish
DEFAULT_TIMEOUT_GRACE_S = 1.0  # a job past its timeout is SIGKILLed this much later
DEFAULT_PREFETCH_MAX = 64  # most jobs queued at one child beyond the running one
PREFETCH_WINDOW_S = 0.05  # prefetch about this much work per child (adaptive)


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
    # How the children log (as the CLI set up this process); None: they leave it alone.
    log_level: str | None = None
    log_format: str = DEFAULT_LOG_FORMAT

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
        check_format(self.log_format)
        if self.log_level is not None:
            check_level(self.log_level)
        if self.max_memory_per_child_mb is not None:
            check_positive("max memory per child (MB)", self.max_memory_per_child_mb)
        return self
