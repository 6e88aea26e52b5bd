"""Prometheus metrics: what a server did, and the store's gauges read at each scrape.

Imported only when a metrics option is given (``serve --metrics-port`` or
``--metrics-file``, ``mpqueue metrics``): ``prometheus_client`` is an optional extra
(``pip install 'mpqueue[metrics]'``) and a server without those options never imports
it. Every figure lives on a registry of its own, never the library's global one.

Store-wide (one ``store.stats()`` read transaction and one ``store.paused()`` per
scrape, in the scraping thread, on a store handle of its own):

- ``mpqueue_jobs{state}``: jobs in each state (``JobState``).
- ``mpqueue_queue_jobs{queue, state}``: ready and processing jobs of each named queue
  (``default`` always, the others while they have any).
- ``mpqueue_oldest_ready_age_seconds``: how long the oldest ready job has been due.
- ``mpqueue_paused``: 1 while the whole queue is paused; ``mpqueue_task_paused{task}``:
  1 for each paused task.
- ``mpqueue_store_up``: 0 when the store could not be read (the gauges above are then
  missing from that scrape).

Per server (``ServerMetrics``; the coordinator calls it only when metrics are on):

- ``mpqueue_jobs_finished_total{task, outcome}``: committed outcomes by how the run
  ended (``outcomes.ENDINGS``).
- ``mpqueue_job_failures_total{task, kind}``: of those, the retried and dead ones by
  how the run failed (``ErrorInfo.kind``: an exception, a crash, a timeout kill).
- ``mpqueue_job_run_seconds{task}``: how long each run took, as the server saw it.
- ``mpqueue_job_start_latency_seconds{task}``: from the job's ``run_at_ms`` (when it
  became due: its enqueue, or the end of its delay or retry backoff) to the moment the
  server saw it start at a worker.
- ``mpqueue_workers_busy`` and ``mpqueue_workers_idle``: ready workers with and without
  a job (read at the scrape).
- ``mpqueue_worker_restarts_total{reason}``: workers replaced (``retired``: a
  per-child limit; ``killed``: the server killed it, a timeout; ``crashed``).
- ``mpqueue_cycle_seconds`` and ``mpqueue_commit_seconds``: the coordinator's cycles
  that made a commit, and the store call of that commit alone.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

from .errors import ConfigError, StoreError
from .records import now_ms
from .store import Store, open_store

try:
    import prometheus_client as prom
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # one line, naming the extra that brings it
    raise ConfigError(
        f"metrics need prometheus-client ({exc}): pip install 'mpqueue[metrics]'"
    ) from None

UNKNOWN_TASK = "unknown"  # the task label of a job whose record the server never saw
# Run times: no-op jobs take well under a millisecond, batch work minutes.
RUN_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 1800, float("inf"))
LATENCY_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300, 3600, float("inf"))
CYCLE_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, float("inf"))


class StoreCollector(Collector):
    """The store-wide gauges, read from ``store`` at each collection."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[Any]:
        up = GaugeMetricFamily("mpqueue_store_up", "1 if the store could be read")
        try:
            gauges = self.store.gauges()
        except StoreError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("mpqueue_jobs", "Jobs in the store by state", labels=["state"])
        for state, count in gauges.counts.items():
            if state != "total":
                jobs.add_metric([state], count)
        yield jobs
        by_queue = GaugeMetricFamily(
            "mpqueue_queue_jobs",
            "Ready and processing jobs by named queue",
            labels=["queue", "state"],
        )
        for name, depth in gauges.queues.items():
            for state, count in depth.items():
                by_queue.add_metric([name, state], count)
        yield by_queue
        age = gauges.oldest_ready_age_s(now_ms())
        yield GaugeMetricFamily(
            "mpqueue_oldest_ready_age_seconds",
            "How long the oldest ready job has been due (0 when none is ready)",
            value=0.0 if age is None else age,
        )
        yield GaugeMetricFamily(
            "mpqueue_paused", "1 while the whole queue is paused", value=int(gauges.paused.all)
        )
        tasks = GaugeMetricFamily("mpqueue_task_paused", "1 for a paused task", labels=["task"])
        for task in sorted(gauges.paused.tasks):
            tasks.add_metric([task], 1)
        yield tasks


class WorkersCollector(Collector):
    """Busy and idle workers, counted at the scrape from ``workers()``: (ready, busy)
    pairs, one per worker (read by the scraping thread: the coordinator pays nothing)."""

    def __init__(self, workers: Callable[[], list[tuple[bool, bool]]]):
        self.workers = workers

    def collect(self) -> Iterator[Any]:
        states = self.workers()
        busy = sum(1 for ready, working in states if ready and working)
        idle = sum(1 for ready, working in states if ready and not working)
        yield GaugeMetricFamily("mpqueue_workers_busy", "Workers running a job", value=busy)
        yield GaugeMetricFamily("mpqueue_workers_idle", "Ready workers without a job", value=idle)


def store_registry(store: Store) -> prom.CollectorRegistry:
    """A registry of the store-wide gauges alone (``mpqueue metrics``)."""
    registry = prom.CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(store))
    return registry


def render(registry: prom.CollectorRegistry) -> str:
    """The registry in the Prometheus text format."""
    return prom.generate_latest(registry).decode("utf-8")


class Counts:
    """A counter family kept as plain ints by label values: the coordinator's hot path
    pays a dict update per event, not prometheus_client's per-child lock and lookup
    (several microseconds a job, at no-op rates a share of the throughput). The scrape
    builds the family from a copy."""

    def __init__(self, name: str, documentation: str, labels: list[str]):
        self.name, self.documentation, self.labels = name, documentation, labels
        self.values: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + 1

    def family(self) -> Any:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labels)
        for labels, value in list(self.values.items()):  # a copy: the coordinator adds
            family.add_metric(list(labels), value)
        return family


class Buckets:
    """A histogram family kept as plain bucket counts by label values (as ``Counts``).
    A scrape taken while the coordinator observes may see a sum one observation ahead of
    its buckets; the buckets and the count always agree."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        bounds: tuple[float, ...],
        unit: str = "",
    ):
        self.name, self.documentation, self.labels, self.unit = name, documentation, labels, unit
        self.bounds = bounds  # ends with +Inf, so every value has a bucket
        self.series: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., sum

    def observe(self, value: float, *labels: str) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0] * (len(self.bounds) + 1)
        series[bisect.bisect_left(self.bounds, value)] += 1  # le: value <= its bound
        series[-1] += value

    def family(self) -> Any:
        family = HistogramMetricFamily(
            self.name, self.documentation, labels=self.labels, unit=self.unit
        )
        for labels, series in list(self.series.items()):
            counts = series[:]
            buckets = [
                ("+Inf" if bound == math.inf else repr(float(bound)), total)
                for bound, total in zip(self.bounds, itertools.accumulate(counts[:-1]))
            ]
            family.add_metric(list(labels), buckets, sum_value=counts[-1])
        return family


class ServerCollector(Collector):
    """What one server did (``Counts`` and ``Buckets``), at each collection."""

    def __init__(self, *families: Counts | Buckets):
        self.families = families

    def collect(self) -> Iterator[Any]:
        for family in self.families:
            yield family.family()


class ServerMetrics:
    """One server's metrics, its store gauges, and where they go (an HTTP endpoint,
    a file at exit)."""

    def __init__(
        self,
        location: str,
        mode: str,
        workers: Callable[[], list[tuple[bool, bool]]],
        file: str | None = None,
    ):
        self.file = file
        self.httpd: Any = None
        self.registry = registry = prom.CollectorRegistry(auto_describe=False)
        # A handle of its own: the scrape reads from the HTTP thread, never through the
        # coordinator's (a PostgreSQL connection it may be using at that moment).
        self.store = open_store(location, mode=mode)
        registry.register(StoreCollector(self.store))
        registry.register(WorkersCollector(workers))
        self.finished = Counts(
            "mpqueue_jobs_finished",
            "Runs this server ended, by task and outcome",
            ["task", "outcome"],
        )
        self.failures = Counts(
            "mpqueue_job_failures",
            "Failed runs (retried or dead) by task and how they failed",
            ["task", "kind"],
        )
        self.run_s = Buckets(
            "mpqueue_job_run_seconds", "Run time of a job by task", ["task"], RUN_BUCKETS
        )
        self.latency_s = Buckets(
            "mpqueue_job_start_latency_seconds",
            "From a job's run-at (when it was due) to its start, by task",
            ["task"],
            LATENCY_BUCKETS,
        )
        self.restarts = Counts("mpqueue_worker_restarts", "Workers replaced, by reason", ["reason"])
        self.cycle_s = Buckets(
            "mpqueue_cycle", "Coordinator cycles that committed, in seconds", [], CYCLE_BUCKETS,
            unit="seconds",
        )  # fmt: skip
        self.commit_s = Buckets(
            "mpqueue_commit", "The store call of a cycle's commit, in seconds", [], CYCLE_BUCKETS,
            unit="seconds",
        )  # fmt: skip
        registry.register(
            ServerCollector(
                self.finished,
                self.failures,
                self.run_s,
                self.latency_s,
                self.restarts,
                self.cycle_s,
                self.commit_s,
            )
        )

    # ---- recording (the coordinator's thread) ----------------------------------------
    def ended(
        self, how: str, task: str | None, ran_s: float | None, failure: str | None = None
    ) -> None:
        """A committed outcome: the run of a job of ``task`` ended ``how``; ``failure``
        is the error's kind when it failed (``exception``, ``crash``, ``timeout``...)."""
        task = task or UNKNOWN_TASK
        self.finished.inc(task, how)
        if failure is not None:
            self.failures.inc(task, failure)
        if ran_s is not None:
            self.run_s.observe(ran_s, task)

    def started(self, task: str, latency_s: float) -> None:
        # Hosts' clocks may disagree by a little: a start before the run-at is 0.
        self.latency_s.observe(max(0.0, latency_s), task)

    def restarted(self, reason: str) -> None:
        self.restarts.inc(reason)

    def cycled(self, cycle_s: float, commit_s: float) -> None:
        self.cycle_s.observe(cycle_s)
        self.commit_s.observe(commit_s)

    # ---- output -----------------------------------------------------------------------
    def listen(self, host: str, port: int) -> None:
        """Serve the text format on ``host:port`` (prometheus_client's server, a thread)."""
        try:
            self.httpd, _ = prom.start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
            ) from None

    def close(self) -> None:
        """Stop serving, write the file if one was asked for, close the store handle."""
        try:
            if self.httpd is not None:
                self.httpd.shutdown()
                self.httpd.server_close()
            if self.file is not None:
                write_file(self.file, self.registry)
        finally:
            self.store.close()


def write_file(path: str, registry: prom.CollectorRegistry) -> None:
    """The node_exporter textfile format: a temporary file in the same directory renamed
    over ``path``, so a collector never reads half a file."""
    try:
        prom.write_to_textfile(path, registry)
    except OSError as exc:
        raise ConfigError(f"cannot write the metrics file {os.fsdecode(path)!r}: {exc}") from None
