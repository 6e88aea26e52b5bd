"""The depth history (issue 14): a real server samples the store's depth by state into
the history while it runs, and ``mpqueue stats --history`` prints it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mpqueue import Queue
from mpqueue.records import now_ms

from ..support.helpers import run_cli, wait_until
from ..support.pg_helpers import pg_url  # noqa: F401
from ..support.serve_helpers import ROOT

HOLD = "tests.support.executor_tasks.hold_until"  # runs until its release file exists
H = 3_600_000

# A real server, with the sampling interval made short (a ServeSettings field; the CLI
# keeps the default). It serves until the store is empty.
SCRIPT = """
import sys
from mpqueue.serve.coordinator import serve
from mpqueue.serve.settings import ServeSettings

settings = ServeSettings(
    path=sys.argv[1], workers=1, until_empty=True, progress=False, history_every_s=0.1
)
sys.exit(serve(settings))
"""


@pytest.fixture(params=["lmdb", "postgres"])
def location(request, tmp_path):
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "store")


def _newest(queue: Queue) -> tuple[int, dict[str, int]] | None:
    points = queue.history(H)
    return points[-1] if points else None


@pytest.mark.timeout(90)
def test_a_server_samples_the_depth_while_it_runs(location, tmp_path):
    release = tmp_path / "release"
    with Queue(location) as queue:
        assert queue.history(H) == []
        queue.task_by_name(HOLD).delay(str(tmp_path / "marker"), "h", str(release))
        began = now_ms()
        server = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, location],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            # A sample while the job runs; then a later one (it overwrites the same
            # 10 s slot, or fills the next): at least two samples were written.
            first = wait_until(
                lambda: (p := _newest(queue)) and p[1]["processing"] == 1 and p,
                timeout=30,
                what="a sample with the held job processing",
            )
            assert first[0] >= began and first[1]["total"] == 1 and first[1]["ready"] == 0
            wait_until(lambda: _newest(queue)[0] > first[0], timeout=10, what="a second sample")
            shown = run_cli("--path", location, "stats", "--history", "1h", "--json", cwd=tmp_path)
            assert shown.returncode == 0, shown.stderr
            points = json.loads(shown.stdout)
            assert points and all(p["counts"]["total"] == 1 for p in points)
            assert [p["at_ms"] for p in points] == sorted(p["at_ms"] for p in points)
            table = run_cli("--path", location, "stats", "--history", "30m", cwd=tmp_path)
            assert table.stdout.splitlines()[0].split()[:3] == ["time", "ready", "scheduled"], (
                table.stdout,
                table.stderr,
                queue.history(H),
            )
        finally:
            release.touch()
            out, _ = server.communicate(timeout=30)
        assert server.returncode == 0, out.decode(errors="replace")[-3000:]


def test_stats_history_refuses_a_bad_duration_in_one_line(tmp_path):
    store = str(tmp_path / "store")
    with Queue(store) as queue:
        queue.store.record_history(now_ms(), queue.stats())
        before = queue.history(H)
    for bad in ("1x", "0m", "45d"):
        shown = run_cli("--path", store, "stats", "--history", bad, cwd=tmp_path)
        assert shown.returncode == 2 and shown.stdout == ""
        assert len(shown.stderr.strip().splitlines()) == 1 and "--history" in shown.stderr
    with Queue(store) as queue:
        assert queue.history(H) == before
    empty = run_cli("--path", str(tmp_path / "other"), "stats", "--history", "1h", cwd=tmp_path)
    assert empty.returncode == 0 and empty.stdout.startswith("no history")
