"""Pausing: what is paused (``Paused``), what a pause or resume changed
(``PauseChange``), and the one rule for naming what to pause."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .limits import check_key_part
from .registry import check_name


@dataclass(frozen=True)
class Paused:
    """What is paused: the whole queue (``all``) and/or the tasks named in ``tasks``."""

    all: bool = False
    tasks: frozenset[str] = field(default_factory=frozenset)

    def __bool__(self) -> bool:
        return self.all or bool(self.tasks)

    def as_dict(self) -> dict[str, Any]:
        return {"all": self.all, "tasks": sorted(self.tasks)}

    def describe(self) -> str:
        """One line for people: "nothing", or "every job" and/or the task names."""
        if not self:
            return "nothing"
        return ", ".join((["every job"] if self.all else []) + sorted(self.tasks))


@dataclass(frozen=True)
class PauseChange:
    """What a pause or resume did: ``task`` (None: the whole queue), and ``changed``
    (False: it was already paused, or was not paused, so nothing changed)."""

    task: str | None
    paused: bool
    changed: bool

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "paused": self.paused, "changed": self.changed}


def pause_target(task: object) -> str | None:
    """The task name a pause or resume is about (None: the whole queue); a task
    object or a name. Names are checked as every task name is (ConfigError)."""
    if task is None:
        return None
    name = getattr(task, "name", task) if not isinstance(task, str) else task
    check_name(name)  # type: ignore[arg-type]
    check_key_part(name, f"task name {name!r}")  # type: ignore[arg-type]
    return name  # type: ignore[return-value]
