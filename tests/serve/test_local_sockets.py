"""Another local user cannot reach, crash or squat a server's or a child's sockets
(issue 10, item 1). The attacker runs as uid 65534 in a forked child
(tests/second_user.py) and does what the review did: finds mpqueue's sockets in the
world-readable /proc/net/unix, floods them with bytes that are not datagrams mpqueue
sends, and binds the addresses of the next pids before a child or a server needs them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import time

import pytest

from mpqueue import Queue

from ..support.second_user import as_nobody, held_as_nobody, public_dir  # noqa: F401
from ..support.serve_helpers import Env, env, servers, wait_until  # noqa: F401

BAD_DATAGRAMS = (b"\xff", b"x", b"\x00" * 64, b"0" * 31 + b"\xff")


def _old_prefix(store_path: str) -> str:
    """The abstract-socket prefix these sockets had before: derivable from the path."""
    digest = hashlib.sha1(os.path.realpath(store_path).encode()).hexdigest()[:16]
    return f"\0mpqueue-{digest}-"


def _mpqueue_sockets(store_path: str) -> list[str]:
    """This store's sockets as /proc/net/unix lists them (abstract names as '\0...',
    paths as paths). Only this store's: other tests' servers are no target."""
    found = []
    with open("/proc/net/unix", encoding="utf-8", errors="replace") as fh:
        for line in fh.read().splitlines()[1:]:
            fields = line.split()
            if len(fields) < 8:
                continue
            name = fields[7]
            name = "\0" + name[1:] if name.startswith("@") else name
            if name.startswith((_old_prefix(store_path), store_path)):
                found.append(name)
    return found


def flood(store_path: str, seconds: float) -> dict[str, int]:
    """Send bad datagrams to every mpqueue socket in sight for ``seconds``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sent = refused = 0
    targets = _mpqueue_sockets(store_path)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for address in targets:
            for datagram in BAD_DATAGRAMS:
                try:
                    sock.sendto(datagram, address)
                    sent += 1
                except OSError:
                    refused += 1
        time.sleep(0.002)
    return {"targets": len(targets), "sent": sent, "refused": refused}


def squat(store_path: str, pids_ahead: int) -> dict[str, int]:
    """Bind the addresses the next pids would use: abstract names with the prefix seen
    in /proc/net/unix (or derived from the store path), and files in the wake dir."""
    prefixes = {
        a.rsplit("-", 1)[0] + "-" for a in _mpqueue_sockets(store_path) if a.startswith("\0")
    } | {_old_prefix(store_path)}
    first = os.getpid()
    held, refused = [], 0
    for pid in range(first, first + pids_ahead):
        for address in [p + str(pid) for p in prefixes] + [
            os.path.join(store_path, "wake", name) for name in (str(pid), f"c{pid}")
        ]:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.bind(address)
                held.append(sock)  # kept open: the address stays taken
            except OSError:
                refused += 1
                sock.close()
    globals()["_held"] = held  # alive until the child exits
    return {"held": len(held), "refused": refused}


@pytest.fixture
def shared_env(public_dir, tmp_path):
    """An Env whose store sits where other users can reach its path."""
    env = Env(tmp_path)
    env.queue.close()
    env.path = os.path.join(public_dir, "store")
    env.queue = Queue(env.path)
    try:
        yield env
    finally:
        env.queue.close()


@pytest.mark.timeout(90)
def test_flood_while_jobs_are_handed_off_costs_no_job(shared_env, servers):
    """The flood and the producers at the same time, the review's 12 s attack cut to
    3 s: before, it crashed children hundreds of times and dead-lettered jobs."""
    env = shared_env
    server = servers(env.path, "--workers", "2")
    children = sorted(server.wait_ready(env.queue, 2))
    quick = env.task("quick")
    wait_until(
        lambda: (
            (j := quick.delay(str(env.marker), "warm"))
            and env.record(j).state in ("processing", "done")
        ),
        10,
        "warm-up",
    )
    pid = os.fork()
    if pid == 0:  # the producer, concurrent with the flood below
        try:
            q = Queue(env.path)
            task = q.task_by_name("tests.support.serve_tasks.quick")
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                task.delay(str(env.marker), "p")
                time.sleep(0.005)
            q.close()
        finally:
            os._exit(0)
    result = as_nobody(flood, env.path, 3.0)
    os.waitpid(pid, 0)
    wait_until(lambda: env.stats()["done"] == env.stats()["total"], 30, "all done")
    assert env.stats()["dead"] == 0
    assert sorted(server.children(env.queue)) == children, "a child crashed"
    assert result["targets"] >= 3, result  # the server's socket and its two children's
    assert result["sent"] == 0, result  # not one datagram of another user's got in
    mode = os.stat(os.path.join(env.path, "wake")).st_mode & 0o777
    assert mode == 0o700, oct(mode)


@pytest.mark.timeout(90)
def test_squatted_addresses_stop_neither_a_replacement_child_nor_a_server(shared_env, servers):
    env = shared_env
    first = servers(env.path, "--workers", "2")
    children = first.wait_ready(env.queue, 2)
    with held_as_nobody(squat, env.path, 400) as result:
        for child in children:  # replacements get the next pids, which are taken
            os.kill(child, signal.SIGKILL)
        wait_until(
            lambda: len(set(first.children(env.queue)) - set(children)) == 2,
            30,
            "two replacement children",
        )
        second = servers(env.path, "--workers", "1")  # a server on a squatted pid
        second.wait_ready(env.queue, 1)
        jobs = [env.task("quick").delay(str(env.marker), f"j{i}") for i in range(10)]
        wait_until(lambda: all(env.record(j).state == "done" for j in jobs), 30, "done")
        assert first.proc.poll() is None and second.proc.poll() is None
    # The wake dir is private: not one address in it could be taken.
    assert result["refused"] >= 800, result


@pytest.mark.timeout(60)
def test_malformed_datagrams_from_the_owner_are_dropped(env, servers):
    """Even the store owner's own stray bytes (a bug, another tool) only cost a line in
    the log: no child dies, handed jobs still run."""
    server = servers(env.path, "--workers", "2")
    children = sorted(server.wait_ready(env.queue, 2))
    result = flood(env.path, 1.0)
    assert result["sent"] > 0 and result["targets"] >= 3  # a server and two children
    jobs = [env.task("quick").delay(str(env.marker), f"j{i}") for i in range(10)]
    wait_until(lambda: all(env.record(j).state == "done" for j in jobs), 30, "done")
    assert all(env.record(j).attempts == 1 for j in jobs)
    assert sorted(server.children(env.queue)) == children
    assert "malformed hand-off datagram" in server.log()
