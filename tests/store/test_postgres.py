"""What only the PostgreSQL store has: URLs, its schema, wake-ups by NOTIFY, lost
connections, fork safety, and its error translation. The shared behaviour is in
test_store_contract.py."""

from __future__ import annotations

import gc
import json
import os
import select
import threading

import psycopg
import psycopg.conninfo
import pytest
from click.testing import CliRunner
from psycopg import sql

from mpqueue import ConfigError, Queue, StoreError
from mpqueue.cli import cli
from mpqueue.records import JobState, Outcome, now_ms
from mpqueue.store import open_store
from mpqueue.store.postgres.schema import MIGRATIONS
from mpqueue.store.postgres.store import PostgresStore

from ..support.helpers import claim_all, done
from ..support.pg_helpers import admin, insert_ready, pg_url, schema_at  # noqa: F401
from .test_contract import add, record


@pytest.fixture
def store(pg_url):
    made = open_store(pg_url)
    try:
        yield made
    finally:
        made.close()


def readable(listener, timeout: float) -> bool:
    return bool(select.select([listener], [], [], timeout)[0])


def backend_pid(store: PostgresStore) -> int:
    return store.session.connection().info.backend_pid


# ---- locations and modes --------------------------------------------------------------------


def test_urls_open_postgres_and_legacy_mode_is_refused(pg_url):
    assert isinstance(open_store(pg_url), PostgresStore)
    assert isinstance(open_store("postgres://" + pg_url[len("postgresql://") :]), PostgresStore)
    with pytest.raises(ConfigError, match="'legacy' exists only for LMDB"):
        Queue(pg_url, mode="legacy")
    with pytest.raises(ConfigError, match="PostgreSQL"):
        open_store(pg_url, mode="legacy")


def test_unreachable_server_is_a_store_error():
    with pytest.raises(StoreError, match="cannot connect") as info:
        PostgresStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    assert isinstance(info.value.__cause__, psycopg.Error)


# ---- schema ----------------------------------------------------------------------------------


def test_schema_is_created_once_by_racing_openers(pg_url):
    stores: list[PostgresStore] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            stores.append(PostgresStore(pg_url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == [] and len(stores) == 4
    with admin(pg_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM mpqueue_schema_version")]
        indexes = dict(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mpqueue_jobs'"
            ).fetchall()
        )
    assert versions == list(range(1, len(MIGRATIONS) + 1))
    ready = "WHERE ((state = 'ready'::text) AND (NOT paused) AND (lane IS NULL))"
    assert ready in indexes["mpqueue_jobs_ready"]
    assert "(lane, priority DESC, seq)" in indexes["mpqueue_jobs_laned"]
    assert "(priority DESC, seq)" in indexes["mpqueue_jobs_ready"]
    assert "(run_at_ms, priority DESC, seq)" in indexes["mpqueue_jobs_scheduled"]
    for store in stores:
        store.close()


def test_a_newer_schema_is_refused(pg_url, store):
    with admin(pg_url) as conn:
        conn.execute("INSERT INTO mpqueue_schema_version (version) VALUES (99)")
    with pytest.raises(ConfigError, match="schema version 99"):
        PostgresStore(pg_url)


def test_an_older_schema_gains_the_retry_lists_and_keeps_its_jobs(pg_url):
    """The retry lists' migration on a store written before it (at version 3): its jobs
    read as jobs without lists, and new jobs keep theirs."""
    names = schema_at(pg_url, 3)
    old = record()
    with admin(pg_url) as conn:
        insert_ready(conn, names, old)
    store = PostgresStore(pg_url)
    try:
        got = store.get(old.id)
        assert got.retry_on is None and got.no_retry_on == ()
        new = record(retry_on=("builtins.OSError",), no_retry_on=("builtins.KeyError",))
        add(store, new)
        (claimed,) = [r for r in claim_all(store) if r.id == new.id]
        assert (claimed.retry_on, claimed.no_retry_on) == (new.retry_on, new.no_retry_on)
    finally:
        store.close()


def test_an_older_schema_gains_expiry_and_keeps_its_jobs_and_keys(pg_url):
    """The expiry migration on a store written before it (version 6): its jobs read
    as jobs without a deadline and keep holding their keys; an expired job frees its
    key under the rebuilt unique index."""
    names = schema_at(pg_url, 6)
    old = record(key="k")
    with admin(pg_url) as conn:
        insert_ready(conn, names, old, key="k")
    store = PostgresStore(pg_url)
    try:
        assert store.get(old.id).expires_at_ms is None
        again = record(key="k")
        add(store, again)
        assert again.id == old.id  # the old job still holds its key
        start = now_ms()
        late = record(key="k2", expires_at_ms=start + 1000)
        add(store, late)
        assert sorted(r.id for r in claim_all(store, now=start + 2000)) == [old.id]
        assert store.get(late.id).state is JobState.EXPIRED
        fresh = record(key="k2")
        add(store, fresh)
        assert fresh.id != late.id and store.get(fresh.id).state is JobState.READY
        with admin(pg_url) as conn:
            indexes = dict(
                conn.execute(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'mpqueue_jobs'"
                ).fetchall()
            )
        assert "'expired'" in indexes["mpqueue_jobs_key"]
        assert "WHERE (state = 'expired'::text)" in indexes["mpqueue_jobs_expired"]
    finally:
        store.close()


def test_malformed_retry_lists_make_a_corrupt_record(pg_url, store):
    """A list column that is not a JSON array of names (a hand edit): the job shows as
    a dead stand-in, and a claim parks it instead of running it."""
    shown, claimed = record(), record()
    add(store, shown, claimed)
    with admin(pg_url) as conn:
        conn.execute("UPDATE mpqueue_jobs SET retry_on = '[1]' WHERE id = %s", (shown.id,))
        conn.execute("UPDATE mpqueue_jobs SET no_retry_on = 'nope' WHERE id = %s", (claimed.id,))
    got = store.get(shown.id)
    assert got.is_corrupt and "malformed retry lists" in got.errors[-1].message
    assert claim_all(store) == []
    assert store.get(claimed.id).state is JobState.DEAD


def test_claiming_uses_the_partial_indexes(pg_url, store):
    add(store, *(record() for _ in range(50)))
    with admin(pg_url) as conn:
        conn.execute("SET enable_seqscan = off")  # a small table: make the plan show intent
        plan = "\n".join(
            r[0] for r in conn.execute("EXPLAIN " + store.sql["claim"], ("w1", 0, 0, 0, 0, 5))
        )
    assert "mpqueue_jobs_ready" in plan and "Sort" not in plan


def test_a_claim_of_one_queue_reads_that_queue_only(pg_url, store):
    """The claim of a named queue walks the queue's own ready index, not the rows of
    the other queues ahead of it (here 3,000 of them, older and of higher priority)."""
    add(store, *(record(queue="slow", priority=5) for _ in range(3_000)))
    add(store, *(record(queue="fast") for _ in range(5)))
    with admin(pg_url) as conn:
        conn.execute("ANALYZE mpqueue_jobs")
        params = ("w1", 0, 0, 0, 0, "fast", 5)
        with conn.transaction(force_rollback=True):  # EXPLAIN ANALYZE runs the claim: undone
            (row,) = conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + store.sql["claim_queue"], params
            ).fetchall()
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])

    def scans(node: dict) -> list[dict]:
        found = [node] if "Scan" in node["Node Type"] and "Relation Name" in node else []
        return found + [s for child in node.get("Plans", []) for s in scans(child)]

    picked = [
        n for n in scans(plan[0]["Plan"]) if n.get("Index Name") == "mpqueue_jobs_ready_queue"
    ]
    assert picked, plan
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in picked) <= 5, plan
    assert store.stats()["processing"] == 0  # rolled back


def test_a_stored_queue_name_no_mpqueue_writes_is_that_jobs_failure(pg_url, store):
    """A row changed by hand to a queue no name can be: the claim parks that job dead
    (a corrupt record) and hands out the others; readers show it, nothing fails."""
    first, bad, last = add(store, record(queue="q"), record(queue="q"), record(queue="q"))
    with admin(pg_url) as conn:
        conn.execute("UPDATE mpqueue_jobs SET queue = %s WHERE id = %s", ("no spaces\n", bad))
    assert sorted(r.id for r in claim_all(store)) == sorted([first, last])
    rec = store.get(bad)
    assert rec.state is JobState.DEAD and "bad queue name" in rec.errors[-1].message
    assert store.gauges().counts["dead"] == 1 and len(store.list()) == 3


def test_the_oldest_ready_job_is_found_by_one_seek_a_priority(pg_url, store):
    """The skip scan down the claim index reads a row a priority, not the backlog."""
    add(store, *(record(priority=i % 3) for i in range(3_000)))
    with admin(pg_url) as conn:
        conn.execute("ANALYZE mpqueue_jobs")
        (row,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + store.sql["oldest_ready"], (1000,)
        ).fetchall()
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])

    def scans(node: dict) -> list[dict]:
        found = [node] if "Scan" in node["Node Type"] and "Relation Name" in node else []
        return found + [s for child in node.get("Plans", []) for s in scans(child)]

    read = scans(plan[0]["Plan"])
    assert read and all(n.get("Index Name") == "mpqueue_jobs_ready" for n in read), plan
    # PostgreSQL rounds a loop's mean row count: a row a priority and one more a node
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in read) <= 3 + 2, plan


# ---- wake-ups -------------------------------------------------------------------------------


def test_listener_wakes_after_commit_only(store):
    listener = store.listen()
    try:
        assert not readable(listener, 0.05)
        add(store, record())
        assert readable(listener, 5) and listener.drain() >= 1
        assert not readable(listener, 0.05)
        with pytest.raises(StoreError):  # a duplicate id: the transaction rolls back
            store.add([record(), store.get(store.list()[0].id)])
        assert not readable(listener, 0.2) and store.stats()["total"] == 1
        (job_id,) = [r.id for r in claim_all(store)]
        store.finish([Outcome.failed(job_id, "w1", None, retryable=False)], now_ms())
        listener.drain()
        store.requeue_dead(job_id, now_ms())
        assert readable(listener, 5) and listener.drain() >= 1
    finally:
        listener.close()


def test_listener_survives_a_lost_connection(pg_url, store, waiter):
    listener = store.listen()
    try:
        with admin(pg_url) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (listener._conn.info.backend_pid,))
        # The server's goodbye, then the hang-up: each drain reads what is there, and the
        # hang-up itself counts as a wake-up (jobs may have come in while it was deaf).
        waiter(
            lambda: readable(listener, 0.2) and listener.drain() and listener._conn is None,
            timeout=10,
        )
        waiter(
            lambda: (
                readable(listener, 0.2) and listener.drain() >= 0 and listener._conn is not None
            ),
            timeout=10,
        )  # select() calls fileno(): reconnects
        listener.drain()
        add(store, record())
        assert readable(listener, 5) and listener.drain() >= 1
    finally:
        listener.close()


# ---- failures -------------------------------------------------------------------------------


def test_a_lost_connection_is_reopened_and_the_read_made_again(pg_url, store):
    ids = add(store, record(), record())
    with admin(pg_url) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (backend_pid(store),))
    assert store.stats()["ready"] == 2  # reconnected within the call; nothing lost
    assert sorted(r.id for r in claim_all(store)) == sorted(ids)


def test_a_reconnect_that_fails_is_a_store_error(pg_url, store):
    database = psycopg.conninfo.conninfo_to_dict(pg_url)["dbname"]
    refuse = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format
    with psycopg.connect(pg_url, dbname="postgres", autocommit=True) as conn:
        conn.execute(refuse(sql.Identifier(database), sql.SQL("false")))
        try:
            conn.execute("SELECT pg_terminate_backend(%s)", (backend_pid(store),))
            with pytest.raises(StoreError, match="cannot connect") as info:
                store.stats()
        finally:
            conn.execute(refuse(sql.Identifier(database), sql.SQL("true")))
    assert isinstance(info.value.__cause__, psycopg.OperationalError)
    assert store.stats()["total"] == 0  # and the next call, after the backoff, works


def test_failed_transaction_changes_nothing(store):
    (existing,) = add(store, record())
    before = store.stats()
    duplicate = store.get(existing)
    with pytest.raises(StoreError, match="UniqueViolation") as info:
        store.add([record(), record(), duplicate])
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)
    assert store.stats() == before


def test_corrupt_rows_are_shown_dead_and_never_handed_out(pg_url, store):
    good, bad, bad_claimed = add(store, record(), record(), record())
    assert {r.id for r in store.claim("w1", 3, now_ms())} == {good, bad, bad_claimed}
    store.requeue_server("w1")
    with admin(pg_url) as conn:
        conn.execute("UPDATE mpqueue_jobs SET errors = 'not json' WHERE id = %s", (bad,))
    assert store.get(bad).state is JobState.DEAD and store.get(bad).errors[-1].kind == "corrupt"
    assert {r.id for r in store.list()} == {good, bad, bad_claimed}
    claimed = store.claim("w1", 10, now_ms())
    assert {r.id for r in claimed} == {good, bad_claimed}
    with admin(pg_url) as conn:
        conn.execute("UPDATE mpqueue_jobs SET errors = '[1' WHERE id = %s", (bad_claimed,))
    assert store.finish([Outcome.failed(bad_claimed, "w1", None)], now_ms()) == [False]
    assert done(store, good, 1) is True
    assert store.stats() == {
        "ready": 0,
        "scheduled": 0,
        "processing": 0,
        "done": 1,
        "dead": 2,
        "waiting": 0,
        "cancelled": 0,
        "expired": 0,
        "total": 3,
    }
    with pytest.raises(ConfigError, match="unreadable"):
        store.requeue_dead(bad, now_ms())


def test_a_forked_child_never_touches_the_parents_connection(store):
    add(store, record())
    pid = os.fork()
    if pid == 0:  # the child uses and closes its copy: it must get its own connection
        code = 3
        try:
            code = 0 if store.stats()["ready"] == 1 else 4
            store.close()
            gc.collect()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    for _ in range(3):
        assert store.stats()["ready"] == 1  # the parent's connection still works


# ---- the command line -----------------------------------------------------------------------


def test_cli_takes_a_url(pg_url):
    runner = CliRunner()
    result = runner.invoke(cli, ["--path", pg_url, "enqueue", "tests.support.tasks.add", "[1, 2]"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["--path", pg_url, "stats", "--json"])
    assert result.exit_code == 0 and '"ready": 1' in result.output
    result = runner.invoke(cli, ["serve", "--help"])
    assert "--store" in result.output


def test_a_cycle_with_limits_in_use_runs_few_more_statements(pg_url):
    """Each statement is a round trip: with limits in use (three lanes with room), a
    serve cycle's finish_and_claim of 65 runs at most two more than with none (the
    limits' lock and read, and the candidates of every lane in one statement; the
    claim writes the slots, takes its own and gives back the outcomes')."""
    from mpqueue.concurrency import TASK
    from mpqueue.store.counting import CountingStore

    statements = {}
    for setup in ("plain", "limited"):
        with Queue(pg_url) as queue:
            store = queue.store
            store.add([record(f"t.task{i % 4}") for i in range(600)])
            if setup == "limited":
                for i in range(3):
                    store.set_limit(TASK, f"t.task{i}", 200)
            counting = CountingStore(store)
            got = counting.claim("w1", 65, now_ms())
            for _ in range(3):
                outcomes = [Outcome.done(rec.id, "w1", b"") for rec in got]
                _, got = counting.finish_and_claim(outcomes, "w1", 65, now_ms())
                assert len(got) == 65
            statements[setup] = counting.last("finish_and_claim").txns
            store.purge_dead()
            for rec in store.list():
                store.delete(rec.id)
    assert statements["limited"] <= statements["plain"] + 2, statements


@pytest.mark.parametrize("damage", ["queue", "timeout"])
def test_a_bad_row_of_a_limited_task_gives_its_slot_back(pg_url, store, damage):
    """The limited claim counts the slots of the rows it claims in its own statement: a
    row it then buries (unreadable, or a value out of bounds) gives its slot back."""
    from mpqueue.concurrency import TASK

    store.set_limit(TASK, "tests.support.tasks.add", 5)
    first, bad, last = add(store, record(), record(), record())
    change = {"queue": ("queue", "no spaces\n"), "timeout": ("timeout_s", 1e12)}[damage]
    with admin(pg_url) as conn:
        conn.execute(f"UPDATE mpqueue_jobs SET {change[0]} = %s WHERE id = %s", (change[1], bad))
    assert sorted(r.id for r in claim_all(store)) == sorted([first, last])
    assert store.get(bad).state is JobState.DEAD
    assert store.limits()[0].running == 2
    assert store.check(holder_gone=lambda server_id: True).code == 0


def test_an_older_schema_gains_rates_and_keeps_its_limits(pg_url):
    """Migration 13 on a store written before rates (version 12): its concurrency
    limits read as limits without a rate, and take one."""
    from mpqueue.concurrency import TASK, Limit
    from mpqueue.rates import Rate
    from mpqueue.store.postgres import schema as pg_schema

    names = schema_at(pg_url, 12)
    with admin(pg_url) as conn:
        conn.execute(
            pg_schema.render(
                "INSERT INTO {limits} (kind, name, concurrency, running) VALUES (%s, %s, %s, 0)",
                names,
            ),
            ("task", "t.a", 2),
        )
    store = PostgresStore(pg_url)
    try:
        assert store.limits() == [Limit(TASK, "t.a", 2, 0, None)]
        assert store.set_limit(TASK, "t.a", 2, Rate(3, 1000))
        assert store.limits() == [Limit(TASK, "t.a", 2, 0, Rate(3, 1000))]
    finally:
        store.close()
