"""Periodic jobs: ``@queue.periodic``, and a server's side of firing them.

``@queue.periodic(cron="*/5 * * * *", tz="Europe/Berlin")`` (or ``every=timedelta(...)``)
registers the function as a task, as ``@queue.task`` does, and defines a schedule of the
same name in this process (``defined()``). The slot arithmetic is ``periodic_slots``';
what a store keeps per schedule is ``schedules.ScheduleRow``.

Who fires what (the rule):

* A server (``mpqueue serve``) imports its ``--import`` modules in its own process at
  start; the schedules they define are *its* schedules. It declares them in the store
  (``Store.declare_schedules``: insert, or update a changed spec) and adds itself to
  each one's declarers.
* A schedule is fired only by a server whose code defines it. Each slot is enqueued
  once: the fire transaction advances the schedule's last slot with a compare-and-set
  and writes the slot's job in the same commit, so a second server finds the slot
  taken and writes nothing (``Store.fire_schedules``).
* A schedule that no live server declares is *retired*: the first server to find it
  due without defining it marks it so (out of the next-due index: it costs nothing
  more), and ``mpqueue periodic list`` shows it retired. It is not silently kept firing.
  A server whose code defines it again brings it back on its start, and the slots it
  missed meanwhile are caught up as its ``catch_up`` says.
* ``catch_up``: "latest" (default: one run for the latest missed slot), "all" (every
  missed slot, at most ``SLOTS_PER_FIRE`` per schedule per fire), "none" (missed slots
  are skipped; only a slot that falls due while a server runs is enqueued).
* A paused schedule fires nothing; resumed, it goes on with the first slot after the
  resume (the slots of the pause are skipped).

A fired job is a job of the schedule's task with no arguments, built from the declaring
server's task options (retries, priority, timeout, ...); its run-at is the slot time.

``fire_due`` is the one fire step; it takes the clock (``now_ms``) as an argument, so
tests need no sleeping. ``Scheduler`` is what a server holds: when to fire next, and
what to declare first.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from .errors import ConfigError, DuplicateTask
from .identity import DEFAULT_LEASE_S, server_dead
from .periodic_slots import Spec
from .records import JobRecord
from .registry import import_module
from .schedules import Live, ScheduleRow, ScheduleSpec, fired, is_retired
from .store.base import Fired, FirePlan, Firing, Store
from .task import Task

log = logging.getLogger("mpqueue.periodic")

FIRE_LIMIT = 100  # due schedules read by one fire transaction (more: another at once)
SLOTS_PER_FIRE = 100  # slots of one schedule enqueued by one fire (catch_up="all")
# How soon a server looks again at schedules that are due but not its own (another
# server's, which is about to fire them): not every cycle.
FOREIGN_RECHECK_MS = 1000
# The longest a server goes without a fire: a resume, or a spec another server changed,
# is seen within it.
IDLE_RECHECK_MS = 5000
# How often a server declares its schedules again: a schedule retired while this server
# looked dead to the others (a long pause past its lease) comes back within it.
REDECLARE_MS = 300_000


JobMaker = Callable[[Sequence[int], int], list[JobRecord]]  # (slots, now) -> their jobs


@dataclass(frozen=True)
class Periodic:
    """One schedule defined in this process: its spec, the task it enqueues, and how
    its queue makes that task's jobs (``Queue._slot_jobs``: options, signature)."""

    spec: ScheduleSpec
    task: Task
    make_jobs: JobMaker

    @property
    def name(self) -> str:
        return self.spec.name

    def jobs(self, slots: Sequence[int], now_ms: int) -> list[JobRecord]:
        """A new job of the task for each slot (run-at: the slot)."""
        return self.make_jobs(slots, now_ms) if slots else []


_DEFINED: dict[str, Periodic] = {}  # every schedule defined in this process, by name


def define(task: Task, spec: Spec, make_jobs: JobMaker) -> Periodic:
    """Add a schedule for ``task`` to this process's definitions."""
    if task.name in _DEFINED:
        raise DuplicateTask(
            f"a periodic schedule named {task.name!r} is already defined in this process; "
            "pass name=... to define another"
        )
    try:
        inspect.signature(task.fn).bind()
    except TypeError as exc:
        raise ConfigError(
            f"a periodic task is called with no arguments; {task.name!r} needs some ({exc})"
        ) from None
    except ValueError:
        pass  # a callable without a signature (a builtin): nothing to check
    periodic = Periodic(ScheduleSpec.of(task.name, spec), task, make_jobs)
    _DEFINED[task.name] = periodic
    return periodic


def defined() -> dict[str, Periodic]:
    """The schedules defined in this process so far, by name."""
    return dict(_DEFINED)


def forget(name: str) -> None:
    """Drop a definition (tests that define schedules in one process)."""
    _DEFINED.pop(name, None)


def liveness(store: Store, now_ms: int, lease_s: float = DEFAULT_LEASE_S) -> Live:
    """Whether a declarer is alive, by the rule recovery uses (``server_dead``), read
    from one snapshot of the server registry."""
    registry = store.servers()
    return lambda server_id: not server_dead(server_id, registry.get(server_id), now_ms, lease_s)


def declare(
    store: Store, definitions: Mapping[str, Periodic], server_id: str, now_ms: int, live: Live
) -> list[ScheduleRow]:
    """Declare ``definitions`` as ``server_id``'s schedules (one transaction)."""
    specs = [definitions[name].spec for name in sorted(definitions)]
    return store.declare_schedules(specs, server_id, now_ms, live)


def plan_for(definitions: Mapping[str, Periodic], now_ms: int) -> FirePlan:
    """The fire plan of a server whose code defines ``definitions``."""

    def plan(row: ScheduleRow) -> Firing | None:
        mine = definitions.get(row.name)
        if mine is None:
            return None  # not ours: its own servers fire it, or it gets retired
        try:
            slots = row.spec.slots
        except ConfigError as exc:
            # A spec this host cannot read (a bad value in the store, a zone unknown
            # here): ours replaces it, so one bad entry never stops the schedule.
            log.warning(
                "schedule %s: stored spec unusable (%s); using this server's", row.name, exc
            )
            row, slots = replace(row, **_spec_fields(mine.spec)), mine.spec.slots
        try:
            due = slots.due_slots(row.last_slot_ms, now_ms, SLOTS_PER_FIRE)
            jobs = mine.jobs(due, now_ms)
            job_id = jobs[-1].id if jobs else None
            return Firing(fired(row, due, job_id, now_ms, slots), jobs)
        except Exception as exc:
            # Its jobs cannot be made (a by-value function that does not pickle, a cron
            # expression with no slot left): that schedule's failure, not the server's.
            # It stays due; the server looks again in FOREIGN_RECHECK_MS.
            log.error(
                "schedule %s: cannot enqueue its slot: %s: %s", row.name, type(exc).__name__, exc
            )
            return None

    return plan


def _spec_fields(spec: ScheduleSpec) -> dict[str, Any]:
    return {"cron": spec.cron, "every_ms": spec.every_ms, "tz": spec.tz, "catch_up": spec.catch_up}


def fire_due(
    store: Store,
    definitions: Mapping[str, Periodic],
    now_ms: int,
    live: Callable[[], Live] | None = None,
) -> Fired:
    """Enqueue every due slot of the schedules ``definitions`` defines, at ``now_ms``:
    one fire transaction, and a second one only to retire due schedules that no live
    server declares (``live``: makes the liveness check, called only then; default the
    store's registry)."""
    result = store.fire_schedules(now_ms, plan_for(definitions, now_ms), FIRE_LIMIT)
    if result.skipped:
        alive = live() if live is not None else liveness(store, now_ms)
        orphans = {
            row.name: row.declarers
            for row in result.skipped
            if not any(alive(d) for d in row.declarers)
        }
        if orphans:
            for name in store.retire_schedules(orphans):
                log.warning("schedule %s: no running server defines it any more; retired", name)
    return result


class Scheduler:
    """A server's periodic schedules: declared at its start (and every REDECLARE_MS),
    then fired when due. The server calls ``run`` when ``due``, and waits no longer
    than ``wait_s``."""

    def __init__(
        self,
        store: Store,
        server_id: str,
        definitions: Mapping[str, Periodic],
        lease_s: float = DEFAULT_LEASE_S,
    ):
        self.store, self.server_id = store, server_id
        self.definitions = dict(definitions)
        self.lease_s = lease_s
        self.declare_at_ms = 0  # at once: the first run declares
        self.next_fire_ms = 0

    @classmethod
    def for_server(
        cls, store: Store, server_id: str, imports: Sequence[str], lease_s: float
    ) -> Scheduler | None:
        """Import a server's ``--import`` modules here and take the schedules they
        define; None when they define none (then a server pays nothing for schedules).
        A module that fails to import is logged (its workers report it too)."""
        for module in imports:
            try:
                import_module(module, "--import (periodic schedules)")
            except Exception as exc:
                log.error("no periodic schedules from %s: %s", module, exc)
        found = defined()
        return cls(store, server_id, found, lease_s) if found else None

    def due(self, now_ms: int) -> bool:
        return now_ms >= self.next_fire_ms

    def wait_s(self, now_ms: int) -> float:
        """How long until the next fire, in seconds (0: now)."""
        return max(0.0, (self.next_fire_ms - now_ms) / 1000)

    def run(self, now_ms: int) -> int:
        """Declare (the first time, and every REDECLARE_MS), then fire what is due;
        returns the jobs enqueued."""

        def live() -> Live:
            return liveness(self.store, now_ms, self.lease_s)

        if now_ms >= self.declare_at_ms:
            declare(self.store, self.definitions, self.server_id, now_ms, live())
            self.declare_at_ms = now_ms + REDECLARE_MS
        result = fire_due(self.store, self.definitions, now_ms, live)
        self.next_fire_ms = self._next_fire(result, now_ms)
        return len(result.jobs)

    def _next_fire(self, result: Fired, now_ms: int) -> int:
        if result.rows >= FIRE_LIMIT:
            return now_ms  # more are due than one fire reads
        later = [t for t in (result.next_due_ms,) if t is not None]
        if result.skipped:
            later.append(now_ms + FOREIGN_RECHECK_MS)
        return min(later + [now_ms + IDLE_RECHECK_MS])


def report(store: Store, now_ms: int, lease_s: float = DEFAULT_LEASE_S) -> list[dict[str, Any]]:
    """Every schedule as ``mpqueue periodic list`` shows it: its row's fields, plus
    ``spec`` (as a person reads it), ``retired`` (marked, or no declarer alive: see
    ``schedules.is_retired``) and ``last_outcome`` (the state of its last job, "gone"
    once that job was deleted, None before the first). Three reads: the schedules,
    the server registry, the last jobs."""
    rows = store.schedules()
    live = liveness(store, now_ms, lease_s)
    ids = [row.last_job_id for row in rows if row.last_job_id is not None]
    endings = dict(zip(ids, store.endings(ids))) if ids else {}
    found = []
    for row in rows:
        ending = endings.get(row.last_job_id) if row.last_job_id is not None else None
        outcome = None if row.last_job_id is None else ("gone" if ending is None else None)
        if ending is not None:
            outcome = ending.state.value
        found.append(
            row.as_dict()
            | {
                "spec": row.spec.describe(),
                "retired": is_retired(row, live),
                "next_due_ms": row.next_due_ms if row.active else None,
                "last_outcome": outcome,
            }
        )
    return found
