"""Test helpers: waiting on a condition, and claiming/finishing jobs without a server."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mpqueue.queues import Selection
from mpqueue.records import ErrorInfo, JobRecord, Outcome, now_ms
from mpqueue.serializer import dump_result
from mpqueue.store import Store


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10.0, what: str = "", interval: float = 0.005
) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not within {timeout} s: {what or predicate!r}")
        time.sleep(interval)


@contextmanager
def started(procs: Sequence[Any]) -> Iterator[None]:
    """Start these processes; whatever is still alive at the end is killed."""
    try:
        for proc in procs:
            proc.start()
        yield
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join()


def join_cleanly(procs: Sequence[Any], timeout: float, what: str) -> None:
    for proc in procs:
        proc.join(timeout)
        assert proc.exitcode == 0, f"{what} exited with {proc.exitcode}"


def read_lines(files: Sequence[Path]) -> list[str]:
    """The non-empty lines of these files, in order (ids written by child processes)."""
    return [line for f in files for line in f.read_text().split("\n") if line]


def claim_all(
    store: Store, worker: str = "w1", now: int | None = None, limit: int = 32
) -> list[JobRecord]:
    """Promote what is due at ``now`` and claim every ready job (legacy claims one per poll)."""
    now = now_ms() if now is None else now
    store.promote_due(now)
    out: list[JobRecord] = []
    while True:
        got = store.claim(worker, limit, now)
        if not got:
            return out
        out.extend(got)


def claim_one(store: Store, worker: str = "w1", now: int | None = None) -> JobRecord | None:
    now = now_ms() if now is None else now
    store.promote_due(now)
    got = store.claim(worker, 1, now)
    assert len(got) <= 1
    return got[0] if got else None


def done(store: Store, job_id: str, value: Any, worker: str = "w1", now: int | None = None) -> bool:
    now = now_ms() if now is None else now
    return store.finish([Outcome.done(job_id, worker, dump_result(value))], now)[0]


def error(message: str = "boom", attempt: int = 0) -> ErrorInfo:
    return ErrorInfo("RuntimeError", message, "Traceback ...", attempt=attempt)


def failed(
    store: Store,
    job_id: str,
    message: str = "boom",
    worker: str = "w1",
    now: int | None = None,
    **kwargs: Any,
) -> bool:
    now = now_ms() if now is None else now
    return store.finish([Outcome.failed(job_id, worker, error(message), **kwargs)], now)[0]


def snapshot(queue: Any) -> tuple[dict[str, int], list[tuple[str, str, str, int]]]:
    """What a caller can see of the store: counts and every job's id/name/state/attempts."""
    jobs = [(j.id, j.name, j.state, j.attempts) for j in queue.list()]
    return queue.stats(), sorted(jobs)


def run_cli(*args: str | bytes, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m mpqueue ARGS`` in a new process (bytes args reach argv as they are)."""
    env = {k: v for k, v in os.environ.items() if k != "MPQUEUE_PATH"}
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run(
        [sys.executable, "-m", "mpqueue", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
    )


def _cli_in_process(args: list[str]) -> list[Any]:
    """The CLI in this process: [exit code, stdout, stderr]."""
    import io

    from mpqueue.cli import cli

    out, err = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = out, err
    code = 0
    try:
        cli.main(args, prog_name="mpqueue")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    return [code, out.getvalue(), err.getvalue()]


def run_cli_as_nobody(*args: str) -> tuple[int, str, str]:
    """The CLI run by another local user (uid 65534, see second_user.py): (exit code,
    stdout, stderr). Forked, not exec'd, so the modules it needs are imported here."""
    import mpqueue.cli
    import mpqueue.store.lmdb.legacy
    import mpqueue.store.lmdb.store  # noqa: F401

    from .second_user import as_nobody

    code, out, err = as_nobody(_cli_in_process, list(args))
    return code, out, err


class Plant:
    """A value whose unpickling runs ``touch <path>``: the file is the proof that code
    from a stored pickle ran (what a user with write access to a store could plant)."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        import os

        return (os.system, (f"touch {self.path}",))


_BLOCKER = """\
import os
open(os.environ["MARKER"], "w").close()
raise ImportError("{package} blocked by the test")
"""


def mpqueue_without(
    package: str, tmp_path: Path, *args: str
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """``python -m mpqueue ARGS`` where importing ``package`` fails and leaves a marker (a
    package of that name ahead of site-packages); (the run, whether it was imported)."""
    root = Path(__file__).resolve().parents[2]
    blocked = tmp_path / "blocked"
    (blocked / package).mkdir(parents=True, exist_ok=True)
    (blocked / package / "__init__.py").write_text(_BLOCKER.format(package=package))
    marker = tmp_path / "imported"
    marker.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MPQUEUE_PATH"}
    env |= {"MARKER": str(marker), "PYTHONPATH": os.pathsep.join([str(blocked), str(root)])}
    run = subprocess.run(
        [sys.executable, "-m", "mpqueue", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return run, marker.exists()


def claim_of(
    store: Store,
    limit: int,
    *queues: str,
    weights: tuple[int, ...] | None = None,
    worker: str = "w1",
) -> list[JobRecord]:
    """One claim of ``limit`` jobs of ``queues`` (none: every queue), after promoting
    what is due; legacy, which claims one job a poll, polls ``limit`` times."""
    selection = Selection(tuple(queues), weights) if queues else None
    store.promote_due(now_ms())
    if store.mode != "legacy":
        return store.claim(worker, limit, now_ms(), selection)
    got: list[JobRecord] = []
    while len(got) < limit and (one := store.claim(worker, 1, now_ms(), selection)):
        got += one
    return got


def ids(records: list[JobRecord]) -> list[str]:
    return [r.id for r in records]
