"""Key encoders of mpqueue.store.lmdb.keys: round trips, byte order == queue order, size limits."""

from __future__ import annotations

import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mpqueue.errors import ConfigError
from mpqueue.limits import check_key_part
from mpqueue.registry import MAX_NAME_BYTES, check_name
from mpqueue.store.lmdb import keys

job_ids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32)
priorities = st.integers(keys.PRIORITY_MIN, keys.PRIORITY_MAX)
seqs = st.integers(0, 2**64 - 1)
times = st.integers(0, keys.RUN_AT_MAX_MS)
names = st.text(
    st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=40,
)


@given(priorities, seqs, job_ids)
def test_ready_key_round_trip(priority, seq, jid):
    assert keys.decode_ready_key(keys.ready_key(priority, seq, jid)) == (priority, seq, jid)


@given(times, priorities, seqs, job_ids)
def test_scheduled_key_round_trip(run_at, priority, seq, jid):
    key = keys.scheduled_key(run_at, priority, seq, jid)
    assert keys.decode_scheduled_key(key) == (run_at, priority, seq, jid)


@given(times, job_ids)
def test_done_key_round_trip(finished, jid):
    assert keys.decode_done_key(keys.done_key(finished, jid)) == (finished, jid)


@given(names, job_ids)
def test_by_name_key_round_trip(name, jid):
    key = keys.by_name_key(name, jid)
    assert keys.decode_by_name_key(key) == (name, jid)
    assert key.startswith(keys.by_name_prefix(name))


@given(names, job_ids)
def test_processing_key_round_trip(worker, jid):
    key = keys.processing_key(worker, jid)
    assert keys.decode_processing_key(key) == (worker, jid)
    assert key.startswith(keys.processing_prefix(worker))


@given(job_ids)
def test_job_dead_pending_keys_round_trip(jid):
    assert keys.decode_job_key(keys.job_key(jid)) == jid
    assert keys.dead_key(jid) == keys.pending_key(jid) == keys.job_key(jid)


@given(st.integers(0, 2**64 - 1))
def test_u64_round_trip(value):
    raw = keys.encode_u64(value)
    assert len(raw) == 8 and keys.decode_u64(raw) == value


@given(st.lists(st.tuples(priorities, seqs, job_ids), min_size=2, max_size=30))
def test_ready_order_is_priority_desc_then_fifo(entries):
    by_bytes = sorted(entries, key=lambda e: keys.ready_key(*e))
    by_queue_rule = sorted(entries, key=lambda e: (-e[0], e[1], e[2]))
    assert by_bytes == by_queue_rule


@given(st.lists(st.tuples(times, priorities, seqs, job_ids), min_size=2, max_size=30))
def test_scheduled_order_is_run_at_then_priority_then_seq(entries):
    by_bytes = sorted(entries, key=lambda e: keys.scheduled_key(*e))
    by_queue_rule = sorted(entries, key=lambda e: (e[0], -e[1], e[2], e[3]))
    assert by_bytes == by_queue_rule


@given(st.lists(st.tuples(times, job_ids), min_size=2, max_size=30))
def test_done_order_is_finish_time(entries):
    assert sorted(entries, key=lambda e: keys.done_key(*e)) == sorted(entries)


@given(times, priorities, seqs, job_ids, times)
@example(keys.RUN_AT_MAX_MS, keys.PRIORITY_MIN, 2**64 - 1, "f" * 32, keys.RUN_AT_MAX_MS)
@example(0, 0, 0, "0" * 32, -1)
def test_scheduled_upper_bound_splits_due_from_future(run_at, priority, seq, jid, now):
    key = keys.scheduled_key(run_at, priority, seq, jid)
    assert (key < keys.scheduled_upper_bound(now)) == (run_at <= now)


@given(times, job_ids, times)
def test_done_upper_bound_is_exclusive(finished, jid, before):
    assert (keys.done_key(finished, jid) < keys.done_upper_bound(before)) == (finished < before)


def test_done_upper_bound_below_zero_means_nothing_is_older():
    assert keys.done_upper_bound(-5) <= keys.done_key(0, "0" * 32)


@given(names, names, job_ids, job_ids)
def test_name_prefix_never_matches_a_longer_name(a, b, jid_a, jid_b):
    key_b = keys.by_name_key(b, jid_b)
    assert key_b.startswith(keys.by_name_prefix(a)) == (a == b)


def test_priority_extremes_and_lengths():
    jid = "a" * 32
    top = keys.ready_key(keys.PRIORITY_MAX, 0, jid)
    bottom = keys.ready_key(keys.PRIORITY_MIN, 0, jid)
    assert top < bottom
    assert len(top) == 4 + 8 + 32
    assert len(keys.scheduled_key(0, 0, 0, jid)) == 8 + 4 + 8 + 32
    with pytest.raises(struct.error):
        keys.ready_key(keys.PRIORITY_MAX + 1, 0, jid)


@pytest.mark.parametrize("bad", ["", "abc", "a" * 31, "a" * 33])
def test_job_ids_must_be_32_chars(bad):
    with pytest.raises(ConfigError):
        keys.job_key(bad)
    with pytest.raises(ConfigError):
        keys.ready_key(0, 0, bad)


def test_nul_is_refused_in_variable_parts():
    with pytest.raises(ConfigError):
        keys.by_name_key("a\x00b", "a" * 32)
    with pytest.raises(ConfigError):
        keys.processing_key("w\x00", "a" * 32)


def test_key_length_limit():
    jid = "b" * 32
    longest = "n" * MAX_NAME_BYTES
    key = keys.by_name_key(check_name(longest), jid)
    assert len(key) == keys.MAX_KEY_BYTES
    check_key_part(longest, "name")  # the rule every store applies: at the limit, fine
    with pytest.raises(ConfigError):
        check_name(longest + "n")
    with pytest.raises(ConfigError):
        check_key_part(longest + "n", "name")
    with pytest.raises(ConfigError):
        keys.check_name_key(longest + "n")
    # multi-byte characters count as bytes, not characters
    with pytest.raises(ConfigError):
        check_name("é" * (MAX_NAME_BYTES // 2 + 1))


@given(names, job_ids, priorities, seqs, times)
def test_enqueue_keys_equal_the_separate_encoders(name, jid, priority, seq, run_at):
    assert keys.enqueue_keys(name, jid, priority, seq, None) == (
        keys.job_key(jid),
        keys.by_name_key(name, jid),
        keys.DB_READY,
        keys.ready_key(priority, seq, jid),
    )
    assert keys.enqueue_keys(name, jid, priority, seq, run_at) == (
        keys.job_key(jid),
        keys.by_name_key(name, jid),
        keys.DB_SCHEDULED,
        keys.scheduled_key(run_at, priority, seq, jid),
    )


def test_job_ids_are_unique_after_fork_and_user_seeding():
    import os
    import random

    from mpqueue.records import new_job_ids

    random.seed(1234)  # user code seeding the global generator must not repeat ids
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child draws from a generator it inherited: it must be reseeded
        os.write(write_end, "".join(new_job_ids(50)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as fh:
        child = fh.read().decode()
    child_ids = [child[i : i + 32] for i in range(0, len(child), 32)]
    parent_ids = new_job_ids(50)
    assert len(child_ids) == 50
    assert all(len(i) == 32 for i in parent_ids)
    # the random tails (last 16 hex chars) never coincide between the two processes
    assert not {i[16:] for i in child_ids} & {i[16:] for i in parent_ids}
    assert len(set(new_job_ids(10_000))) == 10_000
