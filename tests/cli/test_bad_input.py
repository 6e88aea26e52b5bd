"""Bad input raises from the mpqueue exception tree and leaves the store as it was."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import threading
from datetime import datetime, timezone

import lmdb
import pytest

from mpqueue import (
    ConfigError,
    DuplicateTask,
    JobNotFound,
    MpqueueError,
    Queue,
    Retry,
    SerializationError,
    limits,
)
from mpqueue.records import JobState, now_ms
from mpqueue.registry import MAX_NAME_BYTES
from mpqueue.store.lmdb import keys
from mpqueue.store.lmdb.env import _OPEN_ENVS

from ..support.helpers import claim_all, done, failed, run_cli, run_cli_as_nobody, snapshot
from ..support.second_user import public_dir, require_root  # noqa: F401  (public_dir: a fixture)


@pytest.fixture
def seeded(queue):
    """A queue with a job in every state, so 'unchanged' means something."""
    add = queue.task_by_name("tests.support.tasks.add")
    to_finish, to_kill, running = add.map([(1, 1), (2, 2), (3, 3)])
    claim_all(queue.store)
    done(queue.store, to_finish.id, 2)
    failed(queue.store, to_kill.id, retryable=False)
    add.delay(4, 4)
    add.schedule((5, 5), delay=3600)
    assert queue.stats() == {
        "ready": 1,
        "scheduled": 1,
        "processing": 1,
        "done": 1,
        "dead": 1,
        "waiting": 0,
        "cancelled": 0,
        "expired": 0,
        "total": 5,
    }
    return queue


def unchanged(queue, action, error=MpqueueError):
    before = snapshot(queue)
    with pytest.raises(error) as info:
        action()
    assert isinstance(info.value, MpqueueError)
    assert snapshot(queue) == before
    return info.value


def _gen():
    yield 1


@pytest.mark.parametrize("bad", [threading.Lock(), _gen()], ids=["lock", "generator"])
def test_unpicklable_argument(seeded, bad):
    add = seeded.task_by_name("tests.support.tasks.add")
    unchanged(seeded, lambda: add.delay(bad, 1), SerializationError)
    unchanged(seeded, lambda: add.schedule((1,), {"b": bad}, delay=5), SerializationError)
    # map: the bad tuple is last, so a partial write would show
    unchanged(seeded, lambda: add.map([(i, i) for i in range(50)] + [(bad, 1)]), SerializationError)
    unchanged(seeded, lambda: seeded.submit(print, bad), SerializationError)


def test_unpicklable_closure_in_submit(seeded):
    lock = threading.Lock()
    unchanged(seeded, lambda: seeded.submit(lambda: lock.acquire()), SerializationError)


def test_map_items_must_be_argument_tuples(seeded):
    add = seeded.task_by_name("tests.support.tasks.add")
    unchanged(seeded, lambda: add.map([(1, 2), 3]), ConfigError)
    unchanged(seeded, lambda: add.map([(1, 2), "ab"]), ConfigError)


def test_unknown_task_option(seeded):
    err = unchanged(seeded, lambda: seeded.task(lambda: None, retry=3), ConfigError)
    assert "retry" in str(err)
    assert seeded.registry.names() == []


@pytest.mark.parametrize(
    "options",
    [
        {"retries": -1},
        {"retries": 1.5},
        {"retries": True},
        {"retries": "3"},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": math.nan},
        {"timeout": math.inf},
        {"timeout": "60"},
        {"backoff": 0},
        {"backoff": math.nan},
        {"backoff": math.inf},
        {"backoff_cap": -5},
        {"backoff_cap": math.inf},
        {"priority": 2**31},
        {"priority": -(2**31) - 1},
        {"priority": 1.0},
        {"priority": None},
        {"name": "a\x00b"},
        {"name": 42},
        {"timeout": 1e17},
        {"timeout": limits.TIMEOUT_MAX_S + 0.5},
        {"retries": 1001},
        {"backoff": 1e300},
        {"backoff": limits.BACKOFF_MAX_S + 1},
        {"backoff_cap": 1e20},
    ],
)
def test_invalid_task_option_values(seeded, options):
    unchanged(seeded, lambda: seeded.task(lambda: None, **options), ConfigError)
    assert seeded.registry.names() == []


def test_task_options_built_directly_are_checked_too():
    """Not only the decorator: a TaskOptions made by hand (benchmarks, task_by_name) is
    in bounds, so the hand-off path's claim deadline always fits its encoding."""
    from mpqueue.task import TaskOptions

    with pytest.raises(ConfigError, match="timeout must be at most 31536000 s"):
        TaskOptions(timeout=1e17)
    with pytest.raises(ConfigError, match="retries"):
        TaskOptions(retries=-1)
    assert TaskOptions(timeout=limits.TIMEOUT_MAX_S).timeout == limits.TIMEOUT_MAX_S


@pytest.mark.parametrize(
    "options, message",
    [
        ({"timeout": 1e17}, "timeout must be at most 31536000 s (one year), got 1e+17"),
        ({"backoff_cap": 1e20}, "backoff_cap must be at most 31536000 s (one year), got 1e+20"),
        ({"retries": 5000}, "retries must be an integer from 0 to 1000; got 5000"),
    ],
)
def test_a_bound_is_named_in_the_error(seeded, options, message):
    err = unchanged(seeded, lambda: seeded.task(lambda: None, **options), ConfigError)
    assert str(err) == message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"delay": -1},
        {"delay": math.nan},
        {"delay": math.inf},
        {"delay": -math.inf},
        {"delay": 1e20},
        {"delay": "5"},
        {"delay": True},
        {"delay": 1, "at": now_ms() / 1000 + 60},
        {"at": -1},
        {"at": math.nan},
        {"at": math.inf},
        {"at": 1e20},
        {"at": "tomorrow"},
        {"priority": 2**31},
        {"priority": "high"},
        {"delay": 1e16},
        {"delay": limits.DELAY_MAX_S + 1},
        {"delay": 10**400},
        {"at": limits.RUN_AT_MAX_MS / 1000 + 1},
        {"at": datetime(1969, 12, 31, tzinfo=timezone.utc)},
        {"at": True},
        {"priority": True},
    ],
)
def test_invalid_schedule_arguments(seeded, kwargs):
    add = seeded.task_by_name("tests.support.tasks.add")
    unchanged(seeded, lambda: add.schedule((1, 2), **kwargs), ConfigError)


def test_the_schedule_bounds_are_named(seeded):
    add = seeded.task_by_name("tests.support.tasks.add")
    err = unchanged(seeded, lambda: add.schedule((1, 2), delay=1e16), ConfigError)
    assert str(err) == "delay must be at most 3153600000 s (100 years), got 1e+16"
    err = unchanged(seeded, lambda: add.schedule((1, 2), at=1e12), ConfigError)
    assert "9999-12-31 23:59:59 UTC" in str(err) and "1000000000000.0" in str(err)


def test_map_priority_out_of_range(seeded):
    add = seeded.task_by_name("tests.support.tasks.add")
    unchanged(seeded, lambda: add.map([(1, 2)], priority=-(2**31) - 1), ConfigError)


@pytest.mark.parametrize("bad", [None, 42, "tests.support.tasks.add", b"x"])
def test_non_callable_to_task_and_submit(seeded, bad):
    if bad is not None:  # task(None) is the decorator-with-options form
        unchanged(seeded, lambda: seeded.task(bad), ConfigError)
    unchanged(seeded, lambda: seeded.task(retries=1)(bad), ConfigError)
    unchanged(seeded, lambda: seeded.submit(bad, 1), ConfigError)


def test_duplicate_task_name(seeded):
    seeded.task(lambda: None, name="twice")
    unchanged(seeded, lambda: seeded.task(lambda: 1, name="twice"), DuplicateTask)

    def same():
        return None

    seeded.task(same)
    unchanged(seeded, lambda: seeded.task(same), DuplicateTask)


def test_task_name_too_long(seeded):
    longest = "x" * MAX_NAME_BYTES
    assert len(keys.by_name_key(longest, "0" * 32)) == keys.MAX_KEY_BYTES
    unchanged(seeded, lambda: seeded.task(lambda: None, name=longest + "x"), ConfigError)
    unchanged(seeded, lambda: seeded.task(lambda: None, name="é" * MAX_NAME_BYTES), ConfigError)

    def fn():
        return None

    fn.__qualname__ = "y" * MAX_NAME_BYTES  # the derived name is module + qualname
    unchanged(seeded, lambda: seeded.submit(fn), ConfigError)
    ok = seeded.task(lambda: None, name=longest)  # exactly at the limit works
    assert ok.delay().name == longest


def test_store_path_is_a_file(tmp_path, mode):
    path = tmp_path / "a-file"
    path.write_bytes(b"not a store")
    with pytest.raises(ConfigError):
        Queue(str(path), mode=mode)
    with pytest.raises(ConfigError):
        Queue(str(path / "below"), mode=mode).stats()
    assert path.read_bytes() == b"not a store"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "fast"},
        {"result_ttl": -1},
        {"result_ttl": math.nan},
        {"result_ttl": math.inf},
        {"result_ttl": 1e300},
        {"result_ttl": True},
        {"result_ttl": limits.RESULT_TTL_MAX_S + 1},
    ],
)
def test_invalid_queue_options(tmp_path, kwargs):
    with pytest.raises(ConfigError):
        Queue(str(tmp_path / "q"), **kwargs)


def test_bad_list_arguments(seeded):
    unchanged(seeded, lambda: seeded.list(state="pending"), ConfigError)
    unchanged(seeded, lambda: seeded.list(state="READY"), ConfigError)
    unchanged(seeded, lambda: seeded.list(limit=-1), ConfigError)
    unchanged(seeded, lambda: seeded.list(limit=1.5), ConfigError)
    unchanged(seeded, lambda: seeded.list(name="a\x00b"), ConfigError)


def test_requeue_of_a_job_that_is_not_dead(seeded):
    for job in seeded.list():
        if job.state != "dead":
            unchanged(seeded, lambda: seeded.requeue(job.id), ConfigError)


def test_unknown_job_id(seeded):
    for bad in ("f" * 32, "nope", "", "F" * 32, 12):
        assert seeded.get(bad) is None
        before = snapshot(seeded)
        assert seeded.delete(bad) is False
        assert snapshot(seeded) == before
        unchanged(seeded, lambda: seeded.requeue(bad), JobNotFound)


def test_retry_delay_must_be_finite_and_bounded():
    for bad in (-1, math.nan, math.inf, True, "5", limits.DELAY_MAX_S + 1, 1e308):
        with pytest.raises(ConfigError, match="Retry delay"):
            Retry(bad)
    assert Retry(0).delay_s == 0
    assert Retry(limits.DELAY_MAX_S).delay_s == limits.DELAY_MAX_S


def test_longest_backoff_does_not_break_finish(queue):
    @queue.task(retries=3, backoff=limits.BACKOFF_MAX_S, backoff_cap=limits.BACKOFF_MAX_S)
    def slow():
        return None

    job = slow.delay()
    claim_all(queue.store)
    assert failed(queue.store, job.id) is True
    rec = queue.store.get(job.id)
    assert rec.state is JobState.SCHEDULED and rec.run_at_ms <= limits.RUN_AT_MAX_MS


# ---- corrupt records -------------------------------------------------------------------


def _corrupt(path: str, job_ids: list[str], garbage: bytes) -> None:
    """Overwrite records with garbage through a raw lmdb handle (the queue is closed)."""
    assert not _OPEN_ENVS, "the store must be closed before a raw handle opens it"
    env = lmdb.open(path, max_dbs=len(keys.ALL_DBS) + 2, subdir=True)
    try:
        jobs = env.open_db(keys.DB_JOBS)
        by_name = env.open_db(keys.DB_BY_NAME)
        with env.begin(write=True) as txn:
            for job_id in job_ids:
                txn.put(keys.job_key(job_id), garbage, db=jobs)
                for key, _ in list(txn.cursor(db=by_name)):
                    if key.endswith(job_id.encode()):
                        txn.put(key, garbage, db=by_name)
    finally:
        env.close()


@pytest.mark.parametrize(
    "garbage",
    [b"\x01not a pickle", b"\x07", b"", b"\x01" + b"\x80\x05K\x01."],
    ids=["bad-pickle", "bad-version", "empty", "wrong-shape"],
)
def test_corrupt_records_never_crash_readers(store_path, mode, garbage):
    with Queue(store_path, mode=mode) as queue:
        add = queue.task_by_name("tests.support.tasks.add")
        good, bad_ready = add.map([(1, 1), (2, 2)])
        bad_scheduled = add.schedule((3, 3), delay=3600)
        bad_ready_id, bad_sched_id = bad_ready.id, bad_scheduled.id
        run_at = bad_scheduled.record.run_at_ms
    _corrupt(store_path, [bad_ready_id, bad_sched_id], garbage)

    with Queue(store_path, mode=mode) as queue:
        store = queue.store
        for job_id in (bad_ready_id, bad_sched_id):
            rec = queue.get(job_id)
            assert rec is not None and rec.state == "dead" and rec.error.kind == "corrupt"
        listed = {j.id: j for j in queue.list()}
        assert set(listed) == {good.id, bad_ready_id, bad_sched_id}
        assert listed[bad_ready_id].name == "tests.support.tasks.add"  # the index keeps the name
        assert queue.list(name="tests.support.tasks.add", state="dead")
        assert queue.stats()["total"] == 3

        claimed = claim_all(store)
        assert [r.id for r in claimed] == [good.id]
        claimed = claim_all(store, now=run_at)  # the bad scheduled job comes due
        assert claimed == []
        stats = queue.stats()
        assert stats["dead"] == 2 and stats["processing"] == 1 and stats["total"] == 3
        assert stats["ready"] == 0 and stats["scheduled"] == 0
        for job_id in (bad_ready_id, bad_sched_id):
            assert (
                "corrupt" in queue.get(job_id).error.message
                or "decoded" in queue.get(job_id).error.message
            )
        assert queue.store.next_run_at_ms() is None
        with pytest.raises(ConfigError):
            queue.requeue(bad_ready_id)  # nothing to requeue: the payload is gone
        assert queue.delete(bad_ready_id) is True
        assert queue.get(bad_ready_id) is None
        assert queue.purge_dead() == 1
        assert queue.stats() == {
            "ready": 0,
            "scheduled": 0,
            "processing": 1,
            "done": 0,
            "dead": 0,
            "waiting": 0,
            "cancelled": 0,
            "expired": 0,
            "total": 1,
        }
        assert [j.id for j in queue.list()] == [good.id]


@pytest.mark.parametrize("how", ["finish", "requeue_worker"])
def test_corrupt_record_of_a_claimed_job_is_parked_not_lost(store_path, mode, how):
    with Queue(store_path, mode=mode) as queue:
        job = queue.task_by_name("tests.support.tasks.add").delay(1, 1)
        assert [r.id for r in claim_all(queue.store)] == [job.id]
        job_id = job.id
    _corrupt(store_path, [job_id], b"\x01garbage")
    with Queue(store_path, mode=mode) as queue:
        store = queue.store
        if how == "finish":
            assert done(store, job_id, 2) is False
        else:
            assert store.requeue_server("w1") == []
        assert store.claims() == []
        assert queue.get(job_id).state == "dead"
        assert queue.stats() == {
            "ready": 0,
            "scheduled": 0,
            "processing": 0,
            "done": 0,
            "dead": 1,
            "waiting": 0,
            "cancelled": 0,
            "expired": 0,
            "total": 1,
        }
        assert queue.purge_dead() == 1 and queue.stats()["total"] == 0


def test_arguments_that_name_classes_or_functions_survive_the_fast_path(queue):
    """Plain data is pickled without cloudpickle; anything naming a class or function,
    or data bytes that look like such an opcode, must still round-trip."""
    import decimal
    import enum

    class Colour(enum.IntEnum):
        RED = 1

    def local(x):
        return x

    task = queue.task(lambda *a: a)
    samples = [
        (1, "x", [1.5, None, True], {"a": b"z"}),
        (Colour.RED,),
        (decimal.Decimal("1.5"),),
        (len,),
        (local,),
        (b"\x93\x82\x83\x84",),
    ]
    for args in samples:
        got, _ = task.delay(*args).args()
        assert got == args or all(callable(g) for g in got if callable(g))
        assert type(got[0]) is type(args[0])


# ---- one-line errors from the command line (issue 10, item 9) ----------------------------

HUGE = "9" * 5000  # over Python's 4,300-digit limit for turning text into an int
SYSEXIT_MODULE = "raise SystemExit(3)\n\ndef job():\n    pass\n"


def _one_error_line(done, code: int, *needles: str) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "args, code, needles",
    [
        ([b"list", b"--name", b"\xff"], 1, ["UTF-8"]),
        (["enqueue", "tests.support.tasks.add", f"[{HUGE}]"], 2, ["ARGS", "4300 digits"]),
        (
            ["enqueue", "tests.support.tasks.add", "[1]", "--kwargs", f'{{"b": {HUGE}}}'],
            2,
            ["--kwargs", "digits"],
        ),
        (
            ["enqueue", "tests.support.tasks.add", "[" * 20_000 + "]" * 20_000],
            2,
            ["nested too deeply"],
        ),
        (["enqueue", "sysexit_mod.job"], 1, ["sysexit_mod", "SystemExit: 3"]),
        (["list", "--limit", HUGE[:5]], 0, []),  # a control: a fine command stays fine
    ],
    ids=[
        "name-not-utf8",
        "huge-int-arg",
        "huge-int-kwarg",
        "deep-json",
        "sysexit-import",
        "control",
    ],
)
def test_cli_bad_input_is_one_error_line(tmp_path, args, code, needles):
    (tmp_path / "sysexit_mod.py").write_text(SYSEXIT_MODULE)
    store = str(tmp_path / "store")
    with Queue(store) as queue:
        seeded = queue.task_by_name("tests.support.tasks.add").map([(1, 1), (2, 2)])
        before = snapshot(queue)
    done = run_cli("--path", store, *args, cwd=tmp_path)
    if code:
        _one_error_line(done, code, *needles)
    else:
        assert done.returncode == 0 and seeded[0].id in done.stdout, done.stderr
    with Queue(store) as queue:
        assert snapshot(queue) == before


@pytest.mark.timeout(120)
def test_serve_with_an_import_that_raises_systemexit_is_one_error_line(tmp_path):
    (tmp_path / "sysexit_mod.py").write_text(SYSEXIT_MODULE)
    done = run_cli(
        "--path",
        str(tmp_path / "store"),
        "serve",
        "--import",
        "sysexit_mod",
        "--until-empty",
        "--workers",
        "1",
        cwd=tmp_path,
        timeout=100,
    )
    _one_error_line(done, 1, "sysexit_mod", "--import", "SystemExit: 3")


def test_api_names_must_be_utf8(queue):
    for action in (
        lambda: queue.task(lambda: None, name="a\udcff"),
        lambda: queue.list(name="a\udcff"),
        lambda: queue.list(name="\udcff", state="ready", limit=1),
    ):
        with pytest.raises(ConfigError, match="UTF-8"):
            action()


def test_api_huge_integers_raise_configerror_not_valueerror(seeded):
    add = seeded.task_by_name("tests.support.tasks.add")
    huge = 10**5000
    unchanged(seeded, lambda: seeded.enqueue(add, (1,), {}, priority=huge), ConfigError)
    unchanged(seeded, lambda: seeded.task(lambda: None, retries=huge), ConfigError)
    unchanged(seeded, lambda: seeded.list(state=huge), ConfigError)
    unchanged(seeded, lambda: seeded.list(limit=-huge), ConfigError)
    unchanged(seeded, lambda: add.map([huge]), ConfigError)
    with pytest.raises(ConfigError, match="digits"):  # bounded; the message describes it
        Retry(huge)


# ---- a store this user may read but not write (issue 10, item 9) ------------------------


def _readable_store(where: str, lock_down: bool) -> tuple[str, str]:
    """A root-owned store with two jobs (one done); ``lock_down``: directory and files
    also chmod a-w. Returns (path, the done job's id)."""
    store = os.path.join(where, "store")
    with Queue(store) as queue:
        first, _ = queue.task_by_name("tests.support.tasks.add").map([(1, 1), (2, 2)])
        assert [r.id for r in queue.store.claim("w1", 1, now_ms())] == [first.id]
        done(queue.store, first.id, 2)
    for root, _dirs, files in os.walk(store):
        os.chmod(root, 0o555 if lock_down else 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o444 if lock_down else 0o644)
    return store, first.id


@pytest.mark.timeout(60)
@pytest.mark.parametrize("lock_down", [False, True], ids=["0644", "chmod-a-w"])
def test_a_store_another_user_may_only_read_can_be_inspected(public_dir, lock_down, monkeypatch):
    require_root()
    store, done_id = _readable_store(public_dir, lock_down)
    # Another user's store is not trusted by default (item 3): one line says why ...
    code, out, err = run_cli_as_nobody("--path", store, "stats", "--json")
    assert code == 1 and err.startswith("Error: ") and "belongs to uid 0" in err, err
    assert len(err.splitlines()) == 1
    # ... and once trusted on purpose, it can be read though not written.
    monkeypatch.setenv("MPQUEUE_SHARED_STORE", "1")
    code, out, err = run_cli_as_nobody("--path", store, "stats", "--json")
    assert (code, err) == (0, "") and json.loads(out)["total"] == 2
    code, out, err = run_cli_as_nobody("--path", store, "list", "--json")
    assert code == 0 and [j["state"] for j in json.loads(out)] == ["done", "ready"], err
    code, out, err = run_cli_as_nobody("--path", store, "show", done_id)
    assert code == 0 and "result:      2" in out, err
    with Queue(store) as queue:
        before = snapshot(queue)
    code, out, err = run_cli_as_nobody(
        "--path", store, "enqueue", "tests.support.tasks.add", "[1, 2]"
    )
    assert code == 1 and out == "" and err.startswith("Error: ") and "read-only" in err
    assert len(err.splitlines()) == 1
    with Queue(store) as queue:
        assert snapshot(queue) == before


@pytest.fixture
def read_only_mount(tmp_path):
    """(writable source, the same directory bind-mounted read-only); skips where this
    process may not mount (not root, or no CAP_SYS_ADMIN)."""
    source, mounted = tmp_path / "src", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root and mount(8)")
    bind = subprocess.run(["mount", "--bind", str(source), str(mounted)], capture_output=True)
    if bind.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {bind.stderr.decode().strip()}")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(mounted)], check=True, capture_output=True
        )
        yield source, mounted
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


@pytest.mark.timeout(60)
def test_a_store_on_a_read_only_mount_can_be_inspected(read_only_mount):
    source, mounted = read_only_mount
    with Queue(str(source / "store")) as queue:
        jobs = queue.task_by_name("tests.support.tasks.add").map([(1, 1), (2, 2)])
    store = str(mounted / "store")
    stats = run_cli("--path", store, "stats", "--json", cwd=source)
    assert stats.returncode == 0 and json.loads(stats.stdout)["ready"] == 2, stats.stderr
    listed = run_cli("--path", store, "list", "--json", cwd=source)
    assert [j["id"] for j in json.loads(listed.stdout)] == [j.id for j in jobs], listed.stderr
    shown = run_cli("--path", store, "show", jobs[0].id, cwd=source)
    assert shown.returncode == 0 and "(1, 1)" in shown.stdout, shown.stderr
    added = run_cli("--path", store, "enqueue", "tests.support.tasks.add", "[3, 3]", cwd=source)
    _one_error_line(added, 1, "read-only")
    with Queue(str(source / "store")) as queue:
        assert queue.stats()["total"] == 2


@pytest.mark.timeout(60)
def test_a_read_only_store_from_before_workflows_can_be_inspected(read_only_mount):
    """A store written before workflows (and cancels, progress, pauses) has none of
    their databases; opened read-only (they cannot be created), it reads them as empty."""
    import lmdb

    from mpqueue.store.lmdb import keys

    source, mounted = read_only_mount
    with Queue(str(source / "store")) as queue:
        job = queue.task_by_name("tests.support.tasks.add").delay(1, 1)
    raw = lmdb.open(str(source / "store"), max_dbs=len(keys.ALL_DBS) + 2, subdir=True)
    try:
        for name in keys.ADDED_DBS:  # as the store was before workflows, cancels, pauses
            with raw.begin(write=True) as txn:
                txn.drop(raw.open_db(name, txn=txn), delete=True)
    finally:
        raw.close()
    store = str(mounted / "store")
    stats = run_cli("--path", store, "stats", "--json", cwd=source)
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["ready"] == 1 and counts["waiting"] == counts["cancelled"] == 0
    assert counts["paused"] == {"all": False, "tasks": []}
    shown = run_cli("--path", store, "show", job.id, "--json", cwd=source)
    assert shown.returncode == 0 and json.loads(shown.stdout)["dependents"] == [], shown.stderr
    listed = run_cli("--path", store, "list", "--state", "waiting", "--json", cwd=source)
    assert listed.returncode == 0 and json.loads(listed.stdout) == [], listed.stderr
