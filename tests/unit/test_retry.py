"""What is retried (``retry.py``): matching an exception against a task's lists by the
names of its classes, checking the lists where a task is declared, and per-call
options (``Task.options``), which enqueue with the overridden options and change
nothing else."""

from __future__ import annotations

import pytest

from mpqueue import ConfigError, Fail, Queue, Retry, chain, group
from mpqueue.retry import (
    check_exception_classes,
    exception_name,
    exception_names,
    retry_allowed,
)
from mpqueue.task import CALL_OPTIONS, TaskOptions


class Outer(Exception):
    class Inner(LookupError):
        pass


class Missing(FileNotFoundError):
    pass


def work(x: int) -> int:
    return x


@pytest.fixture
def queue(tmp_path):
    with Queue(f"memory://{tmp_path.name}") as q:
        yield q


# ---- names and matching -------------------------------------------------------------------


def test_exception_names_are_module_and_qualname():
    assert exception_name(OSError) == "builtins.OSError"
    assert exception_name(IOError) == "builtins.OSError"  # an alias is the same class
    assert exception_name(Outer.Inner) == f"{__name__}.Outer.Inner"

    def local() -> type:
        class Here(Exception):
            pass

        return Here

    assert exception_name(local()).endswith(
        "test_exception_names_are_module_and_qualname.<locals>.local.<locals>.Here"
    )


def test_no_lists_retries_everything():
    for exc in (ValueError(), KeyboardInterrupt(), SystemExit(1), Missing()):
        assert retry_allowed(exc, None, ())


@pytest.mark.parametrize(
    "exc, retry_on, no_retry_on, retried",
    [
        (ValueError("x"), None, (ValueError,), False),
        (ValueError("x"), None, (KeyError,), True),
        (KeyError("x"), (OSError,), (), False),  # retry_on given: others are not retried
        (Missing(), (OSError,), (), True),  # a subclass matches
        (Missing(), (OSError,), (FileNotFoundError,), False),  # the nearest class decides
        (FileNotFoundError(), (FileNotFoundError,), (OSError,), True),
        (ConnectionError(), (FileNotFoundError,), (OSError,), False),
        (Outer.Inner(), (LookupError,), (Outer,), True),  # Outer is a name, not a base
        (SystemExit(3), (Exception,), (), False),  # a BaseException outside the list
        (ValueError(), (), (), False),  # retry_on=(): no exception is retried
    ],
)
def test_the_nearest_listed_class_decides(exc, retry_on, no_retry_on, retried):
    names = None if retry_on is None else exception_names(retry_on)
    assert retry_allowed(exc, names, exception_names(no_retry_on)) is retried


def test_matching_is_by_name_so_a_class_defined_again_still_matches():
    """A by-value task's classes are rebuilt in the worker: a new class object with the
    same module and qualified name."""
    names = exception_names((Missing,))
    rebuilt = type("Missing", (FileNotFoundError,), {"__module__": __name__})
    assert rebuilt is not Missing and not retry_allowed(rebuilt(), None, names)


# ---- declaring the lists --------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"retry_on": [OSError]}, "retry_on must be an exception class or a tuple of them"),
        ({"retry_on": "OSError"}, "retry_on must be an exception class or a tuple of them"),
        ({"no_retry_on": (ValueError, 3)}, "no_retry_on takes exception classes; got 3"),
        ({"retry_on": (int,)}, "retry_on takes exception classes"),
        ({"retry_on": (Retry,)}, "retry_on cannot hold Retry"),
        ({"no_retry_on": Fail}, "no_retry_on cannot hold Fail"),
        (
            {"retry_on": (OSError, KeyError), "no_retry_on": (IOError,)},
            "builtins.OSError cannot be in both retry_on and no_retry_on",
        ),
    ],
)
def test_bad_lists_are_one_line_config_errors_at_declaration(queue, options, message):
    with pytest.raises(ConfigError, match=message) as caught:
        queue.task(**options)(work)
    assert "\n" not in str(caught.value)
    assert queue.registry.names() == []  # nothing registered
    task = queue.task(work)
    with pytest.raises(ConfigError, match=message):  # options() checks as strictly
        task.options(**options)
    assert queue.stats()["total"] == 0


def test_a_single_class_is_taken_as_a_tuple_and_none_as_no_list():
    options = TaskOptions(retry_on=OSError, no_retry_on=None)  # type: ignore[arg-type]
    assert options.retry_on == (OSError,) and options.no_retry_on == ()
    assert options.retry_on_names == ("builtins.OSError",) and options.no_retry_on_names == ()
    assert TaskOptions().retry_on_names is None
    assert check_exception_classes("x", (KeyError, Missing)) == (KeyError, Missing)


def test_records_carry_the_lists_as_names(queue):
    plain = queue.task(work).delay(1).record
    assert plain.retry_on is None and plain.no_retry_on == ()
    listed = queue.task(retry_on=(OSError, Outer.Inner), no_retry_on=Missing, name="listed")(work)
    rec = listed.delay(1).record
    assert rec.retry_on == ("builtins.OSError", f"{__name__}.Outer.Inner")
    assert rec.no_retry_on == (f"{__name__}.Missing",)
    assert queue.get(rec.id).record.retry_on == rec.retry_on  # stored, read back


# ---- per-call options -------------------------------------------------------------------


def test_options_override_for_the_call_only(queue):
    task = queue.task(retries=3, timeout=10.0, priority=1, backoff=2.0)(work)
    registered = queue.registry.get(task.name)
    variant = task.options(
        retries=0, timeout=5.0, priority=7, backoff=0.5, backoff_cap=1.0, retry_on=KeyError
    )
    assert variant is not task and variant.name == task.name and variant.fn is task.fn
    assert variant.queue is queue and variant(4) == 4
    assert queue.registry.get(task.name) is registered and registered is task  # not re-registered
    assert task.config == TaskOptions(retries=3, timeout=10.0, priority=1, backoff=2.0)
    rec = variant.delay(1).record
    assert (rec.name, rec.max_retries, rec.timeout_s, rec.priority) == (task.name, 0, 5.0, 7)
    assert (rec.backoff_base_s, rec.backoff_cap_s, rec.retry_on) == (
        0.5,
        1.0,
        ("builtins.KeyError",),
    )
    plain = task.delay(1).record
    assert (plain.max_retries, plain.timeout_s, plain.priority, plain.retry_on) == (
        3,
        10.0,
        1,
        None,
    )
    assert task.options().config == task.config  # nothing overridden: the same options
    assert variant.options(retries=2).config.retry_on == (KeyError,)  # variants stack


def test_a_variant_schedules_maps_and_signs_into_workflows(queue):
    task = queue.task(work)
    variant = task.options(retries=0, priority=5)
    later = variant.schedule((1,), delay=3600).record
    assert later.state.value == "scheduled" and (later.max_retries, later.priority) == (0, 5)
    assert variant.schedule((1,), priority=9).record.priority == 9  # the call's own wins
    mapped = variant.map([(1,), (2,)])
    assert [(j.record.max_retries, j.record.priority) for j in mapped] == [(0, 5), (0, 5)]
    last = chain(variant.s(1), task.s(), variant.options(retries=1).s()).delay()
    steps = [queue.get(job_id).record for job_id in (*last.depends_on, last.id)]
    first = queue.get(steps[0].depends_on[0]).record
    assert [r.max_retries for r in (first, *steps)] == [0, 3, 1]
    members = group([variant.s(1), task.s(2), variant.s(3)]).delay()
    assert [m.record.max_retries for m in members] == [0, 3, 0]
    assert {r.name for r in (first, *steps)} == {task.name}


def test_unknown_option_names_it_and_lists_the_known(queue):
    task = queue.task(work)
    with pytest.raises(ConfigError) as caught:
        task.options(retires=1, name="other")
    message = str(caught.value)
    assert message.startswith("unknown per-call option(s): name, retires; known: ")
    assert message.endswith(", ".join(sorted(CALL_OPTIONS))) and "\n" not in message


def test_invalid_values_fail_as_the_decorator_does(queue):
    task = queue.task(work)
    for bad in ({"retries": -1}, {"timeout": float("nan")}, {"priority": True}, {"backoff": 0}):
        with pytest.raises(ConfigError) as from_decorator:
            queue.task(**bad)
        with pytest.raises(ConfigError) as from_options:
            task.options(**bad)
        assert str(from_options.value) == str(from_decorator.value)
    assert queue.stats()["total"] == 0


def test_a_functions_own_options_attribute_does_not_hide_the_method(queue):
    def tagged(x: int) -> int:
        return x

    tagged.options = {"mine": True}  # type: ignore[attr-defined]
    task = queue.task(tagged)
    assert task.options(retries=0).config.retries == 0
    assert tagged.options == {"mine": True}  # type: ignore[attr-defined]
