"""Named queues with real servers: ``serve --queues`` runs only the jobs of its queues,
in its order of preference, on LMDB and PostgreSQL; hand-off gives an idle server
only jobs of the queues it serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpqueue import Queue

from ..support.helpers import wait_until
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import location, read_runs, servers  # noqa: F401
from .test_handoff import offers


@pytest.mark.timeout(90)
def test_a_server_runs_its_queues_only_in_order_of_preference(
    location: str, tmp_path: Path, servers
) -> None:
    marker = str(tmp_path / "markers.log")
    with Queue(location) as queue:
        quick = queue.task_by_name("tests.support.serve_tasks.quick")
        slow = [quick.options(queue="slow").delay(marker, f"slow-{i}") for i in range(5)]
        plain = [quick.delay(marker, f"default-{i}") for i in range(3)]
        fast = [quick.options(queue="fast").delay(marker, f"fast-{i}") for i in range(4)]
        # One worker, so the starts are in claim order; jobs of "default" came first
        # and "slow" ones rank higher, yet "fast" is served first and "slow" never.
        server = servers(
            location, "--workers", "1", "--queues", "fast,default", "--until-empty", "--no-progress"
        )
        assert server.wait(60) == 0, server.log()
        runs = read_runs(Path(marker))
        assert sorted(runs) == sorted(
            [f"fast-{i}" for i in range(4)] + [f"default-{i}" for i in range(3)]
        )
        last_fast = max(runs[f"fast-{i}"][0].start for i in range(4))
        first_default = min(runs[f"default-{i}"][0].start for i in range(3))
        assert last_fast < first_default
        assert all(queue.get(j.id).state == "done" for j in fast + plain)
        assert {queue.get(j.id).state for j in slow} == {"ready"}
        assert queue.gauges().queues["slow"] == {"ready": 5, "processing": 0}


@pytest.mark.timeout(60)
def test_hand_off_gives_a_server_only_jobs_of_its_queues(tmp_path: Path, servers) -> None:
    path = str(tmp_path / "store")
    marker = str(tmp_path / "markers.log")
    with Queue(path) as queue:
        quick = queue.task_by_name("tests.support.serve_tasks.quick")
        server = servers(path, "--workers", "1", "--queues", "fast")
        (child,) = server.wait_ready(queue, 1)
        wait_until(
            lambda: offers(queue).get(_server_id(queue, server.pid)) == [child], 20, "an offer"
        )
        other = quick.options(queue="slow").delay(marker, "slow")
        assert other.state == "ready"  # not handed to a server that does not serve it
        assert offers(queue)[_server_id(queue, server.pid)] == [child]  # the offer stands
        mine = quick.options(queue="fast").delay(marker, "fast")
        assert mine.state == "processing"  # handed to the idle child in the enqueue
        assert mine.result(timeout=20) == "fast"
        assert queue.get(other.id).state == "ready"


def _server_id(queue: Queue, pid: int) -> str:
    (server_id,) = [sid for sid, info in queue.store.servers().items() if info.get("pid") == pid]
    return server_id


@pytest.mark.timeout(60)
def test_the_registry_says_which_queues_a_server_serves(tmp_path: Path, servers) -> None:
    path = str(tmp_path / "store")
    with Queue(path) as queue:
        picky = servers(path, "--workers", "1", "--queues", "fast,default")
        every = servers(path, "--workers", "1")
        picky.wait_ready(queue, 1)
        every.wait_ready(queue, 1)
        assert list(picky.registration(queue)["queues"]) == ["fast", "default"]
        assert "queues" not in every.registration(queue)
