"""Task names: registration on a queue, and resolution by import path in workers."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from .errors import ConfigError, DuplicateTask, TaskNotFound
from .limits import NAME_MAX_BYTES

MAX_NAME_BYTES = NAME_MAX_BYTES  # the name index key holds name, 0, id


def task_name(fn: Callable[..., Any]) -> str:
    """The import path a worker will use to find ``fn``: ``package.module.qualname``."""
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if qualname is None:
        qualname = type(fn).__qualname__
    return f"{module}.{qualname}"


def is_importable(fn: Callable[..., Any]) -> bool:
    """False for callables a worker cannot import: ``__main__``, locals, lambdas."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", "") or ""
    return bool(module) and module != "__main__" and "<" not in qualname


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"task name must be a non-empty string; got {name!r}")
    if "\x00" in name:
        raise ConfigError(f"task name may not contain a NUL character: {name!r}")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: e.g. a byte from argv that is not UTF-8
        raise ConfigError(f"task name is not valid UTF-8 text: {name[:60]!r}") from None
    if size > MAX_NAME_BYTES:
        raise ConfigError(
            f"task name is too long: {size} bytes, the limit is {MAX_NAME_BYTES} ({name[:60]!r}...)"
        )
    return name


class Registry:
    """The tasks registered on one queue, by name."""

    def __init__(self) -> None:
        self._tasks: dict[str, Any] = {}

    def add(self, name: str, task: Any) -> None:
        check_name(name)
        if name in self._tasks:
            raise DuplicateTask(
                f"a task named {name!r} is already registered on this queue; "
                "pass name=... to register another under a new name"
            )
        self._tasks[name] = task

    def get(self, name: str) -> Any | None:
        return self._tasks.get(name)

    def remove(self, name: str) -> None:
        """Undo ``add`` (a registration that failed half way)."""
        self._tasks.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._tasks)


def import_module(module_name: str, why: str) -> Any:
    """Import a user's module; whatever its import raises becomes a TaskNotFound naming the
    module and ``why`` it was imported (SystemExit too: a module must not end the
    process that imports it)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError:
        raise
    except (Exception, SystemExit) as exc:
        raise TaskNotFound(
            f"importing {module_name!r} for {why} raised {type(exc).__name__}: {exc}"
        ) from exc


def resolve(name: str) -> Callable[..., Any]:
    """Import ``package.module.attr[.attr...]`` and return the callable (or Task) there."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj: Any = import_module(module_name, f"task {name!r}")
        except ModuleNotFoundError as exc:
            if exc.name is not None and not module_name.startswith(exc.name):
                raise TaskNotFound(
                    f"importing {module_name!r} for task {name!r} failed: {exc}"
                ) from exc
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError as exc:
            raise TaskNotFound(
                f"module {module_name!r} has no {'.'.join(parts[split:])!r} (task {name!r})"
            ) from exc
        if not callable(obj):
            raise TaskNotFound(f"{name!r} is not callable")
        return obj  # type: ignore[no-any-return]
    raise TaskNotFound(
        f"cannot import a module for task {name!r}; task names are import "
        "paths such as 'package.module.function'"
    )
