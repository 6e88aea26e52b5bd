"""What a store keeps about one periodic schedule, and the rules that change it.

A ``ScheduleRow`` is one schedule's entry in a store's schedule table: its spec (cron or
interval, time zone, catch-up), whether it is paused or retired, where its slots stand
and which servers declared it. Every store keeps rows whole and files the active ones
(neither paused nor retired) in a next-due index, so a server's fire cycle reads only
the rows that are due.

The functions here are pure: each store calls them inside its own transaction, so the
three backends change rows by one set of rules (see ``mpqueue/periodic.py`` for who
calls what, and when).

``last_slot_ms``: every slot at or before it is dealt with (enqueued, or skipped as the
catch-up rule, a pause or a change of spec says); the next slot to consider is the
first after it. ``last_fired_ms``/``last_job_id``: the last slot actually enqueued, and
its job.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import ConfigError, CorruptRecord
from .periodic_slots import CATCH_UPS, Spec

Live = Callable[[str], bool]  # is the server with this id alive?


@dataclass(frozen=True)
class ScheduleSpec:
    """What a server's code declares: a schedule's name (its task's name) and when it
    fires. ``slots`` is the checked ``periodic_slots.Spec`` it stands for."""

    name: str
    cron: str | None
    every_ms: int | None
    tz: str
    catch_up: str

    @classmethod
    def of(cls, name: str, spec: Spec) -> ScheduleSpec:
        return cls(name, spec.cron, spec.every_ms, spec.tz, spec.catch_up)

    @property
    def slots(self) -> Spec:
        """The slot arithmetic of this spec. A spec read back from a store is checked
        again here (ConfigError): the store's bytes are not trusted."""
        if self.catch_up not in CATCH_UPS:
            raise ConfigError(f"schedule {self.name!r}: unknown catch_up {self.catch_up!r}")
        if self.every_ms is not None:
            if not isinstance(self.every_ms, int) or self.every_ms < 1000:
                raise ConfigError(f"schedule {self.name!r}: bad interval {self.every_ms!r}")
            return Spec(None, self.every_ms, self.tz, self.catch_up)
        return Spec.parse(cron=self.cron, tz=self.tz, catch_up=self.catch_up)

    def describe(self) -> str:
        """The spec as a person reads it: ``cron '*/5 * * * *' in Europe/Berlin``."""
        if self.every_ms is not None:
            return f"every {_duration(self.every_ms)}"
        return f"cron {self.cron!r} in {self.tz}"


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule as a store keeps it (see the module docstring)."""

    name: str
    cron: str | None
    every_ms: int | None
    tz: str
    catch_up: str
    last_slot_ms: int
    next_due_ms: int
    paused: bool = False
    retired: bool = False
    last_fired_ms: int | None = None
    last_job_id: str | None = None
    declared_at_ms: int = 0
    declarers: tuple[str, ...] = ()

    @property
    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(self.name, self.cron, self.every_ms, self.tz, self.catch_up)

    @property
    def active(self) -> bool:
        """Whether the row is in the next-due index (servers fire it)."""
        return not self.paused and not self.retired

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "declarers": list(self.declarers)}


def _duration(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# ---- the rules ----------------------------------------------------------------------
def declared(
    row: ScheduleRow | None, spec: ScheduleSpec, server_id: str, now_ms: int, live: Live
) -> ScheduleRow:
    """The row after ``server_id`` declared ``spec`` at ``now_ms``.

    A new schedule starts with the first slot after now (never a past one). A changed
    spec starts afresh the same way: the old spec's slots mean nothing to the new one.
    An unchanged spec keeps its slots; a retired one comes back, and the slots it
    missed while retired are caught up as its ``catch_up`` says. The declarers are the
    live ones of before, plus this server. A pause is kept.
    """
    slots = spec.slots
    if row is None or row.spec != spec:
        last = now_ms
        next_due = slots.next_after(now_ms)
        keep: tuple[str, ...] = () if row is None else row.declarers
    else:
        last, next_due, keep = row.last_slot_ms, row.next_due_ms, row.declarers
        if row.retired:
            next_due = slots.next_after(last)
    others = {d for d in keep if d != server_id and live(d)}
    base = row if row is not None else ScheduleRow(spec.name, None, None, "UTC", "latest", 0, 0)
    return replace(
        base,
        cron=spec.cron,
        every_ms=spec.every_ms,
        tz=spec.tz,
        catch_up=spec.catch_up,
        last_slot_ms=last,
        next_due_ms=next_due,
        retired=False,
        declared_at_ms=now_ms,
        declarers=tuple(sorted(others | {server_id})),
    )


def fired(
    row: ScheduleRow, slots: list[int], job_id: str | None, now_ms: int, spec: Spec | None = None
) -> ScheduleRow:
    """The row after enqueueing ``slots`` (oldest first; maybe none) at ``now_ms``, the
    last of them as job ``job_id``. ``spec``: the slot arithmetic used (default the
    row's own)."""
    spec = row.spec.slots if spec is None else spec
    last = slots[-1] if slots else now_ms
    changes: dict[str, Any] = {"last_slot_ms": last, "next_due_ms": spec.next_after(last)}
    if slots:
        changes |= {"last_fired_ms": slots[-1], "last_job_id": job_id}
    return replace(row, **changes)


def paused(row: ScheduleRow) -> ScheduleRow:
    return replace(row, paused=True)


def resumed(row: ScheduleRow, now_ms: int) -> ScheduleRow:
    """A resumed schedule goes on with the first slot after the resume: the slots that
    fell while it was paused are skipped (a pause means "do not run these")."""
    return replace(
        row, paused=False, last_slot_ms=now_ms, next_due_ms=row.spec.slots.next_after(now_ms)
    )


def retired(row: ScheduleRow) -> ScheduleRow:
    """No live server declares the schedule any more: out of the next-due index."""
    return replace(row, retired=True, declarers=())


def is_retired(row: ScheduleRow, live: Live) -> bool:
    """Retired as ``mpqueue periodic list`` shows it: marked so, or no declarer alive
    (the next server to find it due marks it)."""
    return row.retired or not any(live(d) for d in row.declarers)


# ---- encoding (LMDB): JSON, checked on the way back -------------------------------------
_INT_FIELDS = ("last_slot_ms", "next_due_ms", "declared_at_ms")


def encode_row(row: ScheduleRow) -> bytes:
    return json.dumps(row.as_dict(), separators=(",", ":"), ensure_ascii=True).encode("ascii")


def decode_row(raw: bytes) -> ScheduleRow:
    """The row ``encode_row`` wrote; CorruptRecord for anything else."""
    try:
        data = json.loads(raw)
        row = ScheduleRow(
            name=_typed(data["name"], str),
            cron=_typed(data["cron"], str, none=True),
            every_ms=_typed(data["every_ms"], int, none=True),
            tz=_typed(data["tz"], str),
            catch_up=_typed(data["catch_up"], str),
            paused=_typed(data["paused"], bool),
            retired=_typed(data["retired"], bool),
            last_fired_ms=_typed(data["last_fired_ms"], int, none=True),
            last_job_id=_typed(data["last_job_id"], str, none=True),
            declarers=tuple(_typed(d, str) for d in _typed(data["declarers"], list)),
            **{f: _typed(data[f], int) for f in _INT_FIELDS},
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptRecord(f"schedule entry cannot be decoded: {exc}") from None
    if (row.cron is None) == (row.every_ms is None):
        raise CorruptRecord(f"schedule entry {row.name!r} has neither or both of cron and every")
    return row


def _typed(value: Any, kind: type, none: bool = False) -> Any:
    if value is None and none:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{value!r} is not {kind.__name__}")
    return value
