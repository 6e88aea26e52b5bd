"""Keeping the processes a job starts inside its worker, so none outlives it.

Each worker child leads its own session and process group (``lead_own_group``) and is
a child subreaper (Linux): whatever its jobs start is in its group, and a daemon that
leaves the group (setsid) and double-forks is still adopted by the worker, not by init,
so it stays among the worker's descendants. What is then guaranteed:

- a timeout kill, the shutdown kill and a worker that exits on its own terms (recycled,
  stopped, or because its coordinator died) take every descendant with them, group
  members and such daemons alike (``kill_tree`` / ``kill_descendants``);
- a worker that dies by surprise (SIGKILL from outside, a segfault) takes its process
  group (``kill_group``, run by the coordinator when it sees the exit); a descendant
  that had left the group by then is adopted by init and is not covered.

An adopted daemon that exits while its worker lives stays a zombie until the worker
exits (the worker reaps nothing, so it never takes a job's own child's exit status).
"""

from __future__ import annotations

import ctypes
import os
import signal

import psutil

from ..identity import process_matches

_PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def lead_own_group() -> None:
    """Make this process the leader of a new session and process group, and a child
    subreaper. A terminal's SIGHUP or Ctrl-C then reaches the coordinator alone."""
    try:
        os.setsid()
    except OSError:
        pass  # already a group leader (a test calling child_main directly): keep it
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the process group alone


def kill_group(leader_pid: int) -> None:
    """SIGKILL every process in the group that ``leader_pid`` leads, if it leads one.

    A no-op for a process that never became a group leader (its group id is another
    process's pid, so there is no group with its own id) or a group already empty.
    """
    try:
        os.killpg(leader_pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_descendants(pid: int | None = None) -> None:
    """SIGKILL every descendant of ``pid`` (default: this process), not ``pid`` itself.

    A process with no children has no descendants (a worker adopts its orphans), and
    /proc says so in a few reads; only otherwise is the whole process table read
    (psutil, milliseconds), on the rare paths: a kill, an exit, a timed-out job.
    """
    if _has_no_children(os.getpid() if pid is None else pid):
        return
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return
    for proc in descendants:
        try:
            proc.kill()
        except psutil.Error:
            continue


def _has_no_children(pid: int) -> bool:
    """True if /proc lists no child of any of ``pid``'s threads; False if it lists one
    or cannot tell (a kernel without /proc/PID/task/TID/children)."""
    task_dir = f"/proc/{pid}/task"
    if not os.path.exists(f"{task_dir}/{pid}/children"):
        return False
    try:
        threads = os.listdir(task_dir)
    except OSError:
        return False
    for tid in threads:
        try:
            with open(f"{task_dir}/{tid}/children", "rb") as fh:
                if fh.read().strip():
                    return False
        except FileNotFoundError:
            continue  # that thread ended meanwhile
        except OSError:
            return False
    return True


def kill_tree(pid: int, started_s: float | None) -> None:
    """SIGKILL a worker, its process group and all its descendants.

    ``started_s`` is the worker's start time: its descendants are looked up only while
    the pid is still that process (not a later one that reused the pid).
    """
    if started_s is not None and process_matches(pid, started_s):
        kill_descendants(pid)
    kill_group(pid)
