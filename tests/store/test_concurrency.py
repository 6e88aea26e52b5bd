"""Several producer and claimer processes on one store: every job is claimed exactly once."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

from mpqueue import Queue
from mpqueue.records import Outcome, now_ms

from ..support.helpers import join_cleanly, read_lines, started


def produce(path: str, mode: str, count: int, out: str) -> None:
    ids = []
    with Queue(path, mode=mode) as queue:
        noop = queue.task_by_name("tests.support.tasks.noop")
        singles = count // 10
        for i in range(singles):  # some one-job transactions between the batches
            ids.append(noop.delay(os.getpid(), i).id)
        left = count - singles
        for start in range(0, left, 100):
            batch = noop.map([(os.getpid(), i) for i in range(start, min(start + 100, left))])
            ids.extend(j.id for j in batch)
    Path(out).write_text("\n".join(ids))


def claim_until_done(path: str, mode: str, worker: str, producers_done, out: str) -> None:
    got: list[str] = []
    with Queue(path, mode=mode) as queue:
        store = queue.store
        while True:
            finished = producers_done.is_set()  # read before the claim: no job added after
            now = now_ms()
            store.promote_due(now)
            claimed = store.claim(worker, 64, now)
            if claimed:
                got.extend(r.id for r in claimed)
                if len(got) % 2:  # ack some of them, so claims and finishes interleave
                    store.finish([Outcome.done(r.id, worker, b"\x01N.") for r in claimed], now)
            elif finished:
                break
    Path(out).write_text("\n".join(got))


def _run(tmp_path: Path, mode: str, producers: int, per_producer: int, claimers: int) -> None:
    ctx = mp.get_context("spawn")
    path = str(tmp_path / "store")
    with Queue(path, mode=mode) as queue:  # create the store before the race
        queue.stats()
    done_event = ctx.Event()
    claim_files = [tmp_path / f"claimed-{i}.txt" for i in range(claimers)]
    made_files = [tmp_path / f"made-{i}.txt" for i in range(producers)]
    claim_procs = [
        ctx.Process(target=claim_until_done, args=(path, mode, f"claimer-{i}", done_event, str(f)))
        for i, f in enumerate(claim_files)
    ]
    prod_procs = [
        ctx.Process(target=produce, args=(path, mode, per_producer, str(f))) for f in made_files
    ]
    procs = claim_procs + prod_procs
    with started(procs):
        join_cleanly(prod_procs, 100, "producer")
        done_event.set()
        join_cleanly(claim_procs, 100, "claimer")

    made = read_lines(made_files)
    claimed = read_lines(claim_files)
    total = producers * per_producer
    assert len(made) == len(set(made)) == total
    assert len(claimed) == len(set(claimed)), "a job was handed out twice"
    assert set(claimed) == set(made), "a job was never claimed"
    with Queue(path, mode=mode) as queue:
        stats = queue.stats()
        assert stats["ready"] == stats["scheduled"] == 0
        assert stats["processing"] + stats["done"] == stats["total"] == total


@pytest.mark.timeout(120)
def test_producers_and_claimers_race_optimized(tmp_path):
    _run(tmp_path, "optimized", producers=4, per_producer=5000, claimers=2)


@pytest.mark.timeout(60)
def test_producers_and_claimers_race_legacy(tmp_path):
    # legacy claims one job per poll and reads every pending job: keep it small
    _run(tmp_path, "legacy", producers=4, per_producer=100, claimers=2)
