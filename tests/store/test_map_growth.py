"""A store that starts with a 1 MiB map grows by itself, and a process that opened it
before the growth keeps working (it adopts the new size on MapResizedError)."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from mpqueue import Queue

SMALL = 1 << 20
JOBS = 100_000


def open_then_wait(path: str, first: str, opened, grown, out: str) -> None:
    with Queue(path, map_size=SMALL) as queue:
        noop = queue.task_by_name("tests.support.tasks.noop")
        before = queue.stats()["total"]
        env = queue.store.env.shared.env
        map_before = env.info()["map_size"]
        opened.set()
        if not grown.wait(100):
            raise SystemExit(3)
        report = {"before": before}
        if first == "write":
            report["added"] = noop.delay("from the child").id
            report["total"] = queue.stats()["total"]
        else:
            report["total"] = queue.stats()["total"]
            report["listed"] = len(queue.list(limit=5))
            report["added"] = noop.delay("from the child").id
        report["map_before"], report["map_after"] = map_before, env.info()["map_size"]
        Path(out).write_text(json.dumps(report))


@pytest.mark.timeout(120)
def test_map_grows_and_older_openers_adopt_it(tmp_path):
    path = str(tmp_path / "store")
    ctx = mp.get_context("spawn")
    grown = ctx.Event()
    children = []
    for first in ("read", "write"):
        opened = ctx.Event()
        out = tmp_path / f"{first}.json"
        proc = ctx.Process(target=open_then_wait, args=(path, first, opened, grown, str(out)))
        children.append((proc, out))
        proc.start()
        assert opened.wait(60), "child did not open the store"
    try:
        with Queue(path, map_size=SMALL) as queue:
            noop = queue.task_by_name("tests.support.tasks.noop")
            for start in range(0, JOBS, 2000):
                jobs = noop.map([(i,) for i in range(start, start + 2000)])
                assert len(jobs) == 2000
            env = queue.store.env.shared.env
            assert env.info()["map_size"] > 16 * SMALL
            assert queue.stats()["total"] == queue.stats()["ready"] == JOBS
            grown.set()
            for proc, _ in children:
                proc.join(100)
                assert proc.exitcode == 0
            reports = [json.loads(out.read_text()) for _, out in children]
            assert all(r["before"] == 0 for r in reports)
            # each child adopted the grown map (MapResizedError -> set_mapsize(0))
            assert all(r["map_before"] == SMALL < r["map_after"] for r in reports)
            assert all(r["total"] >= JOBS for r in reports)
            assert reports[0]["listed"] == 5
            assert queue.stats()["total"] == JOBS + 2
            for r in reports:
                assert queue.get(r["added"]).state == "ready"
    finally:
        grown.set()
        for proc, _ in children:
            if proc.is_alive():
                proc.kill()
                proc.join()
