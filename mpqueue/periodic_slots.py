"""Slot arithmetic for periodic jobs: when a schedule fires, and what to enqueue now.

This is the pure time part of periodic jobs (issue 15): no store, no server, no clock of
its own (every function takes the times it needs as epoch milliseconds). The store part
(where a schedule and its last enqueued slot live) and the server part (who enqueues a
slot, once, on any number of servers) follow in later steps.

A schedule is either a cron expression evaluated in a time zone, or a fixed interval.

Interval slots (``every=``) are the multiples of the interval since the Unix epoch, in
UTC whatever the time zone: every server computes the same slots without talking to
another, and a restart does not shift them.

Cron slots (``cron=``) are matched against the wall clock of the spec's time zone by
the ``cronsim`` library (the ``periodic`` extra), which follows Debian's cron, including
its handling of daylight saving time:

* Expressions that fire at a specific minute and hour (``30 2 * * *``, ``0 */2 * * *``:
  neither the minute nor the hour field starts with ``*``):

  - a slot in the skipped hour (spring forward) fires at the first instant after the
    gap: ``30 2 * * *`` in Europe/Berlin fires at 03:00 CEST on 2026-03-29, once;
  - a slot in the repeated hour (fall back) fires once, on the first pass (the summer
    time one): ``30 2 * * *`` fires at 02:30 CEST on 2026-10-25, not again at 02:30 CET.

* Expressions whose minute or hour field starts with ``*`` (``*/5 * * * *``,
  ``15 * * * *``) and six-field expressions (seconds first) are scheduled on real
  time:

  - the skipped hour has no slots (its wall-clock times never happen);
  - the repeated hour has its slots twice, once in each offset: ``*/5 * * * *`` keeps
    firing every 5 real minutes through the whole night, and each instant fires once.

Slots are always strictly increasing in real time, whatever the zone does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from types import ModuleType
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

CATCH_UPS = ("latest", "all", "none")

_MS = timedelta(milliseconds=1)
# When cronsim's backward search gives no checked answer, the latest missed cron slot
# is found by walking the missed slots in chunks of this many (bounded memory).
_WALK_CHUNK = 100_000


def _cronsim() -> ModuleType:
    """The cronsim module, imported only when a cron schedule is used."""
    try:
        import cronsim
    except ImportError as exc:
        raise ConfigError(
            "cron schedules need the cronsim package: pip install 'mpqueue[periodic]'"
        ) from exc
    return cronsim


def _zone(tz: str) -> ZoneInfo:
    if not isinstance(tz, str) or not tz:
        raise ConfigError(f"tz must be a time zone name such as 'Europe/Berlin', not {tz!r}")
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {tz!r}") from exc


def _check_cron(cron: str, zone: ZoneInfo) -> None:
    if not isinstance(cron, str):
        raise ConfigError(f"cron must be a string such as '*/5 * * * *', not {cron!r}")
    cronsim = _cronsim()
    try:
        cronsim.CronSim(cron, datetime(2000, 1, 1, tzinfo=zone))
    except cronsim.CronSimError as exc:
        raise ConfigError(f"bad cron expression {cron!r}: {exc}") from exc


def _every_ms(every: timedelta) -> int:
    if not isinstance(every, timedelta):
        raise ConfigError(f"every must be a timedelta, not {every!r}")
    if every < timedelta(seconds=1):
        raise ConfigError(f"every must be at least one second, not {every}")
    if every % _MS:
        raise ConfigError(f"every must be a whole number of milliseconds, not {every}")
    return every // _MS


@dataclass(frozen=True)
class Spec:
    """When a periodic job fires: a cron expression in ``tz``, or every ``every_ms``.

    Build it with ``Spec.parse``, which checks every field.
    """

    cron: str | None
    every_ms: int | None
    tz: str
    catch_up: str

    @classmethod
    def parse(
        cls,
        cron: str | None = None,
        every: timedelta | None = None,
        tz: str = "UTC",
        catch_up: str = "latest",
    ) -> Spec:
        """A checked spec; a bad field raises ``ConfigError`` naming it."""
        if (cron is None) == (every is None):
            raise ConfigError("a periodic schedule needs exactly one of cron= and every=")
        if catch_up not in CATCH_UPS:
            raise ConfigError(f"catch_up must be one of {', '.join(CATCH_UPS)}, not {catch_up!r}")
        zone = _zone(tz)
        if cron is not None:
            _check_cron(cron, zone)
            return cls(cron, None, tz, catch_up)
        assert every is not None
        return cls(None, _every_ms(every), tz, catch_up)

    def next_after(self, t_ms: int) -> int:
        """The first slot strictly after ``t_ms``, in epoch milliseconds."""
        if self.every_ms is not None:
            return (t_ms // self.every_ms + 1) * self.every_ms
        return self._cron_after(t_ms)

    def _cron_after(self, t_ms: int) -> int:
        assert self.cron is not None
        zone = ZoneInfo(self.tz)
        # cronsim works in whole seconds and starts one second after its start, so
        # flooring keeps "strictly after" for a t_ms between two seconds.
        start = datetime.fromtimestamp(t_ms // 1000, timezone.utc).astimezone(zone)
        slots = _cronsim().CronSim(self.cron, start)
        try:
            while True:
                slot_ms = int(next(slots).timestamp()) * 1000
                # From inside a repeated hour, the Debian-style handling of a
                # fixed-time expression works on the wall clock and can answer the
                # first pass, which lies before t_ms: skip to the next one.
                if slot_ms > t_ms:
                    return slot_ms
        except StopIteration:
            raise ConfigError(
                f"cron expression {self.cron!r} has no slot in the 50 years after {start}"
            ) from None

    def due_slots(self, last_slot_ms: int | None, now_ms: int, limit: int = 1000) -> list[int]:
        """The slots to enqueue at ``now_ms``, oldest first.

        ``last_slot_ms`` is the last slot already enqueued (``None``: the schedule never
        ran). The missed slots are those strictly after ``last_slot_ms`` and at or
        before ``now_ms``. After enqueueing the answer, the caller records
        ``next_last(due, now_ms)`` as the new last slot.

        * ``None`` (a new schedule): ``[]``; with ``now_ms`` recorded as its last slot, a
          new schedule starts with the first slot after now, never with a past one.
        * ``catch_up="latest"``: the latest missed slot alone (``[]`` if none is missed).
        * ``catch_up="all"``: every missed slot, oldest first, at most ``limit`` of
          them; the ones past the limit come in the next calls, since the caller then
          records the last one returned.
        * ``catch_up="none"``: the one slot due now if it is the only missed slot (the
          first slot after ``last_slot_ms``, with the next one still in the future);
          ``[]`` when more were missed (the schedule was down): none of them runs, and
          the schedule resumes with the first slot after now.
        """
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, not {limit}")
        if last_slot_ms is None:
            return []
        first = self.next_after(last_slot_ms)
        if first > now_ms:
            return []
        if self.catch_up == "all":
            return self._walk(first, now_ms, limit)
        if self.catch_up == "none":
            return [first] if self.next_after(first) > now_ms else []
        return [self._latest(first, now_ms)]

    def _walk(self, first: int, now_ms: int, limit: int) -> list[int]:
        """The slots from ``first`` to ``now_ms``, at most ``limit`` of them."""
        slots = [first]
        while len(slots) < limit:
            slot = self.next_after(slots[-1])
            if slot > now_ms:
                break
            slots.append(slot)
        return slots

    def _latest(self, first: int, now_ms: int) -> int:
        """The last slot at or before ``now_ms``, given the first missed one ``first``."""
        if self.every_ms is not None:
            return now_ms // self.every_ms * self.every_ms
        guess = self._cron_at_or_before(now_ms)
        # cronsim's backward search has its own DST quirks: its answer counts only if
        # the forward slots agree (a slot, the last one by now, not before ``first``).
        if (
            guess is not None
            and first <= guess
            and self.next_after(guess - 1) == guess
            and self.next_after(guess) > now_ms
        ):
            return guess
        latest = first
        while True:
            walked = self._walk(latest, now_ms, _WALK_CHUNK)
            if walked[-1] == latest:
                return latest
            latest = walked[-1]

    def _cron_at_or_before(self, t_ms: int) -> int | None:
        """cronsim's backward answer: the latest slot at or before ``t_ms``, or None."""
        assert self.cron is not None
        # one second past t_ms: the backward search starts a second before its start
        start_s = t_ms // 1000 + 1
        start = datetime.fromtimestamp(start_s, timezone.utc).astimezone(ZoneInfo(self.tz))
        try:
            slot = next(_cronsim().CronSim(self.cron, start, reverse=True))
        except StopIteration:
            return None
        return int(slot.timestamp()) * 1000


def next_last(due: list[int], now_ms: int) -> int:
    """The last slot to record after enqueueing ``due`` at ``now_ms``.

    The last slot enqueued, or ``now_ms`` when nothing was: the next call then starts
    with the first slot after now, which is the first one after the latest slot that
    was skipped (a new schedule, ``catch_up="none"`` after a gap).
    """
    return due[-1] if due else now_ms
