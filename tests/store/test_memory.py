"""The ``memory://`` store's own rules: sharing by name, copies, refused by servers and
the command line; and proof that the contract suite really runs on it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mpqueue import ConfigError, Queue
from mpqueue.records import JobState
from mpqueue.serve.settings import ServeSettings

from ..support.helpers import run_cli


def add(a: int, b: int) -> int:
    return a + b


# ---- the memory store ---------------------------------------------------------------------


def test_handles_on_one_memory_name_share_a_store(tmp_path):
    name = f"memory://{tmp_path.name}"
    with Queue(name) as first, Queue(name) as second:
        job = first.task(add).delay(1, 1)
        assert second.run_pending() == 1
        assert first.get(job.id).result(timeout=0) == 2
    with Queue(name) as after:  # the last handle closed: the store went with it
        assert after.stats()["total"] == 0


def test_plain_memory_is_private_to_its_queue():
    with Queue("memory://") as first, Queue("memory://") as second:
        first.task(add).delay(1, 1)
        assert second.stats()["total"] == 0 and second.run_pending() == 0
        assert first.run_pending() == 1


def test_the_memory_store_keeps_copies():
    with Queue("memory://") as queue:
        job = queue.task(add).delay(1, 1)
        job.record.name = "changed"  # the record add() was given
        got = queue.store.get(job.id)
        got.payload = b""
        (listed,) = queue.store.list()
        listed.state = JobState.DEAD
        stored = queue.store.get(job.id)
        assert stored.name == f"{__name__}.add" and stored.payload
        assert stored.state is JobState.READY


def test_memory_has_no_legacy_mode():
    with pytest.raises(ConfigError, match="mode 'legacy' exists only for LMDB"):
        Queue("memory://", mode="legacy")


def test_servers_and_the_command_line_refuse_a_memory_store(tmp_path):
    with pytest.raises(ConfigError, match="one process's memory"):
        ServeSettings(path="memory://jobs", workers=1).validate()
    for args in (("serve", "--until-empty"), ("list",), ("stats",)):
        proc = run_cli("--path", "memory://jobs", *args, cwd=tmp_path)
        assert proc.returncode == 1, proc
        (line,) = proc.stderr.splitlines()
        assert line.startswith("Error: ") and "run_pending" in line


# ---- the contract suite really runs on the memory store ------------------------------------

_ROOT = Path(__file__).resolve().parents[2]
_CONTRACT = "tests/store/test_contract.py"


def _pytest(*args: str, patch: str = "") -> subprocess.CompletedProcess[str]:
    """pytest in a new process, after ``patch`` (Python source) has run there."""
    code = f"import sys, pytest\n{patch}\nsys.exit(pytest.main({list(args)!r}))"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=_ROOT, capture_output=True, text=True, timeout=110
    )


@pytest.mark.timeout(120)
def test_every_contract_test_runs_on_the_memory_store():
    proc = _pytest("-q", "--collect-only", "-p", "no:cacheprovider", _CONTRACT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ids = [line for line in proc.stdout.splitlines() if line.startswith(_CONTRACT + "::")]
    tests = {i.split("::")[1].split("[")[0] for i in ids}
    on_memory = {i.split("::")[1].split("[")[0] for i in ids if "memory" in i}
    assert len(tests) > 20 and on_memory == tests


# Wrong memory stores, each of which a contract test must catch.
MUTANTS = {
    "test_claim_is_priority_then_fifo": """
from mpqueue.records import JobState
from mpqueue.store.memory import MemoryStore
right = MemoryStore._entry
def lowest_priority_first(self, rec):
    found = right(self, rec)
    if found is None or rec.state is not JobState.READY:
        return found
    index, entry = found
    return index, (-entry[0], *entry[1:])
MemoryStore._entry = lowest_priority_first
""",
    "test_late_or_foreign_outcomes_change_nothing": """
import dataclasses
from mpqueue.store.memory import MemoryStore
right = MemoryStore._finish_one
def any_holder(self, outcome, now):
    claim = self._db.claims.get(outcome.job_id)
    if claim is not None:
        outcome = dataclasses.replace(outcome, server_id=claim.server_id)
    return right(self, outcome, now)
MemoryStore._finish_one = any_holder
""",
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("catcher", sorted(MUTANTS))
def test_the_contract_suite_catches_a_wrong_memory_store(catcher):
    proc = _pytest(
        "-q", "-p", "no:cacheprovider", "-k", "memory", _CONTRACT, patch=MUTANTS[catcher]
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"FAILED {_CONTRACT}::{catcher}[memory]" in proc.stdout, proc.stdout
