"""Where limiter and breaker state lives: a tiny storage interface.

The algorithms (token bucket, breaker) are pure functions of ``(state, now, ...)``;
a store only applies one atomically. :class:`InMemoryStore` does it under a lock held
for the few microseconds of the function, never across a provider call or an
``await``. A shared backend (Redis) implements the same ``transact`` with an optimistic
transaction, so memory and Redis run one algorithm.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, runtime_checkable

__all__ = ["InMemoryStore", "StateStore"]

R = TypeVar("R")


@runtime_checkable
class StateStore(Protocol):
    """Atomic read-modify-write of one state value per key."""

    def transact(self, key: str, fn: Callable[..., tuple[Any, R]], *args: Any) -> R:
        """Atomically run ``fn(state_or_None, *args) -> (new_state, result)``; return result."""
        ...

    def get(self, key: str) -> Any:
        """The current state of ``key`` (``None`` when absent), read without a transaction.

        Possibly stale by the time it is used: for display, and for fast paths that only
        skip a transaction which would have changed nothing.
        """
        ...


class InMemoryStore:
    """Process-local state, safe across threads and asyncio tasks.

    Example:
        >>> store = InMemoryStore()
        >>> store.transact("n", lambda s: ((s or 0) + 1, "done"))
        'done'
        >>> store.get("n")
        1
    """

    __slots__ = ("_data", "_lock")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._lock = threading.Lock()

    def transact(self, key: str, fn: Callable[..., tuple[Any, R]], *args: Any) -> R:
        with self._lock:
            state, result = fn(self._data.get(key), *args)
            self._data[key] = state
            return result

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def __repr__(self) -> str:
        return f"InMemoryStore(keys={len(self._data)})"
