"""A wrapper that records, per store call, how many operations it took.

The wrapped store does the counting (its ``counter``); this layer attributes the
counts to the call that caused them, for tests (no N+1) and for ``bench/``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import OpCounter, Store


@dataclass(frozen=True)
class CallCount:
    method: str
    ops: OpCounter


class CountingStore:
    """Proxy for a ``Store``: every method call is forwarded and its ops recorded."""

    def __init__(self, inner: Store):
        self.inner = inner
        self.calls: list[CallCount] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            before = self.inner.counter.snapshot()
            try:
                return attr(*args, **kwargs)
            finally:
                self.calls.append(CallCount(name, self.inner.counter - before))

        return counted

    def last(self, method: str | None = None) -> OpCounter:
        """Ops of the most recent call (of ``method``, if given)."""
        for call in reversed(self.calls):
            if method is None or call.method == method:
                return call.ops
        raise LookupError(f"no recorded call of {method!r}")

    def total(self, method: str | None = None) -> OpCounter:
        total = OpCounter()
        for call in self.calls:
            if method is None or call.method == method:
                total = _add(total, call.ops)
        return total

    def reset(self) -> None:
        self.calls.clear()

    def measure(self, fn: Callable[[], Any]) -> tuple[Any, OpCounter]:
        """Run ``fn`` and return its value with the store ops it caused."""
        before = self.inner.counter.snapshot()
        value = fn()
        return value, self.inner.counter - before


def _add(a: OpCounter, b: OpCounter) -> OpCounter:
    return OpCounter(
        a.gets + b.gets,
        a.puts + b.puts,
        a.deletes + b.deletes,
        a.cursor_steps + b.cursor_steps,
        a.txns + b.txns,
    )
