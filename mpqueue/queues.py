"""Named queues: the one rule for a queue's name, and which queues a server serves.

Every job is in one queue, ``default`` unless its task or call names another
(``@queue.task(queue="heavy")``, ``task.options(queue=...)``). Priority and FIFO order
hold within a queue. A server serves every queue, or the ``Selection`` given to it
(``mpqueue serve --queues heavy,default`` or ``--queues heavy=3,default=1``):

* by preference (no weights): each claim takes from the first queue that has ready
  jobs, and from a later one only what the earlier ones could not fill;
* by weight: each claim splits what it takes between the queues in proportion to their
  weights, drawing the order in which they are served at random with those weights (so
  a one-job claim still goes to each queue in proportion over time); what a queue cannot
  fill goes to the others.

A server that serves every queue takes jobs in priority and FIFO order across them.

The stores keep the default queue's ready jobs where they always were, so a store in
which no job names a queue pays nothing for queues; each store files the others by
queue name (see the backends).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from .errors import ConfigError

DEFAULT_QUEUE = "default"
QUEUE_NAME_MAX = 64
# Letters, digits and ``_ . : -``: no ``,`` or ``=`` (they separate --queues entries),
# nothing a shell or a Prometheus label would have to quote.
_QUEUE_NAME = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_.:-]{{0,{QUEUE_NAME_MAX - 1}}}")
WEIGHT_MAX = 1000


def is_queue_name(name: object) -> bool:
    return isinstance(name, str) and _QUEUE_NAME.fullmatch(name) is not None


def check_queue_name(name: object) -> str:
    """``name`` if it can name a queue; ConfigError saying why not otherwise."""
    if not is_queue_name(name):
        raise ConfigError(
            f"bad queue name {name!r}: 1 to {QUEUE_NAME_MAX} letters, digits or _ . : - "
            "(not starting with . : -)"
        )
    return name  # type: ignore[return-value]


def check_queues(records: Iterable[HasQueue]) -> None:
    """ConfigError for a record whose queue no name can be (every store's ``add``: a
    bad name must not reach an index key or a column)."""
    for rec in records:
        if rec.queue != DEFAULT_QUEUE:
            check_queue_name(rec.queue)


class HasQueue(Protocol):
    @property
    def queue(self) -> str: ...


T = TypeVar("T")


@dataclass(frozen=True)
class Selection:
    """The queues a server serves, in order of preference; with ``weights`` (one per
    name), in proportion to them instead."""

    names: tuple[str, ...]
    weights: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.names:
            raise ConfigError("a queue selection names at least one queue")
        for name in self.names:
            check_queue_name(name)
        if len(set(self.names)) != len(self.names):
            raise ConfigError(f"a queue is named twice in {','.join(self.names)}")
        if self.weights is not None:
            if len(self.weights) != len(self.names):
                raise ConfigError("a queue selection with weights has one weight per queue")
            for weight in self.weights:
                if type(weight) is not int or not 1 <= weight <= WEIGHT_MAX:
                    raise ConfigError(f"a queue's weight is a whole number 1..{WEIGHT_MAX}")

    @classmethod
    def parse(cls, text: str) -> Selection:
        """``heavy,default`` (preference order) or ``heavy=3,default=1`` (weights); every
        entry weighted or none. ConfigError naming the problem otherwise."""
        entries = [part.strip() for part in text.split(",")]
        if not text.strip() or not all(entries):
            raise ConfigError(f"--queues takes names separated by commas, got {text!r}")
        weighted = ["=" in part for part in entries]
        if any(weighted) and not all(weighted):
            raise ConfigError(f"--queues: give every queue a weight or none, got {text!r}")
        if not any(weighted):
            return cls(tuple(entries))
        names, weights = [], []
        for part in entries:
            name, _, weight = part.partition("=")
            if not weight.strip().isdigit():
                raise ConfigError(f"--queues: the weight of {name!r} is not a whole number")
            names.append(name.strip())
            weights.append(int(weight))
        return cls(tuple(names), tuple(weights))

    def __str__(self) -> str:
        if self.weights is None:
            return ",".join(self.names)
        return ",".join(f"{n}={w}" for n, w in zip(self.names, self.weights))

    def serves(self, queue: str) -> bool:
        return queue in self.names

    def plan(self, limit: int, rng: random.Random) -> list[tuple[str, int]]:
        """The order in which a claim of ``limit`` jobs visits the queues, and how many
        it takes from each on the first pass (``fill`` tops up from the rest)."""
        if self.weights is None:
            return [(name, limit) for name in self.names]
        order = _weighted_order(self.names, self.weights, rng)
        total = sum(self.weights)
        weight_of = dict(zip(self.names, self.weights))
        shares = {name: limit * weight_of[name] // total for name in order}
        for name in order[: limit - sum(shares.values())]:  # the remainder, in drawn order
            shares[name] += 1
        return [(name, shares[name]) for name in order]


def _weighted_order(names: Sequence[str], weights: Sequence[int], rng: random.Random) -> list[str]:
    """``names`` in a random order where each comes first with a chance in proportion
    to its weight (drawn without replacement)."""
    left = list(zip(names, weights))
    order = []
    while left:
        pick = rng.random() * sum(w for _, w in left)
        for i, (name, weight) in enumerate(left):
            pick -= weight
            if pick < 0 or i == len(left) - 1:
                order.append(name)
                del left[i]
                break
    return order


def claim_selected(
    selection: Selection,
    limit: int,
    rng: random.Random,
    take: Callable[[str, int], tuple[list[T], bool]],
) -> list[T]:
    """A claim of up to ``limit`` jobs of the ``selection``'s queues, in one store
    transaction: ``fill`` along its plan, and again while a pass took fewer than asked
    but ended jobs otherwise on the way (expired or bad: their ends may have released
    dependents into a queue already visited). ``take(queue, n)`` claims up to n jobs of
    one queue and says whether it ended any instead; each pass takes what it ends out
    of the queues, so this stops."""
    taken: list[T] = []
    while True:
        ended = False

        def counted(queue: str, wanted: int) -> list[T]:
            nonlocal ended
            got, gone = take(queue, wanted)
            ended = ended or gone
            return got

        want = limit - len(taken)
        taken += fill(selection.plan(want, rng), want, counted)
        if len(taken) >= limit or not ended:
            return taken


def fill(
    plan: Sequence[tuple[str, int]], limit: int, take: Callable[[str, int], list[T]]
) -> list[T]:
    """Claim along ``plan``: each queue's share, then, while fewer than ``limit`` were
    taken, more from the queues that gave all they were asked for, in plan order.
    ``take(queue, n)`` claims up to n jobs of one queue."""
    taken: list[T] = []
    full = []
    for name, share in plan:
        want = min(share, limit - len(taken))
        if want <= 0:
            full.append(name)  # asked for nothing: it may still have jobs
            continue
        got = take(name, want)
        taken.extend(got)
        if len(got) == want:
            full.append(name)
    for name in full:
        if len(taken) >= limit:
            break
        taken.extend(take(name, limit - len(taken)))
    return taken


def depths_by_queue(
    ready: Mapping[str, int], processing: Mapping[str, int]
) -> dict[str, dict[str, int]]:
    """{queue: {"ready": n, "processing": m}} for the default queue and every queue
    with a ready or processing job, by name."""
    names = {
        DEFAULT_QUEUE,
        *(q for q, n in ready.items() if n),
        *(q for q, n in processing.items() if n),
    }
    return {
        name: {"ready": ready.get(name, 0), "processing": processing.get(name, 0)}
        for name in sorted(names)
    }
