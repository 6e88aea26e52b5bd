"""Values out of bounds that are already in a store (written by older code or by hand):
each is that job's failure, never a crash of a claim, a server or a reader. Run
against every backend (see test_store_contract.py); the bounds at entry are in
test_bad_input.py, the fuzzing of raw LMDB values in test_stored_fuzz.py."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from mpqueue import limits
from mpqueue.cli import cli
from mpqueue.records import JobState, now_ms

from ..support.helpers import claim_all, failed
from ..support.pg_helpers import pg_url  # noqa: F401
from .test_contract import add, queue, record, store, store_location  # noqa: F401

# Each would have failed a server before: a deadline or a retry time no store can keep,
# a NaN or infinity in the arithmetic, a count no integer column holds.
OUT_OF_BOUNDS = [
    {"timeout_s": 1e17},
    {"timeout_s": math.nan},
    {"timeout_s": -1.0},
    {"timeout_s": limits.TIMEOUT_MAX_S * 2},
    {"backoff_base_s": math.inf},
    {"backoff_cap_s": 1e300},
    {"max_retries": 10**6},
    {"max_retries": -1},
    {"attempts": 2**31 - 1},
]


@pytest.mark.parametrize("bad", OUT_OF_BOUNDS, ids=lambda bad: "-".join(map(str, *bad.items())))
def test_a_stored_value_out_of_bounds_is_dead_lettered_not_a_poison_pill(store, bad):
    first, last = record(), record()
    wrong = record().evolve(**bad)  # as older code, or a hand, could have stored it
    wrong_later = record(run_at_ms=now_ms() + 60_000).evolve(**bad)
    now = now_ms()  # not before the records' own clock reads: all but one are due
    add(store, first, wrong, wrong_later, last)

    assert sorted(r.id for r in claim_all(store, now=now)) == sorted([first.id, last.id])
    assert failed(store, first.id) is True  # the others' outcomes still apply
    assert [r.id for r in claim_all(store, now=now + 60_000)] == [first.id]  # its retry
    for job in (wrong, wrong_later):
        rec = store.get(job.id)
        assert rec.state is JobState.DEAD, (bad, rec)
        assert rec.errors[-1].type == "OutOfBounds"
        assert "stored value out of bounds" in rec.errors[-1].message
        assert list(bad)[0] in rec.errors[-1].message  # it names the field
    stats = store.stats()
    assert (stats["dead"], stats["processing"], stats["ready"]) == (2, 2, 0)


def test_the_largest_value_of_every_bound_round_trips_and_claims(queue, store):
    """The bounds are what every store keeps: the longest timeout, retries, backoff and
    the latest run time are stored as given, and the claim deadline of the longest
    timeout fits (PostgreSQL computes it in bigint ms)."""

    @queue.task(
        timeout=limits.TIMEOUT_MAX_S,
        retries=limits.RETRIES_MAX,
        backoff=limits.BACKOFF_MAX_S,
        backoff_cap=limits.BACKOFF_MAX_S,
        priority=limits.PRIORITY_MAX,
    )
    def longest():
        return None

    far = longest.schedule(at=limits.RUN_AT_MAX_MS / 1000, priority=limits.PRIORITY_MIN)
    late = longest.schedule(delay=limits.DELAY_MAX_S)
    now = longest.delay()
    for job in (far, late, now):
        rec = store.get(job.id)
        assert (rec.timeout_s, rec.max_retries) == (limits.TIMEOUT_MAX_S, limits.RETRIES_MAX)
        assert (rec.backoff_base_s, rec.backoff_cap_s) == (limits.BACKOFF_MAX_S,) * 2
        assert limits.stored_problem(rec) is None
        assert job.run_at.year <= 9999  # datetime can show it
    assert store.get(far.id).run_at_ms == limits.RUN_AT_MAX_MS
    assert store.get(far.id).priority == limits.PRIORITY_MIN
    assert store.next_run_at_ms() == store.get(late.id).run_at_ms
    start = now_ms()
    assert [r.id for r in claim_all(store, now=start)] == [now.id]
    (claim,) = store.claims()
    assert claim.deadline_ms == start + limits.TIMEOUT_MAX_S * 1000
    assert failed(store, now.id) is True  # the longest backoff gives a time stores keep
    assert store.get(now.id).run_at_ms <= limits.RUN_AT_MAX_MS


def test_readers_show_a_stored_time_datetime_cannot(queue, store, store_location):
    """A run time far past year 9999 (older code accepted --delay 1e16) is listed and
    shown as its number of ms; it never comes due, and nothing else is affected."""
    beyond = 2**62
    odd = record(run_at_ms=beyond)
    fine = record()
    add(store, odd, fine)
    location, mode = store_location
    if location.startswith("memory://"):  # no command reaches a memory store: the API
        listed = {job.id: job.to_dict() for job in queue.list()}
        assert listed[odd.id]["run_at_ms"] == beyond and fine.id in listed
        job = queue.get(odd.id)
        assert job is not None and job.to_dict()["run_at_ms"] == beyond
    commands = [["list"], ["show", odd.id], ["stats"], ["list", "--json"]]
    runner = CliRunner()
    for args in [] if location.startswith("memory://") else commands:
        result = runner.invoke(cli, ["--path", location, "--mode", mode, *args])
        assert result.exit_code == 0, (args, result.output, result.exception)
        if args[0] != "stats":
            assert str(beyond) in result.output, args
    assert [r.id for r in claim_all(store)] == [fine.id]
    # A server meets a scheduled job when it comes due (never, here); the legacy poll
    # reads every waiting job each time, so it dead-letters this one at once.
    expected = JobState.DEAD if mode == "legacy" else JobState.SCHEDULED
    assert store.get(odd.id).state is expected


@pytest.mark.parametrize("delay_s", [math.inf, math.nan, 1e308, -5.0])
def test_a_retry_delay_out_of_bounds_from_a_child_still_finishes(store, delay_s):
    """A child reports the delay of its Retry over a pipe; whatever number arrives, the
    outcome applies and the retry time is one every store keeps (Retry itself refuses
    such delays; see test_bad_input.py)."""
    (job_id,) = add(store, record())
    claim_all(store)
    start = now_ms()
    assert failed(store, job_id, now=start, retry_delay_s=delay_s) is True
    rec = store.get(job_id)
    assert rec.state in (JobState.SCHEDULED, JobState.READY)  # NaN, -5: no wait at all
    assert start <= rec.run_at_ms <= start + limits.DELAY_MAX_S * 1000
