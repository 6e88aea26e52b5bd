"""``mpqueue.Executor``'s refusals, before any server starts: a memory store (no other
process can reach it), a bad ``max_workers``, unknown task options. Each is one
ConfigError line, and no store is created."""

from __future__ import annotations

import pytest

from mpqueue import ConfigError, Executor


def test_a_memory_store_cannot_be_served_by_another_process():
    with pytest.raises(ConfigError, match="memory") as caught:
        Executor("memory://executor-test")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("workers", [0, -1, 5000, 1.5, True, "2"])
def test_max_workers_must_be_a_positive_integer(tmp_path, workers):
    with pytest.raises(ConfigError, match="max_workers"):
        Executor(tmp_path / "store", max_workers=workers)
    assert not (tmp_path / "store").exists()


def test_task_options_are_checked_like_a_tasks(tmp_path):
    with pytest.raises(ConfigError, match="unknown task option"):
        Executor(tmp_path / "store", retry=3)
    with pytest.raises(ConfigError, match="retries"):
        Executor(tmp_path / "store", retries=-1)
    with pytest.raises(ConfigError, match="no name"):
        Executor(tmp_path / "store", name="x")
    assert not (tmp_path / "store").exists()
