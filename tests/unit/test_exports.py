"""The public surface: one sorted ``__all__`` that names exactly what the package
exports, and one version that the installed metadata agrees with."""

from __future__ import annotations

import inspect
from importlib import metadata

import mpqueue


def test_all_is_sorted_and_names_every_public_export():
    assert mpqueue.__all__ == sorted(mpqueue.__all__)
    public = {
        name
        for name, value in vars(mpqueue).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(mpqueue.__all__) == public


def test_one_version_source():
    assert metadata.version("mpqueue") == mpqueue.__version__


def test_the_executor_is_a_standard_executor():
    """``mpqueue.Executor`` works wherever a ``concurrent.futures.Executor`` does, and
    its broken state is the standard library's ``BrokenExecutor``."""
    import concurrent.futures

    assert issubclass(mpqueue.Executor, concurrent.futures.Executor)
    assert issubclass(mpqueue.ExecutorBroken, concurrent.futures.BrokenExecutor)
    assert issubclass(mpqueue.ExecutorBroken, mpqueue.MpqueueError)
