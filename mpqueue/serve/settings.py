"""``ServeSettings``: the validated options of ``mpqueue serve``, each default with its
meaning."""

from __future__ import annotations

from dataclasses import dataclass

from ..history import HISTORY_EVERY_S
from ..identity import DEFAULT_LEASE_S
from ..limits import check_delay, check_int, check_positive
from ..location import DEFAULT_MODE, check_location, check_mode, check_shared_location
from ..logs import DEFAULT_LOG_FORMAT, check_format, check_level
from ..queues import Selection

DEFAULT_BATCH = 256  # most jobs claimed in one write transaction
DEFAULT_POLL_INTERVAL_S = 1.0  # a safety net: wake-ups come by socket (stores may differ)
DEFAULT_GRACE_S = 30.0  # on SIGTERM, running jobs get this long to finish
DEFAULT_TIMEOUT_GRACE_S = 1.0  # a job past its timeout is SIGKILLed this much later
DEFAULT_PREFETCH_MAX = 64  # most jobs queued at one child beyond the running one
PREFETCH_WINDOW_S = 0.05  # prefetch about this much work per child (adaptive)
DEFAULT_METRICS_HOST = "127.0.0.1"  # metrics name tasks: not on every interface unless asked


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
    # Prometheus metrics (see metrics.py): an HTTP endpoint, and/or a file written at exit.
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST
    metrics_file: str | None = None
    # How often the depth history is sampled (history.py); shorter only in tests.
    history_every_s: float = HISTORY_EVERY_S
    # The queues served (see queues.py); None: every queue.
    queues: Selection | None = None
    # Import the --import modules in the server process too, and fire the periodic
    # schedules they define (periodic.py); False: neither.
    periodic: bool = True

    @property
    def metrics(self) -> bool:
        """Whether this server keeps metrics (prometheus_client is imported only then)."""
        return self.metrics_port is not None or self.metrics_file is not None

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
        check_positive("history interval", self.history_every_s)
        check_format(self.log_format)
        if self.log_level is not None:
            check_level(self.log_level)
        if self.metrics_port is not None:
            check_int("metrics port", self.metrics_port, 1, 65535)
        if self.max_memory_per_child_mb is not None:
            check_positive("max memory per child (MB)", self.max_memory_per_child_mb)
        return self
