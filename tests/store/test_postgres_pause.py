"""Pausing on PostgreSQL beyond the contract (tests/store/test_contract_pause.py): a
paused backlog is out of the claim index, every way into ready flags a paused task's
job, the claim reads the pauses itself, a resume waits for an add that read the pause,
``check`` finds a flag no pause explains, a store of schema version 6 gains pausing,
and the CLI pauses a PostgreSQL store."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest
from click.testing import CliRunner

from mpqueue import ConfigError, Paused
from mpqueue.cli import cli
from mpqueue.records import Outcome, now_ms
from mpqueue.store import open_store
from mpqueue.store.base import OpCounter
from mpqueue.store.postgres.session import Query

from ..support.helpers import claim_all, done, failed, wait_until
from ..support.pg_helpers import admin, insert_ready, pg_url, schema_at  # noqa: F401
from .test_contract import add, record
from .test_postgres import store  # noqa: F401

A = "tests.support.tasks.add"
B = "tests.support.tasks.echo"


def claim_scan(conn, store) -> dict:
    """The claim's plan, run (and rolled back): the node that reads the claim index."""
    conn.execute("BEGIN")
    try:
        (row,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + store.sql["claim"], ("w1", 0, 0, 0, 0, 10)
        ).fetchall()
    finally:
        conn.execute("ROLLBACK")
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])

    def find(node: dict) -> dict | None:
        if node.get("Index Name") == "mpqueue_jobs_ready":
            return node
        return next((n for n in map(find, node.get("Plans", [])) if n is not None), None)

    found = find(plan[0]["Plan"])
    assert found is not None, plan
    return found


def test_a_paused_backlog_is_not_read_by_claims(pg_url, store):
    add(store, *(record(A) for _ in range(300)))
    store.pause(A)
    with admin(pg_url) as conn:
        conn.execute("SET enable_seqscan = off")
        scan = claim_scan(conn, store)
        assert scan["Actual Rows"] == 0 and scan.get("Rows Removed by Filter", 0) == 0
        store.pause(None)
        store.resume(A)
        scan = claim_scan(conn, store)  # the whole queue paused: the index is not read
        assert scan["Actual Loops"] == 0
        store.resume(None)
        assert claim_scan(conn, store)["Actual Rows"] == 10


def test_every_way_into_ready_keeps_a_paused_tasks_job_out_of_the_index(pg_url, store):
    """Added, promoted, a retry, released by its dependency, put back from a gone
    server, requeued from dead, released by its server: each is flagged (the claim
    would refuse it anyway: this is what keeps it out of the index)."""
    (dep,) = add(store, record(B))
    retried, back, buried, released = add(
        store, record(A, retries=2), record(A), record(A), record(A)
    )
    assert {r.id for r in claim_all(store)} == {dep, retried, back, buried, released}
    assert failed(store, buried, retryable=False)  # dead before the pause: not flagged
    store.pause(A)
    assert failed(store, retried)
    assert store.finish([Outcome.released(released, "w1")], now_ms()) == [True]
    add(store, record(A), record(A, run_at_ms=now_ms() + 1000), record(A, depends_on=(dep,)))
    assert done(store, dep, 1)
    store.requeue_dead(buried, now_ms())
    store.requeue_server("w1")
    store.promote_due(now_ms() + 3_600_000)
    with admin(pg_url) as conn:
        rows = conn.execute(
            "SELECT state, paused, count(*) FROM mpqueue_jobs WHERE name = %s "
            "GROUP BY state, paused",
            (A,),
        ).fetchall()
    assert rows == [("ready", True, 7)]
    store.resume(A)
    with admin(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM mpqueue_jobs WHERE paused").fetchone() == (0,)


def test_a_resume_waits_for_a_job_being_added_as_paused(pg_url, store):
    """An add that read the pause (and so flags its job) has not committed yet: the
    resume waits for it, then unflags the job, which is claimed after."""
    store.pause(A)
    job = record(A)
    adding = psycopg.connect(pg_url)  # its transaction stays open until the commit below
    try:
        with adding.cursor(binary=True) as cursor:
            store._add(Query(cursor, OpCounter()), [job], notify=False)
        resumer = threading.Thread(target=store.resume, args=(A,))
        resumer.start()
        with admin(pg_url) as conn:
            wait_until(
                lambda: (
                    conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE %s",
                        ("DELETE FROM%mpqueue_pauses%",),
                    ).fetchone()
                    == (1,)
                ),
                10,
                "the resume waiting for the add",
            )
        adding.commit()
        resumer.join(10)
        assert not resumer.is_alive()
    finally:
        adding.close()
    assert store.paused() == Paused() and [rec.id for rec in claim_all(store)] == [job.id]


def test_a_row_the_pause_missed_is_not_claimed(pg_url, store):
    """A job added by a transaction the pause could not see keeps ``paused`` false: the
    claim reads the pause itself, and ``check`` lets it be."""
    held, free = add(store, record(A), record(B))
    store.pause(A)
    with admin(pg_url) as conn:
        conn.execute("UPDATE mpqueue_jobs SET paused = false WHERE id = %s", (held,))
    assert [rec.id for rec in claim_all(store)] == [free]
    assert store.check(holder_gone=lambda server_id: True).inconsistent == []
    store.resume(A)
    assert [rec.id for rec in claim_all(store)] == [held]


def test_check_finds_a_job_held_for_a_pause_that_is_gone(pg_url, store):
    (job,) = add(store, record(A))
    with admin(pg_url) as conn:
        conn.execute("UPDATE mpqueue_jobs SET paused = true WHERE id = %s", (job,))
    report = store.check()
    assert report.inconsistent == [f"job {job} is held as paused but its task is not paused"]
    assert claim_all(store) == []


def test_a_version_6_store_gains_pausing_and_keeps_its_ready_jobs(pg_url):
    names = schema_at(pg_url, 6)
    old = record(A)
    with admin(pg_url) as conn:
        insert_ready(conn, names, old)
    store = open_store(pg_url)
    try:
        store.pause(A)
        assert claim_all(store) == [] and store.stats()["ready"] == 1
        store.resume(A)
        assert [rec.id for rec in claim_all(store, now=now_ms())] == [old.id]
    finally:
        store.close()


def test_the_cli_pauses_and_resumes_a_postgres_store(pg_url, store):
    held, free = add(store, record(A), record(B))

    def run(*args: str):
        return CliRunner().invoke(cli, ["--path", pg_url, *args], prog_name="mpqueue")

    result = run("pause", A, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "task": A,
        "paused": True,
        "changed": True,
        "now_paused": {"all": False, "tasks": [A]},
    }
    assert [rec.id for rec in claim_all(store)] == [free]
    bad = run("pause", "bad\x00name")
    assert bad.exit_code == 1 and "NUL" in bad.output and len(bad.output.splitlines()) == 1
    assert "Paused now: nothing" in run("resume", A).output
    assert [rec.id for rec in claim_all(store)] == [held]


def test_no_task_name_stands_for_the_whole_queue(store):
    """The whole-queue row's name, "", is refused as a task name, at the store too."""
    for bad in ("", "a\x00b"):
        with pytest.raises(ConfigError, match="task name"):
            store.pause(bad)
        with pytest.raises(ConfigError, match="task name"):
            store.resume(bad)
    assert store.paused() == Paused()
