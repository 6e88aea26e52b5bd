"""The depth history: the rule every store keeps it by (see docs/observability.md).

A server samples the store's counts by state (``Store.stats``) every
``HISTORY_EVERY_S`` and writes the sample into every tier below. A tier is a ring of
fixed size: a sample at ``t`` ms goes to slot ``(t // resolution) % slots`` of each
tier, overwriting what was there, so the history never grows with time. Each slot keeps
the time of the sample it holds, so a slot left from an earlier lap of the ring (stale)
is told from a current one by that time alone.

Folding into a coarser tier keeps the *last* sample of each bucket (it overwrites): the
depth at the latest moment known in that bucket, the way a gauge reads, and a write
that needs no read. A peak between two kept samples is not seen in a coarse tier.

Several servers sampling one store write the same slots: the counts are store-wide, so
whichever sample came last is the store's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError
from .limits import RUN_AT_MAX_MS

HISTORY_EVERY_S = 10.0  # a server's sampling interval: one sample per finest slot
HISTORY_AHEAD_MS = 60_000  # a read "until now" reads this far past it (see Queue.history)

Counts = dict[str, int]
Point = tuple[int, Counts]  # (sample time in ms, counts by state and "total")


@dataclass(frozen=True)
class Tier:
    """One ring: ``slots`` buckets of ``resolution_ms``; it spans ``span_ms``."""

    number: int
    resolution_ms: int
    slots: int

    @property
    def span_ms(self) -> int:
        return self.resolution_ms * self.slots

    def slot(self, at_ms: int) -> int:
        return (at_ms // self.resolution_ms) % self.slots

    def slot_ranges(self, since_ms: int, until_ms: int) -> list[tuple[int, int]]:
        """The slots (inclusive ranges, at most two: the ring wraps) whose buckets
        overlap [since_ms, until_ms]; all of them if that is a whole lap or more."""
        first, last = since_ms // self.resolution_ms, until_ms // self.resolution_ms
        if last - first + 1 >= self.slots:
            return [(0, self.slots - 1)]
        lo, hi = first % self.slots, last % self.slots
        return [(lo, hi)] if lo <= hi else [(lo, self.slots - 1), (0, hi)]


# The newest day at 10 s, the last 30 days at 5 min: 17,280 slots in all.
TIERS = (
    Tier(0, 10_000, 8_640),
    Tier(1, 300_000, 8_640),
)
SIZE = sum(tier.slots for tier in TIERS)  # the most points a store ever keeps
KEPT_MS = TIERS[-1].span_ms  # how far back the history reaches


def tier_for(since_ms: int, until_ms: int) -> Tier:
    """The finest tier that holds all of [since_ms, until_ms] in one lap (the
    coarsest for a longer range: it holds what is kept)."""
    for tier in TIERS:
        if until_ms - since_ms < tier.span_ms:
            return tier
    return TIERS[-1]


def current(tier: Tier, slot: int, at_ms: int, since_ms: int, until_ms: int) -> bool:
    """Whether a slot's point belongs to a read of [since_ms, until_ms] in ``tier``: its
    time is in range and maps to that slot (a stale or misfiled slot does not)."""
    return since_ms <= at_ms <= until_ms and tier.slot(at_ms) == slot


# The order counts are shown in (``Store.stats``'s); a state not named here goes last.
STATES = ("ready", "scheduled", "processing", "done", "dead", "waiting", "cancelled", "expired")


def in_order(counts: Mapping[str, int]) -> Counts:
    """The counts with their states in ``STATES`` order, then ``total``, then others (a
    store that keeps them as JSON objects may not keep the order)."""
    rank = {state: i for i, state in enumerate((*STATES, "total"))}
    return dict(sorted(counts.items(), key=lambda item: (rank.get(item[0], len(rank)), item[0])))


def check_sample(at_ms: int, counts: Mapping[str, int]) -> Counts:
    """The counts as a plain dict of non-negative ints, for a sample at a time every
    store can keep (ConfigError otherwise)."""
    if not isinstance(at_ms, int) or not 0 <= at_ms <= RUN_AT_MAX_MS:
        raise ConfigError(f"a history sample's time must be 0-{RUN_AT_MAX_MS} ms, not {at_ms!r}")
    checked: Counts = {}
    for state, count in counts.items():
        if not isinstance(state, str) or not isinstance(count, int) or count < 0:
            raise ConfigError(f"a history sample's count of {state!r} is {count!r}")
        checked[state] = int(count)
    return checked


_DURATION = re.compile(r"([1-9][0-9]{0,8})([smhd])")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(text: str) -> int:
    """``30m``, ``1h``, ``7d`` (s, m, h, d) in ms; ConfigError for anything else, or for
    more than the history keeps."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigError(f"--history takes a duration such as 30m, 1h or 7d, not {text!r}")
    ms = int(match.group(1)) * _UNIT_MS[match.group(2)]
    if ms > KEPT_MS:
        raise ConfigError(f"--history {text}: the history keeps {KEPT_MS // 86_400_000} days")
    return ms
