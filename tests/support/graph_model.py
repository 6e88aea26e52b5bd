"""The state machine's model of workflows (tests/store/test_state_machine.py): the
dependency edges, the waiting jobs' counts and the unique keys, with the rules written
again here, simply, and not taken from ``mpqueue.dependencies``: a test that used the
store's rules to predict the store could not catch a mistake in them.

The rules, as the model has them:
- a new job with dependencies: cancelled at once if one of them is dead or cancelled
  (unless it allows failures), its edges all closed; else an edge per dependency, open
  while that dependency has not ended; waiting while any edge is open, for as many jobs
  as it has open edges (a job named twice is one edge), else queued as it was given;
- the end of a job settles its open edges, and leaves them open in storage: a done
  dependency counts its dependent down, and at zero the dependent is queued (scheduled
  while its run-at is ahead);
  a dependency that ended otherwise (dead, cancelled, deleted before it ended) cancels
  it, and that cancellation ends it in turn, unless it allows failures, which counts it
  down as if the dependency were done;
- a dependent whose count reaches zero past its deadline (``expires``), never having
  started, ends expired instead of being queued, and that ends it in turn, as a
  failure;
- a dead job taken back (requeued) closes its edges: its next end settles nothing;
- a key is held by the last job that took it, while that job exists and is neither
  dead, cancelled nor expired.
"""

from __future__ import annotations

from collections.abc import Sequence

from mpqueue.records import JobState

ENDED = (JobState.DONE, JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED)
FAILED = (JobState.DEAD, JobState.CANCELLED, JobState.EXPIRED)


class GraphModel:
    """Edges, counts and keys beside the machine's model of the jobs, ``jobs`` (job id
    -> a list whose first item is the job's state and third its attempts), which it
    changes when a job is released, cancelled or expired."""

    def __init__(self, jobs: dict[str, list]):
        self.jobs = jobs
        self.edges: dict[str, dict[str, bool]] = {}  # dependency -> dependent -> open
        self.waiting: dict[str, int] = {}  # waiting job -> open edges into it
        self.allow: dict[str, bool] = {}  # job -> allow_failures
        self.depends_on: dict[str, tuple[str, ...]] = {}
        self.run_at: dict[str, int] = {}
        self.key_of: dict[str, tuple[str, str]] = {}  # job -> (name, key), if it has one
        self.holders: dict[tuple[str, str], str] = {}  # (name, key) -> the last job to take it
        self.deadline: dict[str, int] = {}  # job -> the time it must start by, if it has one

    def lapsed(self, job: str, clock_ms: int) -> bool:
        """Whether ``job`` is past its deadline without having started."""
        deadline = self.deadline.get(job)
        return deadline is not None and clock_ms >= deadline and self.jobs[job][2] == 0

    def holder(self, name: str, key: str) -> str | None:
        job = self.holders.get((name, key))
        live = job is not None and job in self.jobs and self.jobs[job][0] not in FAILED
        return job if live else None

    def enter(
        self,
        job: str,
        given: JobState,
        depends_on: Sequence[str],
        allow: bool,
        run_at: int,
        key: tuple[str, str] | None,
    ) -> JobState:
        """File a new job (its dependencies already modelled); returns its state."""
        self.allow[job], self.depends_on[job], self.run_at[job] = allow, tuple(depends_on), run_at
        if key is not None:
            self.key_of[job] = key
            self.holders[key] = job
        states = [self.jobs[dep][0] for dep in depends_on]
        if not allow and any(state in FAILED for state in states):
            for dep in depends_on:
                self.edges.setdefault(dep, {})[job] = False
            return JobState.CANCELLED
        open_deps = {dep for dep, state in zip(depends_on, states) if state not in ENDED}
        for dep in depends_on:
            self.edges.setdefault(dep, {})[job] = dep in open_deps
        if open_deps:
            self.waiting[job] = len(open_deps)
            return JobState.WAITING
        return given

    def end(self, job: str, how: JobState | None, clock_ms: int) -> None:
        """``job`` ended ``how`` (None: deleted before it ended): settle what waits."""
        ended = [(job, how)]
        while ended:
            dep, how = ended.pop()
            edges = self.edges.get(dep, {})
            for dependent in sorted(d for d, is_open in edges.items() if is_open):
                if dependent not in self.waiting:
                    continue  # cancelled already, by another of its dependencies
                if how is not JobState.DONE and not self.allow[dependent]:
                    del self.waiting[dependent]
                    self.jobs[dependent][0] = JobState.CANCELLED
                    ended.append((dependent, JobState.CANCELLED))
                elif self.waiting[dependent] > 1:
                    self.waiting[dependent] -= 1
                else:
                    del self.waiting[dependent]
                    if self.lapsed(dependent, clock_ms):
                        self.jobs[dependent][0] = JobState.EXPIRED
                        ended.append((dependent, JobState.EXPIRED))
                        continue
                    ahead = self.run_at[dependent] > clock_ms
                    self.jobs[dependent][0] = JobState.SCHEDULED if ahead else JobState.READY

    def forget(self, job: str) -> None:
        """A deleted job (its end already settled): its edges, count and key go."""
        self.edges.pop(job, None)
        for dep in self.depends_on.pop(job, ()):
            self.edges.get(dep, {}).pop(job, None)
            if dep in self.edges and not self.edges[dep]:
                del self.edges[dep]
        self.waiting.pop(job, None)
        self.deadline.pop(job, None)
        key = self.key_of.pop(job, None)
        if key is not None and self.holders.get(key) == job:
            del self.holders[key]

    def ended(self, job: str) -> bool:
        return job in self.jobs and self.jobs[job][0] in ENDED

    def take_back(self, job: str) -> None:
        """A dead job requeued: its edges close, and it holds its key again."""
        edges = self.edges.get(job, {})
        edges.update(dict.fromkeys(edges, False))
        key = self.key_of.get(job)
        if key is not None:
            self.holders[key] = job

    def dependents(self, job: str) -> list[str]:
        return sorted(self.edges.get(job, {}))

    def open_edges(self) -> dict[tuple[str, str], bool]:
        """Every edge, as (dependency, dependent) -> open."""
        return {(dep, d): o for dep, out in self.edges.items() for d, o in out.items()}
