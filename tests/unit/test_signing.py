"""Signed payloads (issue 10, item 3): a server with a secret runs only jobs signed
with it, and refuses the others before anything of them is unpickled; on every store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mpqueue import Queue
from mpqueue.signing import sign, verify

from ..support.helpers import Plant
from ..support.pg_helpers import pg_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["lmdb", "postgres"])
def location(request, tmp_path) -> str:
    if request.param == "lmdb":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("pg_url"))


def _serve(location: str, secret: str | None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("MPQUEUE_SECRET", None)
    if secret is not None:
        env["MPQUEUE_SECRET"] = secret
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mpqueue",
            "--path",
            location,
            "serve",
            "--until-empty",
            "--workers",
            "1",
            "--no-progress",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


@pytest.mark.timeout(120)
def test_a_server_with_a_secret_runs_only_jobs_signed_with_it(location, tmp_path, monkeypatch):
    monkeypatch.delenv("MPQUEUE_SECRET", raising=False)
    proof = tmp_path / "payload-loaded"
    with (
        Queue(location, secret="team-secret") as signed,
        Queue(location) as unsigned,
        Queue(location, secret="wrong") as forged,
    ):
        good = signed.task_by_name("tests.support.tasks.add").delay(1, 2)
        plain = unsigned.task_by_name("tests.support.tasks.noop").delay(Plant(str(proof)))
        wrong = forged.task_by_name("tests.support.tasks.noop").delay(Plant(str(proof)))
        lam = unsigned.submit(lambda: 1)  # a pickled callable, unsigned
    result = _serve(location, "team-secret")
    assert result.returncode == 1, result.stderr  # 1: jobs ended dead
    assert not proof.exists(), "a payload of an unsigned or forged job was unpickled"
    with Queue(location) as queue:
        assert queue.get(good.id).result(timeout=5) == 3
        for job in (plain, wrong, lam):
            rec = queue.get(job.id)
            assert rec.state == "dead" and rec.attempts == 1, rec.errors
            assert rec.error.type == "BadSignature" and "bad signature" in rec.error.message


@pytest.mark.timeout(120)
def test_a_server_without_a_secret_ignores_signatures(location, monkeypatch):
    monkeypatch.delenv("MPQUEUE_SECRET", raising=False)
    with Queue(location, secret="team-secret") as signed, Queue(location) as plain:
        a = signed.task_by_name("tests.support.tasks.add").delay(1, 2)
        b = plain.task_by_name("tests.support.tasks.add").delay(2, 2)
    assert _serve(location, None).returncode == 0
    with Queue(location) as queue:
        assert queue.get(a.id).result(timeout=5) == 3
        assert queue.get(b.id).result(timeout=5) == 4


def test_the_secret_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MPQUEUE_SECRET", "from-env")
    with Queue(str(tmp_path / "store")) as queue:
        rec = queue.task_by_name("tests.support.tasks.add").delay(1, 2).record
        assert verify(b"from-env", rec.name, rec.payload, rec.func, rec.signature)
        assert queue.store.get(rec.id).signature == rec.signature  # stored as written


def test_signatures_bind_each_part():
    base = sign(b"k", "tests.support.tasks.add", b"payload", None)
    assert verify(b"k", "tests.support.tasks.add", b"payload", None, base)
    for other in (
        sign(b"k2", "tests.support.tasks.add", b"payload", None),
        sign(b"k", "tests.support.tasks.ad", b"dpayload", None),  # moved boundary
        sign(b"k", "tests.support.tasks.add", b"payload", b"f"),
        sign(b"k", "tests.support.tasks.add", b"paylo4d", None),
    ):
        assert other != base
    assert not verify(b"k", "tests.support.tasks.add", b"payload", None, None)
