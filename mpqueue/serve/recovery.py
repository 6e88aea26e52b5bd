"""Crash recovery: put back the jobs of coordinators that died.

Called by every coordinator at start and on a timer. A coordinator counts as dead
when (on this host) its pid is gone or belongs to a newer process, or (elsewhere)
its heartbeat is older than its lease. Before its jobs are put back, any child it
registered that is somehow still running is killed, with its process group, so no job
runs twice at once. Only a coordinator of this host (and pid namespace) has its
children killed: the pids another host registered name unrelated processes here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psutil

from ..identity import DEFAULT_LEASE_S, Identity, parse, process_matches, server_dead
from ..records import now_ms
from ..store import Store
from .containment import kill_tree

log = logging.getLogger("mpqueue.serve.recovery")

ORPHAN_KILL_WAIT_S = 2.0


def kill_orphans(info: dict[str, Any] | None) -> int:
    """SIGKILL children a dead coordinator left behind (matching start times only)."""
    victims = []
    for pid, started in (info or {}).get("children", ()):
        if process_matches(pid, started):
            try:
                proc = psutil.Process(pid)
                kill_tree(pid, started)  # and what its jobs started
                proc.kill()
                victims.append(proc)
            except psutil.Error:
                continue
    _wait_dead(victims, ORPHAN_KILL_WAIT_S)
    return len(victims)


def _wait_dead(procs: list[psutil.Process], timeout_s: float) -> None:
    """Wait until each process is gone or a zombie (a zombie runs no code).

    Not psutil.wait_procs: these are not our children, so nobody here reaps them, and
    a zombie counts as running there until init reaps it, which in a container can
    take long; the jobs must not wait for that.
    """
    deadline = time.monotonic() + timeout_s
    while procs and time.monotonic() < deadline:
        procs = [p for p in procs if _runs(p)]
        if procs:
            time.sleep(0.005)


def _runs(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def reclaim_dead(
    store: Store, own_server_id: str, *, lease_s: float = DEFAULT_LEASE_S
) -> list[str]:
    """Put back every job held by a dead coordinator; returns the job ids."""
    registry = store.servers()
    holders = {c.server_id for c in store.claims()} | set(registry)
    now = now_ms()
    requeued: list[str] = []
    for server_id in sorted(holders - {own_server_id}):
        info = registry.get(server_id)
        if not server_dead(server_id, info, now, lease_s):
            continue
        killed = kill_orphans(info) if _pids_are_ours(server_id) else 0
        jobs = store.requeue_server(server_id)
        store.unregister_server(server_id)
        requeued.extend(jobs)
        if jobs or killed:
            log.warning(
                "coordinator %s is gone: put back %d job(s), killed %d orphan(s)",
                server_id,
                len(jobs),
                killed,
            )
    return requeued


def _pids_are_ours(server_id: str) -> bool:
    """Whether the pids that ``server_id`` registered are pids of this host's processes."""
    identity = parse(server_id)
    return identity is not None and identity.local


def heartbeat_info(
    identity: Identity,
    children: list[tuple[int, float]],
    lease_s: float = DEFAULT_LEASE_S,
    queues: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """A server's registry entry. ``lease_s`` is its own lease: producers hand jobs to
    its children only while its heartbeat is younger than that. ``queues``: the named
    queues it serves (``serve --queues``), for whoever shows the servers; absent when
    it serves every queue."""
    info = {
        "pid": identity.pid,
        "host": identity.host,
        "heartbeat_ms": now_ms(),
        "children": list(children),
        "monotonic": time.monotonic(),
        "lease_s": lease_s,
    }
    if queues is not None:
        info["queues"] = list(queues)
    return info
