"""How much a coordinator claims, and when: room, the prefetch window, polling ticks.

A child holds the job it runs plus about ``PREFETCH_WINDOW_S`` of work queued behind
it, so it never waits for the server between jobs; how many jobs that is follows a
moving average of how long jobs take (adaptive prefetch). ``Pacer`` owns that average
and the poll grid of servers that claim on a fixed interval; the rest is arithmetic on
what each slot holds.
"""

from __future__ import annotations

import math

from .pool import Slot
from .settings import PREFETCH_WINDOW_S

INITIAL_JOB_S = 0.001  # the guess until a job has been seen
JOB_S_WEIGHT = 0.2  # weight of the newest job in the moving average


def per_child(avg_job_s: float, prefetch_max: int) -> int:
    """Jobs a child may hold: the running one plus about PREFETCH_WINDOW_S of work
    queued (at least one, so it never waits for the server between jobs)."""
    queued = math.ceil(PREFETCH_WINDOW_S / max(avg_job_s, 1e-6))
    return 1 + min(prefetch_max, max(1, queued))


def room_for(held: int, jobs_run: int, per_child: int, max_tasks: int | None) -> int:
    """How many more jobs a child holding ``held`` may be sent."""
    room = per_child - held
    if max_tasks is not None:
        # A child runs everything it was sent before it reads "stop": never send
        # more than it may still run, or prefetch would carry it past the limit.
        room = min(room, max_tasks - jobs_run - held)
    return max(0, room)


def usable(slots: list[Slot]) -> list[Slot]:
    """The slots that may be sent jobs: started and not retiring."""
    return [s for s in slots if s.ready and not s.retiring]


class Pacer:
    """The moving average of job time and the poll grid; the room they allow."""

    def __init__(self, prefetch_max: int, max_tasks_per_child: int | None, poll_s: float):
        self.prefetch_max = prefetch_max
        self.max_tasks = max_tasks_per_child
        self.poll_s = poll_s
        self.avg_job_s = INITIAL_JOB_S
        self.poll_at = 0.0  # monotonic time of the next poll tick

    def observe(self, job_s: float) -> None:
        """A job took ``job_s`` (as the server saw it)."""
        self.avg_job_s = (1 - JOB_S_WEIGHT) * self.avg_job_s + JOB_S_WEIGHT * max(0.0, job_s)

    def per_child(self) -> int:
        return per_child(self.avg_job_s, self.prefetch_max)

    def slot_room(self, slot: Slot, per_child: int) -> int:
        return room_for(len(slot.inflight), slot.jobs_run, per_child, self.max_tasks)

    def room(self, slots: list[Slot]) -> int:
        """Jobs the usable ones of ``slots`` may be sent, together."""
        per = self.per_child()
        return sum(self.slot_room(s, per) for s in usable(slots))

    def idle(self, slots: list[Slot]) -> list[Slot]:
        """Usable slots that hold nothing and may take a job."""
        per = self.per_child()
        return [s for s in usable(slots) if not s.inflight and self.slot_room(s, per) > 0]

    def low(self, slots: list[Slot]) -> bool:
        """Whether some usable child is down to half its prefetch (time to claim)."""
        per = self.per_child()
        return any(len(s.inflight) <= per // 2 for s in usable(slots))

    def unneeded_s(self, held: int, per_child: int) -> float:
        """How long a child holding ``held`` surely runs before it is low: it need not
        be listened to until then."""
        spare = held - 1 - per_child // 2  # completions before it is low
        return max(0.0, spare * self.avg_job_s * 0.5)

    def poll_due(self, now: float) -> bool:
        """Servers that poll claim on a fixed interval only (legacy: one job per poll),
        as queues without wake-ups do. True once per tick."""
        if now < self.poll_at:
            return False
        # Ticks on a fixed grid, so a late wake-up does not stretch every interval;
        # after a long stall, start a new grid rather than firing a burst of polls.
        late = now - self.poll_at >= self.poll_s
        self.poll_at = (now if late else self.poll_at) + self.poll_s
        return True
