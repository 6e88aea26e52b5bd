"""PostgreSQL specifics of the dashboard's reads: each newest-first page walks an index
backwards from its cursor and stops at the page (``Store.browse``)."""

from __future__ import annotations

import json

import pytest

from mpqueue.records import now_ms
from mpqueue.store.postgres.store import PostgresStore

from ..support.pg_helpers import admin, insert_ready, pg_url, schema_at  # noqa: F401
from .test_contract import add, record
from .test_postgres import store  # noqa: F401

A = "tests.support.tasks.add"
B = "tests.support.tasks.echo"


def _scans(node: dict) -> list[dict]:
    found = [node] if "Scan" in node["Node Type"] and "Relation Name" in node else []
    return found + [s for child in node.get("Plans", []) for s in _scans(child)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("statement", "params", "index"),
    [
        ("browse", ("~",), "mpqueue_jobs_pkey"),
        ("browse_state", ("scheduled", "~", "scheduled"), "mpqueue_jobs_state_id"),
        ("browse_name", (B, "~", B), "mpqueue_jobs_name_id"),
        # a second filter: within a span of the lead's index (here from the lowest id)
        ("browse_name_state", (B, "~", B, "scheduled", "0"), "mpqueue_jobs_name_id"),
        ("browse_span_name", (B, "~", B), "mpqueue_jobs_name_id"),
        ("browse_span_state", ("scheduled", "~", "scheduled"), "mpqueue_jobs_state_id"),
    ],
)
def test_a_page_walks_an_index_back_from_its_cursor(pg_url, store, statement, params, index):
    # A few old jobs of one task, scheduled, then many newer ones: a walk of the primary
    # key would read all of those before it found the few
    add(store, *(record(B, run_at_ms=now_ms() + 3_600_000) for _ in range(2_000)))
    add(store, *(record(A) for _ in range(20_000)))
    with admin(pg_url) as conn:
        conn.execute("ANALYZE mpqueue_jobs")
        (row,) = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + store.sql[statement], (*params, 21)
        ).fetchall()
    plan = row[0] if isinstance(row[0], list) else json.loads(row[0])
    read = _scans(plan[0]["Plan"])
    walks = [n for n in read if n.get("Index Name") == index and "Index Cond" in n]
    assert walks, [(n["Node Type"], n.get("Index Name")) for n in read]
    # the walk stops at the page; the rows are then read by id, one each
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in read) <= 2 * 21, read


def test_an_older_schema_gains_previews_and_the_page_indexes(pg_url):
    """Migration 14 on a store written before it (version 13): its jobs read as jobs
    without previews, list and page as before, and new jobs keep theirs."""
    names = schema_at(pg_url, 13)
    old = record(A)
    with admin(pg_url) as conn:
        insert_ready(conn, names, old)
    store = PostgresStore(pg_url)
    try:
        got = store.get(old.id)
        assert got.preview is None and got.result_preview is None
        new = record(A)
        new.preview = "1, 2"
        add(store, new)
        assert [(r.id, r.preview) for r in store.browse().jobs] == [
            (new.id, "1, 2"),
            (old.id, None),
        ]
        with admin(pg_url) as conn:
            indexes = {
                r[0]
                for r in conn.execute(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'mpqueue_jobs'"
                )
            }
        assert {"mpqueue_jobs_state_id", "mpqueue_jobs_name_id"} <= indexes
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_a_page_by_state_and_queue_reads_a_bounded_span(store):
    """Rare matches of a second filter: a page reads at most BROWSE_SCAN_MAX entries of
    the lead's index and hands back a cursor to go on from, whatever the store holds."""
    from mpqueue.records import JobState
    from mpqueue.store.base import BROWSE_SCAN_MAX

    (rare,) = add(store, record(A, queue="rare"))
    add(store, *(record(A) for _ in range(BROWSE_SCAN_MAX + 500)))
    # (what each statement reads of the index: the EXPLAIN test above)
    page = store.browse(state=JobState.READY, queue="rare", limit=10)
    assert page.jobs == [] and page.next is not None  # the budget spent: go on from here
    found = []
    while page.next is not None and not found:
        page = store.browse(state=JobState.READY, queue="rare", before=page.next, limit=10)
        found += [job.id for job in page.jobs]
    assert found == [rare]
