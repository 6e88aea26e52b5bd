"""Who a coordinator is, and whether it is still alive.

A server id names one coordinator process: host, boot, pid namespace, pid and the
process's start time. The start time defeats pid reuse; the boot id tells a reboot;
the pid namespace keeps containers on one host apart.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psutil

START_TIME_TOLERANCE_S = 0.05  # psutil's create_time is rounded to clock ticks
DEFAULT_LEASE_S = 10.0  # a coordinator on another host silent this long is dead
HOST_ID_ENV = "MPQUEUE_HOST_ID"  # overrides the host name (containers sharing one name)


def host_id() -> str:
    return os.environ.get(HOST_ID_ENV) or socket.gethostname()


@lru_cache(maxsize=1)
def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip().replace("-", "")[:12]
    except OSError:
        return f"b{int(psutil.boot_time())}"


@lru_cache(maxsize=1)
def pid_namespace() -> str:
    try:
        link = os.readlink("/proc/self/ns/pid")  # "pid:[4026531836]"
        return link[link.find("[") + 1 : link.rfind("]")]
    except OSError:
        return "0"


@dataclass(frozen=True)
class Identity:
    host: str
    boot: str
    pidns: str
    pid: int
    started_ms: int

    @property
    def server_id(self) -> str:
        return f"{self.host}:{self.boot}:{self.pidns}:{self.pid}:{self.started_ms}"

    @property
    def local(self) -> bool:
        """True when this process can check the pid itself (same host, boot, namespace)."""
        return (self.host, self.boot, self.pidns) == (host_id(), boot_id(), pid_namespace())


def current(pid: int | None = None) -> Identity:
    proc = psutil.Process(pid)
    return Identity(host_id(), boot_id(), pid_namespace(), proc.pid, int(proc.create_time() * 1000))


def parse(server_id: str) -> Identity | None:
    """The identity in a server id, or None if it is not one of ours."""
    parts = server_id.rsplit(":", 4)
    if len(parts) != 5 or not parts[3].isdigit() or not parts[4].isdigit():
        return None
    return Identity(parts[0], parts[1], parts[2], int(parts[3]), int(parts[4]))


def pid_exists(pid: int) -> bool:
    """True if some process has ``pid`` (one syscall: no start-time check, a zombie
    counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def process_matches(pid: int, started_s: float) -> bool:
    """True if ``pid`` is alive and is the same process that started at ``started_s``
    (not a later process that reused the pid)."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return abs(proc.create_time() - started_s) < START_TIME_TOLERANCE_S
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def is_alive(identity: Identity) -> bool:
    """Local liveness by pid and start time (callers handle non-local identities)."""
    return process_matches(identity.pid, identity.started_ms / 1000)


def server_dead(
    server_id: str, info: dict[str, Any] | None, now: int, lease_s: float = DEFAULT_LEASE_S
) -> bool:
    """The one liveness rule: whether the server ``server_id`` is gone. On this host its
    process must still run; elsewhere its heartbeat (``info`` from the registry) must be
    younger than its lease."""
    identity = parse(server_id)
    if identity is not None and identity.local:
        return not is_alive(identity)
    if info is None:
        return False  # an owner we cannot check and that never registered: leave it
    # The store measures the heartbeat's age on one clock (Postgres: the database's), so
    # clock skew between hosts cannot make a live coordinator look dead.
    age_ms = info.get("heartbeat_age_ms", now - int(info.get("heartbeat_ms", 0)))
    return int(age_ms) > lease_s * 1000
