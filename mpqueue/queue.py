"""``Queue``: the public entry point. Owns the store location, the task registry and
the enqueue path; the store itself is opened lazily, on first use, so importing a
module that builds a Queue never opens LMDB (workers import task modules)."""

from __future__ import annotations

import builtins
import functools
import os
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

from .batch import Batches
from .cancellation import (
    CancelReport,
    cancel_all,
    check_reason,
    check_states,
    preview,
    request_text,
)
from .concurrency import QUEUE, TASK, Limit, check_concurrency, declare
from .dependencies import Dependencies, dependency_ids
from .display import describe
from .errors import ConfigError, JobNotFound, TaskNotFound
from .expiry import Expires, deadline_ms
from .handle import Job
from .history import HISTORY_AHEAD_MS, Point
from .hooks import Hook, Hooks, check_event
from .identity import server_dead
from .limits import check_int, check_priority, check_result_ttl, check_unique_key, run_at_ms
from .location import (
    DEFAULT_MAP_SIZE,
    DEFAULT_MODE,
    check_location,
    check_mode,
    redact,
    resolve_path,
)
from .pausing import PauseChange, Paused, pause_target
from .periodic import define as define_periodic
from .periodic_slots import Spec
from .polling import Poll
from .previews import of_call as preview_of_call
from .queues import DEFAULT_QUEUE, check_queue_name
from .rates import Rate, parse_rate
from .records import (
    FINISHED_STATES,
    PASS_MODES,
    PASS_NONE,
    PASS_ONE,
    JobRecord,
    JobState,
    is_job_id,
    new_job_id,
    new_job_ids,
    now_ms,
)
from .registry import Registry, check_name, resolve, task_name
from .schedules import ScheduleRow
from .serializer import dump_callable, dump_payload
from .signing import resolve_secret, sign
from .store import Store, open_store
from .store.base import CheckReport, Gauges
from .task import Task, TaskOptions

DEFAULT_RESULT_TTL_S = 7 * 24 * 3600.0  # finished jobs (and results) kept for a week


class Queue:
    """A durable job queue stored at ``path`` (an LMDB directory, created if missing).

    Parameters
    ----------
    path
        Directory of the store, a ``postgresql://`` URL, or ``memory://`` (this
        process only, for tests); default ``$MPQUEUE_PATH``, else ``./mpqueue-data``.
    mode
        ``"optimized"`` (default) or ``"legacy"`` (the pre-optimization design, kept
        for the benchmark).
    result_ttl
        Seconds a finished job (and its result) is kept.
    map_size
        Initial LMDB map size in bytes; it grows by itself when full.
    sync
        Fsync every commit (default True). False survives process crashes but may
        lose the last commits on an OS crash.
    secret
        Sign every job with this secret (default ``$MPQUEUE_SECRET``); a server that
        holds a secret runs only jobs signed with it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        mode: str = DEFAULT_MODE,
        result_ttl: float = DEFAULT_RESULT_TTL_S,
        map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True,
        secret: str | bytes | None = None,
    ):
        self.path = resolve_path(path)
        self.secret = resolve_secret(secret)  # signs every job (see signing.py)
        self.mode = check_mode(mode)
        check_location(self.path, self.mode)  # a postgresql:// URL is not a directory
        self.result_ttl_s = check_result_ttl(result_ttl)
        self.map_size = map_size
        self.sync = sync
        self.registry = Registry()
        self.hooks = Hooks()  # run where this queue's jobs run (see hooks.py)
        self._store: Store | None = None
        self._store_pid = 0
        self._lock = threading.Lock()
        self._batches = Batches()
        self._limits_written: set[str] = set()  # tasks whose concurrency this wrote

    # ---- store lifecycle ----------------------------------------------------------
    @property
    def store(self) -> Store:
        """The open store (opened on first use, and again in a forked child)."""
        if self._store is None or self._store_pid != os.getpid():
            with self._lock:
                if self._store is None or self._store_pid != os.getpid():
                    self._store = open_store(
                        self.path, mode=self.mode, map_size=self.map_size, sync=self.sync
                    )
                    self._store_pid = os.getpid()
        return self._store

    def close(self) -> None:
        if self._store is not None and self._store_pid == os.getpid():
            self._store.close()
        self._store = None

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Queue {redact(self.path)!r} mode={self.mode}>"  # no password

    # ---- tasks --------------------------------------------------------------------
    def task(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Register a task: ``@queue.task`` or ``@queue.task(retries=3, timeout=60.0,
        priority=0, backoff=1.0, backoff_cap=300.0, retry_on=None, no_retry_on=(),
        expires=None, queue="default", concurrency=None, rate=None, name=None)``.

        ``concurrency``: at most that many of its jobs run at once across every server
        on the store (see ``mpqueue.concurrency``); ``rate``: at most that many start
        per window, e.g. ``"100/m"`` (see ``mpqueue.rates``). Both are written to the
        store by this queue's first enqueue of the task and by servers that import it.

        ``queue``: the named queue its jobs go to; a server started with ``--queues``
        runs only the jobs of the queues it names (see ``mpqueue.queues``).

        ``retry_on``: an exception class or a tuple of them; when given, only a raise of
        one of them (or of a subclass) is retried, and any other ends the job dead at
        once. ``no_retry_on``: classes whose raise ends the job dead at once. The
        nearest class of the exception's MRO named in either list decides. A timeout, a
        worker crash and ``Retry`` are retried whatever the lists say; ``Fail`` never.
        ``task.options(...)`` overrides any of these per call.

        Raises ConfigError for an unknown or invalid option, DuplicateTask for a name
        already registered on this queue.
        """
        parsed = TaskOptions.from_kwargs(options)

        def register(func: Callable[..., Any]) -> Task:
            if not callable(func):
                raise ConfigError(f"@queue.task needs a callable; got {func!r}")
            name = check_name(options.get("name") or task_name(func))
            task = Task(self, func, name, parsed)
            self.registry.add(name, task)
            if parsed.concurrency is not None or parsed.rate is not None:
                declare(name, parsed.concurrency, parsed.rate)  # a server child writes it
            return task

        return register if fn is None else register(fn)

    def periodic(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        cron: str | None = None,
        every: timedelta | None = None,
        tz: str = "UTC",
        catch_up: str = "latest",
        **options: Any,
    ) -> Any:
        """Register a task that servers enqueue on a schedule:
        ``@queue.periodic(cron="*/5 * * * *", tz="Europe/Berlin")`` or
        ``@queue.periodic(every=timedelta(minutes=5))``; returns the ``Task``.

        ``cron``: a cron expression (5 fields, or 6 with seconds first) in time zone
        ``tz`` (needs the ``periodic`` extra); ``every``: a fixed interval of at least a
        second, on a grid from the Unix epoch. ``catch_up``: what a server does with the
        slots missed while none ran: ``"latest"`` (one run, for the latest), ``"all"``,
        or ``"none"``. The other options are ``@queue.task``'s (``retries``,
        ``priority``, ``timeout``, ``name``, ...). The function is called with no
        arguments.

        Servers whose ``--import`` modules define it declare it in their store and
        enqueue each slot once, however many servers run (see ``mpqueue.periodic``).
        Raises ConfigError for a bad spec or option, before anything is registered.
        """
        spec = Spec.parse(cron=cron, every=every, tz=tz, catch_up=catch_up)
        TaskOptions.from_kwargs(options)  # refused at the decorator's call, as task()

        def register(func: Callable[..., Any]) -> Task:
            task: Task = self.task(func, **options)
            try:
                define_periodic(task, spec, functools.partial(self._slot_jobs, task))
            except BaseException:
                self.registry.remove(task.name)
                raise
            return task

        return register if fn is None else register(fn)

    def _slot_jobs(self, task: Task, slots: Sequence[int], now: int) -> builtins.list[JobRecord]:
        """The jobs a server enqueues for ``slots`` of a periodic ``task`` (no arguments,
        run-at the slot, created ``now``), signed as this queue signs what it enqueues;
        not written anywhere (``periodic.fire_due`` writes them with their slot)."""
        payload, func = dump_payload((), {}), task.func_bytes()
        made = []
        for slot in slots:
            rec = self._record(
                task.name, payload, task.config, func=func, run_at_ms=slot, created_ms=now
            )
            rec.preview = ""  # a periodic job takes no arguments
            if self.secret is not None:
                rec.signature = sign(self.secret, rec.name, rec.payload, rec.func)
            made.append(rec)
        return made

    def schedules(self) -> builtins.list[ScheduleRow]:
        """Every periodic schedule declared in the store, by name."""
        return self.store.schedules()

    def pause_schedule(self, name: str) -> bool:
        """Stop servers enqueueing schedule ``name``; False if it was paused already.
        ConfigError for a name the store has no schedule of."""
        return self.store.pause_schedule(check_name(name))

    def resume_schedule(self, name: str) -> bool:
        """Undo ``pause_schedule``: it goes on with the first slot after now (the slots
        of the pause are skipped); False if it was not paused."""
        return self.store.resume_schedule(check_name(name), now_ms())

    def on(self, event: str, fn: Hook | None = None) -> Any:
        """Register a hook: ``@queue.on("start")`` (or ``queue.on("start", fn)``); returns
        the function. It runs in the process that runs the job (a server's child), for
        the jobs of this queue's tasks.

        Job events (the hook gets one ``HookEvent``: job id, task, attempt, arguments,
        and the result or the exception): ``start``, then ``success``, ``failure``
        followed by ``retry`` or ``dead``, or ``cancelled``. ``child_start`` (no
        arguments): once per worker process, before its first job of this queue (set-up
        such as loading a model). A hook that raises is logged and changes nothing. A
        child that is killed (a segfault, a timeout's hard kill) fires nothing. See
        ``mpqueue.hooks`` for the details.

        Raises ConfigError for an unknown event or a non-callable ``fn``.
        """

        def register(func: Hook) -> Hook:
            self.hooks.add(event, func)
            return func

        check_event(event)  # refused at the decorator's call, before any function
        return register if fn is None else register(fn)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Job:
        """Enqueue any callable (lambda, closure, bound method) by value, ready now.

        ``depends_on=``, ``key=`` and ``expires=`` are taken as ``Task.delay`` takes
        them, not passed to ``fn``."""
        if not callable(fn):
            raise ConfigError(f"submit() needs a callable; got {fn!r}")
        depends_on, key = kwargs.pop("depends_on", None), kwargs.pop("key", None)
        expires = kwargs.pop("expires", None)
        name = check_name(task_name(fn))
        payload = dump_payload(args, kwargs)
        rec = self._record(name, payload, TaskOptions(), func=dump_callable(fn), expires=expires)
        rec.preview = preview_of_call(args, kwargs)
        self._link(rec, depends_on, key)
        return self._add([rec])[0]

    def task_by_name(self, name: str) -> Task:
        """A task registered here, else one imported by its path (for the CLI)."""
        task = self.registry.get(name)
        if task is not None:
            return task  # type: ignore[no-any-return]
        found = resolve(name)
        if isinstance(found, Task):
            return Task(self, found.fn, found.name, found.config)
        if not callable(found):
            raise TaskNotFound(f"{name!r} is not a task")
        return Task(self, found, name, TaskOptions())

    # ---- enqueueing ---------------------------------------------------------------
    def enqueue(
        self,
        task: Task,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        delay: float | None = None,
        at: datetime | float | None = None,
        priority: int | None = None,
        depends_on: Dependencies = None,
        key: str | None = None,
        pass_results: str = PASS_NONE,
        allow_failures: bool = False,
        expires: Expires = None,
    ) -> Job:
        """Enqueue one job of ``task``. Nothing is written if any argument is invalid.

        ``depends_on``: jobs (or ids) that must end first (see ``dependencies.py``);
        ``key``: a unique key (an existing job of this task with it is returned);
        ``pass_results``/``allow_failures``: how workflows hand results on;
        ``expires``: the deadline to start (see ``expiry.py``; default the task's)."""
        # The options of the task were checked when it was declared; only what varies
        # per call is checked here (see limits.py).
        self._write_limit(task)
        run_at = None if delay is None and at is None else run_at_ms(delay, at, now_ms())
        rec = self._record(
            task.name,
            dump_payload(args, kwargs),
            task.config,
            func=task.func_bytes(),
            priority=priority,
            run_at_ms=run_at,
            expires=expires,
        )
        rec.preview = preview_of_call(args, kwargs)
        if depends_on is not None or key is not None or pass_results or allow_failures:
            self._link(rec, depends_on, key, pass_results, allow_failures)
        return self._add([rec])[0]

    def _link(
        self,
        rec: JobRecord,
        depends_on: Dependencies,
        key: str | None,
        pass_results: str = PASS_NONE,
        allow_failures: bool = False,
    ) -> None:
        """Set the workflow fields of a new record, checked (ConfigError)."""
        rec.depends_on = dependency_ids(depends_on)
        rec.key = None if key is None else check_unique_key(rec.name, key)
        if pass_results not in PASS_MODES:
            raise ConfigError(f"pass_results must be one of {PASS_MODES}; got {pass_results!r}")
        if pass_results == PASS_ONE and len(rec.depends_on) != 1:
            raise ConfigError("a job that takes its dependency's result depends on exactly one job")
        rec.pass_results = pass_results
        rec.allow_failures = bool(allow_failures)

    def enqueue_many(
        self,
        task: Task,
        calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
        *,
        priority: int | None = None,
        keys: Sequence[str | None] | None = None,
        expires: Expires = None,
    ) -> list[Job]:
        """Enqueue many jobs of ``task`` in one transaction (all or nothing); ``keys``:
        one unique key per call, ``expires``: every job's deadline (see ``enqueue``)."""
        self._write_limit(task)
        func = task.func_bytes()
        payloads = [dump_payload(a, k) for a, k in calls]
        now = now_ms()
        template = self._record(
            task.name,
            b"",
            task.config,
            func=func,
            priority=priority,
            run_at_ms=now,
            created_ms=now,
            expires=expires,
        )
        # One template, copied per job: options are resolved once per batch, not per job
        # (a plain dict copy: no state changes here for evolve() to check).
        fields = template.__dict__
        records = []
        texts = [preview_of_call(a, k) for a, k in calls]
        for job_id, payload, text in zip(new_job_ids(len(payloads)), payloads, texts):
            rec = object.__new__(JobRecord)
            rec.__dict__.update(fields, id=job_id, payload=payload, preview=text)
            records.append(rec)
        if keys is not None:
            if len(keys) != len(records):
                raise ConfigError(f"{len(keys)} keys for {len(records)} jobs")
            for rec, key in zip(records, keys):
                rec.key = None if key is None else check_unique_key(task.name, key)
        return self._add(records)

    def _record(
        self,
        name: str,
        payload: bytes,
        options: TaskOptions,
        *,
        func: bytes | None = None,
        priority: int | None = None,
        run_at_ms: int | None = None,
        created_ms: int | None = None,
        expires: Expires = None,
    ) -> JobRecord:
        created = now_ms() if created_ms is None else created_ms
        run_at = created if run_at_ms is None else run_at_ms
        if expires is None:
            expires = options.expires  # the task's default (None for most)
        rec = JobRecord(
            id=new_job_id(),
            name=name,
            state=JobState.SCHEDULED if run_at > created else JobState.READY,
            payload=payload,
            func=func,
            priority=options.priority if priority is None else check_priority(priority),
            run_at_ms=run_at,
            created_at_ms=created,
            max_retries=options.retries,
            timeout_s=options.timeout,
            backoff_base_s=options.backoff,
            backoff_cap_s=options.backoff_cap,
        )
        if options.retry_on_names is not None or options.no_retry_on_names:
            rec.retry_on, rec.no_retry_on = options.retry_on_names, options.no_retry_on_names
        if expires is not None:
            rec.expires_at_ms = deadline_ms(expires, created, run_at)
        if options.queue != DEFAULT_QUEUE:
            rec.queue = options.queue
        return rec

    def _write_limit(self, task: Task) -> None:
        """Write the task's ``concurrency=`` and ``rate=`` to the store, once per task
        and Queue (an empty check for a task without them)."""
        config = task.config
        if config.concurrency is None and config.rate is None:
            return
        if task.name not in self._limits_written:
            self.store.set_limit(TASK, task.name, config.concurrency, config.rate)
            self._limits_written.add(task.name)

    # ---- concurrency limits -------------------------------------------------------
    def limit(
        self, queue: str, *, concurrency: int | None = None, rate: str | Rate | None = None
    ) -> bool:
        """At most ``concurrency`` jobs of the named queue ``queue`` run at once, and at
        most ``rate`` of them start per window (``"100/m"``), across every server on the
        store. The limit becomes what is given: None for both removes it. Returns
        whether the store changed. See ``mpqueue.concurrency`` and ``mpqueue.rates``."""
        name = check_queue_name(queue)
        return self.store.set_limit(QUEUE, name, check_concurrency(concurrency), parse_rate(rate))

    def limit_task(
        self,
        task: Task | str,
        *,
        concurrency: int | None = None,
        rate: str | Rate | None = None,
    ) -> bool:
        """As ``limit``, for one task (a task or its name): what ``concurrency=`` and
        ``rate=`` on the decorator write. None for both removes the task's limit."""
        name = task.name if isinstance(task, Task) else check_name(task)
        return self.store.set_limit(TASK, name, check_concurrency(concurrency), parse_rate(rate))

    def limits(self) -> builtins.list[Limit]:
        """Every limit in the store, as ``Limit(kind, name, concurrency, running,
        rate)``, by kind ("queue" before "task") and name."""
        return self.store.limits()

    def batch(self) -> AbstractContextManager[None]:
        """A block whose enqueues (``delay``, ``schedule``, ``map``) are written in one
        transaction when it ends: all of them, or none if an exception leaves it.

        The handles come back at once, but their jobs exist only after the block:
        ``refresh()`` or ``result()`` inside it cannot find them. A batch is this
        thread's (other threads enqueue as usual); an inner ``batch()`` joins the outer.
        """
        return self._batches.open(self.store.add)

    @property
    def batching(self) -> bool:
        """Whether this thread has a ``batch()`` open on this queue."""
        return self._batches.collecting() is not None

    def _add(self, records: list[JobRecord]) -> list[Job]:
        if self.secret is not None:
            for rec in records:
                rec.signature = sign(self.secret, rec.name, rec.payload, rec.func)
        batch = self._batches.collecting()
        if batch is None:
            self.store.add(records)
        else:
            batch.extend(records)
        return [Job(rec, self) for rec in records]

    # ---- reading ------------------------------------------------------------------
    def get(self, job_id: str) -> Job | None:
        rec = self.store.get(job_id) if is_job_id(job_id) else None
        return None if rec is None else Job(rec, self)

    def list(
        self,
        name: str | None = None,
        state: str | None = None,
        limit: int | None = None,
        queue: str | None = None,
    ) -> list[Job]:
        """Jobs (oldest first) from one read of the store, optionally filtered by task
        name, state and queue."""
        state_enum = _parse_state(state)
        if name is not None:
            check_name(name)
        if queue is not None:
            check_queue_name(queue)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise ConfigError(f"limit must be an integer >= 0; got {describe(limit)}")
        return [Job(rec, self) for rec in self.store.list(name, state_enum, limit, queue)]

    def stats(self) -> dict[str, int]:
        """Job counts per state (and ``total``), from one read transaction."""
        return self.store.stats()

    def gauges(self) -> Gauges:
        """The counts per state, what is paused and the oldest ready job's due time,
        read together: what a metrics scrape reads (see ``Gauges``)."""
        return self.store.gauges()

    def history(self, last_ms: int) -> builtins.list[Point]:
        """The depth by state that servers sampled over the last ``last_ms``, oldest
        first, as (time in ms, counts): 10 s points for up to a day, 5 min beyond
        (see ``mpqueue/history.py``)."""
        now = now_ms()
        # A little past now: a server may overwrite the newest slot with a sample taken
        # after this call began, or on a host whose clock is a little ahead.
        return self.store.history(now - last_ms, now + HISTORY_AHEAD_MS)

    def wait_finished(self, job_id: str, timeout: float | None = None) -> JobRecord:
        """Wait until a job has ended (done, dead, cancelled or expired); returns its
        record."""
        poll = Poll(timeout)
        while True:
            rec = self.store.get(job_id)
            if rec is None:
                raise JobNotFound(f"job {job_id} does not exist (deleted or expired?)")
            if rec.state in FINISHED_STATES:
                return rec
            if poll.expired():
                raise TimeoutError(f"job {job_id} is still {rec.state} after {timeout} s")
            poll.sleep()

    # ---- changing -----------------------------------------------------------------
    def delete(self, job_id: str) -> bool:
        """Remove a job from whichever queue holds it; False if there is no such job."""
        return is_job_id(job_id) and self.store.delete(job_id)

    def cancel(
        self,
        *job_ids: str,
        name: str | None = None,
        state: str | Sequence[str] | None = None,
        reason: str | None = None,
        dry_run: bool = False,
    ) -> CancelReport:
        """Cancel jobs: the ones named by id, or in bulk every job of task ``name``
        and/or in ``state`` (``ready``, ``scheduled``, ``waiting``, ``processing``, or
        a list of them; default every state a job has not ended in).

        A queued job ends ``cancelled`` at once; a running one is stopped by its server
        (``mpqueue.Cancelled`` is raised inside it, its process killed if it does not
        stop within the server's ``--timeout-grace``) and ends ``cancelled``. Jobs that
        had ended are left alone. ``reason`` is kept in each job's history, with who
        cancelled it. A bulk cancel commits in batches of a few thousand jobs.
        ``dry_run``: change nothing, report what would be done.

        Returns a ``CancelReport``: the ids ``cancelled``, ``requested`` (running: being
        stopped), ``finished`` (had ended) and ``missing``.
        """
        text = request_text(check_reason(reason))
        if job_ids and (name is not None or state is not None):
            raise ConfigError("cancel takes job ids or name=/state=, not both")
        if job_ids:
            ids = list(dict.fromkeys(_checked_id(job_id) for job_id in job_ids))
            if dry_run:
                return preview(ids, self.store.get_many(ids))
            return self.store.cancel(ids, text, now_ms())
        if name is None and state is None:
            raise ConfigError("cancel what? give job ids, name= or state=")
        if name is not None:
            check_name(name)
        states = check_states(state)
        if dry_run:
            found = [r for s in states for r in self.store.list(name, s)]
            return preview([r.id for r in found], found)
        return cancel_all(self.store, name, states, text)

    def pause(self, task: Task | str | None = None) -> PauseChange:
        """Stop servers claiming jobs of ``task`` (a task or its name; None: every job).
        Running jobs finish; queued ones wait, costing claims nothing, until ``resume``.
        Returns a ``PauseChange`` (``changed`` is False if it was paused already)."""
        return self.store.pause(pause_target(task))

    def resume(self, task: Task | str | None = None) -> PauseChange:
        """Undo ``pause(task)``: its jobs are claimed again. Resuming what is not paused
        is no error: the ``PauseChange`` says ``changed=False``."""
        return self.store.resume(pause_target(task))

    def paused(self) -> Paused:
        """What is paused: ``Paused(all=..., tasks=...)``."""
        return self.store.paused()

    def requeue(
        self, job_id: str, *, delay: float | None = None, at: datetime | float | None = None
    ) -> Job:
        """Move a dead job back to ready with its attempts reset; with ``delay``
        (seconds) or ``at`` (a datetime or epoch seconds), to the scheduled queue, to
        run then (a scheduled re-drive)."""
        if not is_job_id(job_id):
            raise JobNotFound(f"no job with id {job_id!r}")
        now = now_ms()
        return Job(self.store.requeue_dead(job_id, now, run_at_ms(delay, at, now)), self)

    def purge_dead(self) -> int:
        """Delete every job in the dead-letter queue; returns how many."""
        return self.store.purge_dead()

    # ---- running jobs in this process -------------------------------------------------
    def run_pending(self, *, limit: int | None = None) -> int:
        """Run every due job in this process, as a server would, and return how many
        runs were made (a retried job counts each run). For tests: with a
        ``memory://`` queue, enqueue, ``run_pending()``, then assert on the results.

        Retries and dead-lettering follow the server's rules: a failed job with
        retries left is rescheduled with backoff, so it runs again only when due (a
        later call runs it). A job's ``timeout`` is not enforced (that needs a child
        process). ``limit``: the most runs to make (default: until none is due).
        Works on every store; a job's error never leaves this call.
        """
        from .execute import run_pending  # runs user code: loaded only when asked

        if limit is not None:
            check_int("limit", limit, 0, 2**63 - 1)
        return run_pending(self.store, self.secret, limit, self.hooks)

    # ---- checking and copying -------------------------------------------------------
    def check(self) -> CheckReport:
        """Check the store: every index agrees with the jobs, every stored record
        decodes. ``report.code`` is 0 (all well), 1 (inconsistent) or 2 (corrupt).

        Raises StoreCorrupt when a page of the store cannot be read at all."""
        return self.store.check(
            holder_gone=lambda server_id: server_dead(server_id, None, now_ms())
        )

    def backup(self, dest: str | os.PathLike[str]) -> None:
        """Write a consistent copy of an LMDB store into ``dest`` (a new or empty
        directory; created 0700, its file 0600), also while servers run. The copy
        opens as a store of its own. Raises ConfigError for a bad ``dest``, and on
        PostgreSQL (back that up with pg_dump)."""
        self.store.backup(os.fspath(dest))

    def expire_finished(self, now: int | None = None) -> int:
        """Delete finished jobs (done, cancelled, expired) that finished longer than the
        result retention ago; returns how many. (Dead jobs stay until purged.)"""
        cutoff = (now_ms() if now is None else now) - int(self.result_ttl_s * 1000)
        return self.store.expire_finished(cutoff)


def _checked_id(job_id: Any) -> str:
    if not is_job_id(job_id):
        raise ConfigError(f"not a job id: {describe(job_id)} (32 lowercase hex characters)")
    return str(job_id)


def _parse_state(state: str | None) -> JobState | None:
    if state is None:
        return None
    try:
        return JobState(state)
    except ValueError:
        names = ", ".join(s.value for s in JobState)
        raise ConfigError(f"unknown state {describe(state)}; one of {names}") from None
