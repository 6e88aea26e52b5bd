"""Serving from a script: workers must not re-run the parent's ``__main__``.

multiprocessing re-imports the main script in every spawned or forkserver child by
default; a script without an ``if __name__ == "__main__"`` guard would then enqueue its
jobs again (and start a server) in every worker, and ``python -`` would fail outright.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
from mpqueue import Queue
from mpqueue.serve.settings import ServeSettings
from mpqueue.serve.coordinator import serve

queue = Queue(sys.argv[1] if len(sys.argv) > 1 else {path!r})

@queue.task
def double(x):
    return 2 * x

jobs = double.map([(i,) for i in range(10)])
code = serve(ServeSettings(path=queue.path, workers=2, until_empty=True, progress=False))
print("results", sum(job.result(timeout=5) for job in jobs), "total", queue.stats()["total"])
sys.exit(code)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["file", "stdin"])
def test_unguarded_script_runs_its_jobs_once(tmp_path: Path, how: str) -> None:
    store = str(tmp_path / "store")
    source = SCRIPT.format(path=store)
    if how == "file":
        script = tmp_path / "unguarded.py"
        script.write_text(source)
        run = subprocess.run(
            [sys.executable, str(script), store], capture_output=True, text=True, timeout=50
        )
    else:
        run = subprocess.run(
            [sys.executable, "-"], input=source, capture_output=True, text=True, timeout=50
        )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "results 90 total 10" in run.stdout, (run.stdout, run.stderr[-3000:])
