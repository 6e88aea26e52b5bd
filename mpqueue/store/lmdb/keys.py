"""Every LMDB database name and key encoding of mpqueue, and nothing else.

Each index is a named LMDB database (so its size is O(1) to read). Keys are tuples
packed so that LMDB's bytewise order is the order the queue needs:

    jobs        <jobId>                                  -> job record
    by_name     <name> 00 <jobId>                        -> job record (legacy: empty)
    ready       <invPriority:u32> <seq:u64> <jobId>      -> b""
    scheduled   <runAtMs:u64> <invPriority:u32> <seq:u64> <jobId> -> b""
    processing  <workerId> 00 <jobId>                    -> claim
    dead        <jobId>                                  -> reason (utf-8)
    done        <finishedAtMs:u64> <jobId>               -> b""  (retention order)
    pending     <jobId>                                  -> b""  (legacy layout only)
    waiting     <jobId>                                  -> open deps:u32, allow failures:u8
    cancelled   <finishedAtMs:u64> <jobId>               -> reason (utf-8; retention order)
    expired     <finishedAtMs:u64> <jobId>               -> b""  (retention order)
    deps        <dependencyId> <dependentId>             -> b"" open, b"c" closed
    unique      <name> 00 <key>                          -> jobId (the job holding the key)
    meta        <name>                                   -> value
    workers     <workerId>                               -> coordinator info (heartbeat,
                                                            child pids)
    offers      <workerId> (as workers)                  -> child pids:u32... (idle
                                                            children a producer may give
                                                            a new job to directly)
    pauses      <name> | 00 (the whole queue)            -> b""  (what is paused)
    paused      <name> 00 [<queue> 00] <ready key>       -> b""  (the ready jobs of a
                                                            paused task, held out of ready;
                                                            the queue if not the default)
    queued      <queue> 00 <ready key>                   -> b""  (the ready jobs of the
                                                            named queues; ``ready`` holds
                                                            the default queue's)
    queues      <queue>                                  -> ready jobs:u64 (of a named
                                                            queue, held ones too)
    history     <tier:u8> <slot:u32>                     -> <atMs:u64> counts (JSON): the
                                                            depth history (history.py)
    schedules   <name>                                   -> a periodic schedule's row
                                                            (schedules.encode_row, JSON)
    schedule_due <nextDueMs:u64> <name>                  -> b""  (the active schedules,
                                                            next due first)
    limits      t<name> | q<queue>                       -> concurrency:u32 (0: none)
                                                            running:u32 [rate count:u32
                                                            window ms:u32 (at ms:u64
                                                            starts:u32)*] (rates.py)
    laned       <queue> 00 <name or ""> 00 <ready key>   -> b""  (a limited task's or
                                                            queue's ready jobs: lanes.py)
    lanes       <queue> 00 <name or ""> 00               -> ready jobs:u64 (of a lane)
    counted     <processing key>                         -> limit keys joined by 00 (the
                                                            slots a running job holds)

Integers are fixed-width big-endian. Priority is stored inverted so that a higher
priority sorts first; ``seq`` is a store-wide counter, so equal priorities run FIFO.
Variable-length parts (task name, server id) end with a 0 byte, which they may not
contain, so a prefix scan of ``a.b`` never matches ``a.bc``.
"""

from __future__ import annotations

import functools
import json
import struct
from collections.abc import Mapping, Sequence
from typing import NamedTuple, Protocol

from ...concurrency import LimitState
from ...errors import ConfigError

# Re-exported: the encodings below are written for these bounds.
from ...limits import JOB_ID_BYTES as JOB_ID_BYTES
from ...limits import KEY_MAX_BYTES, check_key_part
from ...limits import PRIORITY_MAX as PRIORITY_MAX
from ...limits import PRIORITY_MIN as PRIORITY_MIN
from ...limits import RUN_AT_MAX_MS as RUN_AT_MAX_MS
from ...rates import Rate
from ...records import JobState


class Queued(Protocol):
    """What files a job in the queue indexes: a ``JobRecord``, or a ``codec.Row``."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def state(self) -> JobState: ...
    @property
    def priority(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def run_at_ms(self) -> int: ...
    @property
    def queue(self) -> str: ...


DB_JOBS = b"jobs"
DB_BY_NAME = b"by_name"
DB_READY = b"ready"
DB_SCHEDULED = b"scheduled"
DB_PROCESSING = b"processing"
DB_DEAD = b"dead"
DB_DONE = b"done"
DB_PENDING = b"pending"
DB_META = b"meta"
DB_WORKERS = b"workers"
DB_OFFERS = b"offers"
DB_WAITING = b"waiting"
DB_CANCELLED = b"cancelled"
DB_DEPS = b"deps"
DB_UNIQUE = b"unique"
DB_CANCELS = b"cancels"  # processing key -> the text of a cancel requested while it runs
DB_PROGRESS = b"progress"  # job key -> its last progress report (codec.encode_progress)
DB_PAUSES = b"pauses"  # paused task name (or PAUSE_ALL) -> b""
DB_PAUSED = b"paused"  # held key (held_key) -> b"": a paused task's ready jobs
DB_EXPIRED = b"expired"  # done key (done_key) -> b"": jobs not started by their deadline
DB_HISTORY = b"history"  # (tier, slot) (history_key) -> a depth sample (encode_sample)
DB_QUEUED = b"queued"  # queued key (queued_key) -> b"": a named queue's ready jobs
DB_QUEUES = b"queues"  # queue name -> how many ready jobs it has (u64; see queues.py)
DB_SCHEDULES = b"schedules"  # schedule name -> its row (schedules.encode_row)
DB_SCHEDULE_DUE = b"schedule_due"  # (next due, name) (schedule_due_key) -> b""
# Concurrency and rate limits (see lanes.py): limit key (limit_key) -> concurrency u32,
# running u32, and for a rate its count, window and log of starts; a limited task's or
# queue's ready jobs by lane (lane_prefix + ready key) -> b"";
# each lane's number of them (u64); the limits a running limited job counts against,
# by its processing key -> limit keys joined by 0.
DB_LIMITS = b"limits"
DB_LANED = b"laned"
DB_LANES = b"lanes"
DB_COUNTED = b"counted"
# The databases of workflows: a store written before them lacks them, and a read-only
# open of such a store reads them as empty.
WORKFLOW_DBS = (DB_WAITING, DB_CANCELLED, DB_DEPS, DB_UNIQUE)
# Databases added since the first layout: a read-only open of a store written before
# them reads them as empty.
ADDED_DBS = (
    *WORKFLOW_DBS,
    DB_CANCELS,
    DB_PROGRESS,
    DB_PAUSES,
    DB_PAUSED,
    DB_EXPIRED,
    DB_HISTORY,
    DB_QUEUED,
    DB_QUEUES,
    DB_SCHEDULES,
    DB_SCHEDULE_DUE,
    DB_LIMITS,
    DB_LANED,
    DB_LANES,
    DB_COUNTED,
)
ALL_DBS = (
    DB_JOBS,
    DB_BY_NAME,
    DB_READY,
    DB_SCHEDULED,
    DB_PROCESSING,
    DB_DEAD,
    DB_DONE,
    DB_PENDING,
    DB_META,
    DB_WORKERS,
    DB_OFFERS,
    *ADDED_DBS,
)

META_LAYOUT = b"layout"
META_SCHEMA = b"schema"
META_CODEC = b"codec"  # the record encoding every record is in (absent: 1)

MAX_KEY_BYTES = KEY_MAX_BYTES  # a longer key raises BadValsizeError
SEP = b"\x00"
_U64_MAX = 2**64 - 1
# The bounds (limits.py) keep every priority in the u32 of _inv_priority and every run
# time far below the u64 maximum that scheduled_upper_bound keeps free.

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_READY = struct.Struct(">IQ")
_SCHEDULED = struct.Struct(">QIQ")


def _inv_priority(priority: int) -> int:
    return PRIORITY_MAX - priority


def _jid(job_id: str) -> bytes:
    raw = job_id.encode("ascii")
    if len(raw) != JOB_ID_BYTES:
        raise ConfigError(f"job id must be {JOB_ID_BYTES} characters, got {job_id!r}")
    return raw


@functools.lru_cache(maxsize=4096)
def _part(text: str, what: str) -> bytes:
    # Cached: a server encodes the same few task names and its own server id for
    # every job it claims and finishes.
    raw = text.encode("utf-8")
    if SEP in raw:
        raise ConfigError(f"{what} may not contain a NUL character: {text!r}")
    return raw


def job_key(job_id: str) -> bytes:
    return _jid(job_id)


def decode_job_key(key: bytes) -> str:
    return key.decode("ascii")


def by_name_key(name: str, job_id: str) -> bytes:
    return _part(name, "task name") + SEP + _jid(job_id)


def by_name_prefix(name: str) -> bytes:
    return _part(name, "task name") + SEP


def decode_by_name_key(key: bytes) -> tuple[str, str]:
    name, _, jid = key.rpartition(SEP)
    return name.decode("utf-8"), jid.decode("ascii")


def by_name_id(key: bytes) -> bytes:
    """The job id part of a by_name key (ids sort by creation time)."""
    return key[-JOB_ID_BYTES:]


def by_name_prefix_of(key: bytes) -> bytes:
    """The prefix (name, 0) every by_name key of that key's task shares."""
    return key[:-JOB_ID_BYTES]


def after_by_name_prefix(prefix: bytes) -> bytes:
    """The smallest key above every key with that name prefix: the next task's keys
    start at or after it (names hold no 0 byte, so none sorts between)."""
    return prefix[:-1] + b"\x01"


def ready_key(priority: int, seq: int, job_id: str) -> bytes:
    return _ready_key(priority, seq, _jid(job_id))


def _ready_key(priority: int, seq: int, jid: bytes) -> bytes:
    return _READY.pack(_inv_priority(priority), seq) + jid


def ready_priority_start(priority: int) -> bytes:
    """The smallest ready key of ``priority``: a seek there finds its first job."""
    return _READY.pack(_inv_priority(priority), 0)


def decode_ready_key(key: bytes) -> tuple[int, int, str]:
    inv, seq = _READY.unpack_from(key)
    return PRIORITY_MAX - inv, seq, key[_READY.size :].decode("ascii")


def scheduled_key(run_at_ms: int, priority: int, seq: int, job_id: str) -> bytes:
    return _scheduled_key(run_at_ms, priority, seq, _jid(job_id))


def _scheduled_key(run_at_ms: int, priority: int, seq: int, jid: bytes) -> bytes:
    return _SCHEDULED.pack(run_at_ms, _inv_priority(priority), seq) + jid


def enqueue_keys(
    name: str, job_id: str, priority: int, seq: int, run_at_ms: int | None
) -> tuple[bytes, bytes, bytes, bytes]:
    """(jobs key, by_name key, queue db, queue key) of a new job, for the enqueue path:
    the id is encoded once. ``run_at_ms`` None files it as ready, else as scheduled."""
    jid = _jid(job_id)
    name_key = by_name_prefix(name) + jid
    if run_at_ms is None:
        return jid, name_key, DB_READY, _ready_key(priority, seq, jid)
    return jid, name_key, DB_SCHEDULED, _scheduled_key(run_at_ms, priority, seq, jid)


PAUSE_ALL = SEP  # the pauses key of the whole queue: no task name is a lone 0 byte


def pause_key(name: str) -> bytes:
    return _part(name, "task name")


def held_key(name: str, ready: bytes, queue: str = "default") -> bytes:
    """A paused task's ready job: its ready key under the task's name, so that resuming
    one task is one prefix scan; between them the job's queue unless it is the default."""
    if queue == "default":
        return by_name_prefix(name) + ready
    return by_name_prefix(name) + queue_prefix(queue) + ready


def queue_of_held(key: bytes, name: str) -> str:
    """The queue of a held job (``held_key``)."""
    middle = key[len(by_name_prefix(name)) : -(_READY.size + JOB_ID_BYTES)]
    return middle[:-1].decode("ascii") if middle else "default"


def queue_prefix(queue: str) -> bytes:
    """The prefix of a named queue's keys in ``queued`` (queue names are ASCII, no 0)."""
    return queue.encode("ascii") + SEP


def queued_key(queue: str, ready: bytes) -> bytes:
    return queue_prefix(queue) + ready


def split_queued_key(key: bytes) -> tuple[bytes, bytes]:
    """(queue prefix, ready key) of a ``queued`` key."""
    cut = key.index(SEP) + 1
    return key[:cut], key[cut:]


def limit_key(kind: str, name: str) -> bytes:
    """A limit's key: ``t`` and a task name, or ``q`` and a queue name (no 0 byte)."""
    if kind == "task":
        return b"t" + _part(name, "task name")
    return b"q" + name.encode("ascii")


def decode_limit_key(key: bytes) -> tuple[str, str]:
    return ("task" if key[:1] == b"t" else "queue"), key[1:].decode("utf-8", "replace")


_LIMIT = struct.Struct(">II")
_RATE = struct.Struct(">II")
_START = struct.Struct(">QI")


def encode_limit(state: LimitState) -> bytes:
    raw = _LIMIT.pack(state.concurrency or 0, max(state.running, 0))
    if state.rate is None:
        return raw
    starts = b"".join(_START.pack(at, n) for at, n in state.starts)
    return raw + _RATE.pack(state.rate.count, state.rate.window_ms) + starts


def decode_limit(raw: bytes | None) -> LimitState | None:
    """A limit's values; None for none or for bytes mpqueue did not write."""
    if raw is None or len(raw) < _LIMIT.size:
        return None
    concurrency, running = _LIMIT.unpack_from(raw)
    if len(raw) == _LIMIT.size:
        return LimitState(concurrency or None, running) if concurrency else None
    body = len(raw) - _LIMIT.size - _RATE.size
    if body < 0 or body % _START.size:
        return None
    try:
        rate = Rate(*_RATE.unpack_from(raw, _LIMIT.size))
    except ConfigError:
        return None
    starts = tuple(_START.iter_unpack(raw[_LIMIT.size + _RATE.size :]))
    return LimitState(concurrency or None, running, rate, starts)


def lane_prefix(queue: str, task: str) -> bytes:
    """The prefix of a lane's keys in ``laned``: the queue, 0, the task ("" for a lane
    of a limited queue's jobs whose task has no limit), 0."""
    return queue.encode("ascii") + SEP + _part(task, "task name") + SEP


def split_lane_prefix(prefix: bytes) -> tuple[str, str]:
    """(queue, task) of a lane prefix."""
    queue, task, _ = prefix.split(SEP, 2)
    return queue.decode("ascii", "replace"), task.decode("utf-8", "replace")


def lane_limit_keys(prefix: bytes) -> tuple[bytes, ...]:
    """The keys (``limit_key``) of the limits a job of lane ``prefix`` may count against:
    its task's (none in a queue's lane), then its queue's; cut from the prefix, whose
    names are the bytes ``limit_key`` writes, without decoding them."""
    queue, task, _ = prefix.split(SEP, 2)
    return (b"t" + task, b"q" + queue) if task else (b"q" + queue,)


def lane_of_laned(key: bytes) -> bytes:
    """The lane prefix of a ``laned`` key (its ready key is fixed-width, at the end)."""
    return key[: -(_READY.size + JOB_ID_BYTES)]


def encode_count(count: int) -> bytes:
    return _U64.pack(max(count, 0))


def decode_count(raw: bytes | None) -> int:
    """A stored count; 0 for none, or for bytes that are not one (counts are shown,
    and a wrong one only slows a hand-off check down: see queues.py)."""
    return _U64.unpack(raw)[0] if raw is not None and len(raw) == _U64.size else 0


def ready_of_held(key: bytes) -> bytes:
    """The ready key a held key holds: ready keys are fixed-width, so its last bytes."""
    return key[-(_READY.size + JOB_ID_BYTES) :]


def decode_scheduled_key(key: bytes) -> tuple[int, int, int, str]:
    run_at_ms, inv, seq = _SCHEDULED.unpack_from(key)
    return run_at_ms, PRIORITY_MAX - inv, seq, key[_SCHEDULED.size :].decode("ascii")


def scheduled_upper_bound(now_ms: int) -> bytes:
    """First scheduled key that is *not* due at ``now_ms`` (exclusive bound)."""
    return _U64.pack(min(max(now_ms + 1, 0), _U64_MAX))


def processing_key(server_id: str, job_id: str) -> bytes:
    return _part(server_id, "server id") + SEP + _jid(job_id)


def processing_prefix(server_id: str) -> bytes:
    return _part(server_id, "server id") + SEP


def decode_processing_key(key: bytes) -> tuple[str, str]:
    wid, _, jid = key.rpartition(SEP)
    return wid.decode("utf-8"), jid.decode("ascii")


def server_key(server_id: str) -> bytes:
    return _part(server_id, "server id")


def decode_worker_key(key: bytes) -> str:
    return key.decode("utf-8")


def encode_pids(pids: Sequence[int]) -> bytes:
    return b"".join(_U32.pack(pid) for pid in pids)


def decode_pids(value: bytes) -> list[int]:
    return [pid for (pid,) in _U32.iter_unpack(value)]


# An offer (the offers index): version byte, the offering server's last heartbeat (ms)
# and lease (ms), then its idle children's pids. Producers judge the server's freshness
# from the offer alone: no second read in the enqueue's transaction.
OFFER_V2 = b"\x02"
_OFFER_HEAD = struct.Struct(">QI")


# Version 3 (a server that serves some queues only): the queues' names, comma
# separated, as a u16 length and ASCII after the head, then the pids.
OFFER_V3 = b"\x03"
_OFFER_QUEUES = struct.Struct(">H")


class Offer(NamedTuple):
    beat_ms: int
    lease_ms: int
    pids: list[int]
    queues: tuple[str, ...] | None  # None: the server serves every queue


def encode_offer(
    beat_ms: int, lease_ms: int, pids: Sequence[int], queues: Sequence[str] | None = None
) -> bytes:
    head = _OFFER_HEAD.pack(beat_ms, lease_ms)
    if queues is None:
        return OFFER_V2 + head + encode_pids(pids)
    names = ",".join(queues).encode("ascii")
    return OFFER_V3 + head + _OFFER_QUEUES.pack(len(names)) + names + encode_pids(pids)


def decode_offer(value: bytes) -> Offer | None:
    """The offer in ``value``, or None for a value that is not an offer of a version
    this code reads (an older server's, or bytes no server wrote)."""
    head = 1 + _OFFER_HEAD.size
    queues = None
    if value[:1] == OFFER_V3 and len(value) >= head + _OFFER_QUEUES.size:
        (size,) = _OFFER_QUEUES.unpack_from(value, head)
        start = head + _OFFER_QUEUES.size
        try:
            queues = tuple(value[start : start + size].decode("ascii").split(","))
        except UnicodeDecodeError:
            return None
        body = value[start + size :]
    elif value[:1] == OFFER_V2:
        body = value[head:]
    else:
        return None
    if not body or len(body) % 4:
        return None
    beat_ms, lease_ms = _OFFER_HEAD.unpack_from(value, 1)
    return Offer(beat_ms, lease_ms, [pid for (pid,) in _U32.iter_unpack(body) if pid > 0], queues)


_HISTORY_KEY = struct.Struct(">BI")


def history_key(tier: int, slot: int) -> bytes:
    """A history slot: tier then slot, so one tier's slots are one key range in order."""
    return _HISTORY_KEY.pack(tier, slot)


def decode_history_key(key: bytes) -> tuple[int, int]:
    tier, slot = _HISTORY_KEY.unpack(key)
    return int(tier), int(slot)


def encode_sample(at_ms: int, counts: Mapping[str, int]) -> bytes:
    """A depth sample: its time (u64 ms), then the counts as compact JSON (new states
    add keys, nothing to migrate)."""
    return _U64.pack(at_ms) + json.dumps(dict(counts), separators=(",", ":")).encode()


def decode_sample(raw: bytes) -> tuple[int, dict[str, int]] | None:
    """(time, counts), or None for bytes mpqueue did not write (skipped, not fatal)."""
    try:
        (at_ms,) = _U64.unpack_from(raw)
        counts = json.loads(raw[_U64.size :])
    except (struct.error, ValueError):
        return None
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        return None
    return int(at_ms), counts


def dead_key(job_id: str) -> bytes:
    return _jid(job_id)


def done_key(finished_at_ms: int, job_id: str) -> bytes:
    return _U64.pack(finished_at_ms) + _jid(job_id)


def decode_done_key(key: bytes) -> tuple[int, str]:
    (finished_at_ms,) = _U64.unpack_from(key)
    return finished_at_ms, key[_U64.size :].decode("ascii")


def done_upper_bound(before_ms: int) -> bytes:
    """First done key that is *not* older than ``before_ms`` (exclusive bound)."""
    return _U64.pack(min(max(before_ms, 0), _U64_MAX))


EDGE_OPEN, EDGE_CLOSED = b"", b"c"
_WAITING = struct.Struct(">IB")


def edge_key(dependency_id: str, dependent_id: str) -> bytes:
    return _jid(dependency_id) + _jid(dependent_id)


def edge_entries(
    dependent_id: str, dependency_ids: Sequence[str], open_edges: Sequence[bool]
) -> list[tuple[bytes, bytes]]:
    """The sorted (key, value) entries of a job's edges, for one multi-put."""
    dependent = _jid(dependent_id)
    entries = [
        (_jid(dep) + dependent, EDGE_OPEN if is_open else EDGE_CLOSED)
        for dep, is_open in zip(dependency_ids, open_edges)
    ]
    entries.sort()
    return entries


def edge_prefix(dependency_id: str) -> bytes:
    return _jid(dependency_id)


def edge_dependent(key: bytes) -> str:
    return key[JOB_ID_BYTES:].decode("ascii")


def decode_edge_key(key: bytes) -> tuple[str, str]:
    return key[:JOB_ID_BYTES].decode("ascii"), key[JOB_ID_BYTES:].decode("ascii")


def encode_waiting(open_deps: int, allow_failures: bool) -> bytes:
    return _WAITING.pack(open_deps, allow_failures)


def decode_waiting(value: bytes) -> tuple[int, bool]:
    """(open dependencies, allow failures); ValueError for bytes mpqueue did not write."""
    if len(value) != _WAITING.size:
        raise ValueError(f"a waiting entry is {_WAITING.size} bytes, not {len(value)}")
    open_deps, allow = _WAITING.unpack(value)
    return open_deps, bool(allow)


def unique_key(name: str, key: str) -> bytes:
    """The key index entry of (task name, unique key); ``limits.check_unique_key``
    bounds both together to one LMDB key."""
    return _part(name, "task name") + SEP + key.encode("utf-8")


def schedule_key(name: str) -> bytes:
    return _part(name, "schedule name")


def schedule_due_key(next_due_ms: int, name: str) -> bytes:
    return _U64.pack(next_due_ms) + _part(name, "schedule name")


def decode_schedule_due_key(key: bytes) -> tuple[int, str]:
    return int(_U64.unpack_from(key)[0]), key[8:].decode("utf-8")


def schedule_due_bound(now_ms: int) -> bytes:
    """The first due key after every schedule due at ``now_ms``."""
    return _U64.pack(now_ms + 1)


def pending_key(job_id: str) -> bytes:
    return _jid(job_id)


def encode_u64(value: int) -> bytes:
    return _U64.pack(value)


def decode_u64(raw: bytes) -> int:
    return int(_U64.unpack(raw)[0])


@functools.lru_cache(maxsize=1024)
def check_name_key(name: str) -> None:
    """Raise ConfigError if jobs of task ``name`` would have a by_name key over LMDB's
    limit: the rule every store applies (``limits.check_key_part``), cached here because
    producers check the same few names on every enqueue."""
    check_key_part(name, f"task name {name!r}")
