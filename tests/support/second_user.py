"""Playing another local user: run a function in a forked child that drops to uid and
gid 65534 ("nobody") first. CI runs as root; elsewhere these tests need root too.

The child is forked (not exec'd): the interpreter may live where nobody cannot read
(/root/.pyenv), and the function needs only sockets and files, no store handle (an
LMDB environment must never cross a fork; the attacker opens none).
"""

from __future__ import annotations

import json
import os
import select
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

NOBODY = 65534


def require_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("second-uid tests need root (CI runs as root)")
        pytest.skip("second-uid tests need root to drop to uid 65534")


@contextmanager
def held_as_nobody(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Iterator[Any]:
    """Run ``fn(*args)`` as uid/gid 65534 in a forked child and yield its (JSON-able)
    result while the child stays alive, holding whatever ``fn`` opened (sockets it
    bound, say); the child exits when the block ends. A failure in ``fn`` raises
    AssertionError with the child's traceback."""
    require_root()
    reply_r, reply_w = os.pipe()
    hold_r, hold_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(reply_r)
        os.close(hold_w)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            reply = {"ok": fn(*args)}
        except BaseException:
            reply = {"error": traceback.format_exc()}
        os.write(reply_w, json.dumps(reply).encode() + b"\n")
        os.read(hold_r, 1)  # until the parent closes its end
        os._exit(0)
    os.close(reply_w)
    os.close(hold_r)
    try:
        reply = json.loads(_read_line(reply_r, timeout, pid) or '{"error": "no reply"}')
        if "error" in reply:
            raise AssertionError(f"the uid-{NOBODY} child failed:\n{reply['error']}")
        yield reply["ok"]
    finally:
        os.close(hold_w)
        os.close(reply_r)
        os.waitpid(pid, 0)


def as_nobody(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """``fn(*args)`` run as uid/gid 65534; returns its result (see held_as_nobody)."""
    with held_as_nobody(fn, *args, timeout=timeout) as result:
        return result


def _read_line(fd: int, timeout: float, pid: int) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, 9)
            raise AssertionError(f"the uid-{NOBODY} child ran over {timeout} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        data += chunk
    return data.decode()


@pytest.fixture
def public_dir() -> Iterator[str]:
    """A directory every user can reach, to hold a store other users can at least
    see (pytest's own tmp dirs are 0700, which would hide it from them outright)."""
    path = tempfile.mkdtemp(prefix="mpqueue-public-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
