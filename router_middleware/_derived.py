"""Routers derived from a root: tools bound, or a structured output, over the root's state.

A derived router shares its root's pipeline (providers, limits, breakers, metrics), clock,
store and observers; only its bindings differ, reshaped from the root's (``_shape``).

Invariants:

- Deriving the same shape twice gives the same router: agents call ``bind_tools`` on
  every model call, and reshaping every provider each time would cost more than routing.
  Routers are cached per root by what they were derived with (tools by identity, or by
  value for tool dicts), in a bounded LRU.
- A root's reload reaches every derived router still alive: it is rebound to the new
  pipeline and its bindings reshaped from the new ones, so an agent built before the
  reload routes by the new config.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache

from ._binding import Binding
from ._config import RouterConfig
from ._config_tools import CapabilitiesConfig

if TYPE_CHECKING:
    from ._router import ResilientRouter
    from ._shape import Shape

__all__ = ["Derived", "reshape", "shape_key"]

_CACHED = 64
"""Shapes kept per root; an agent has a handful (its tools, its response format)."""


def reshape(
    bindings: Mapping[str, Binding], config: RouterConfig, shape: Shape
) -> tuple[dict[str, Binding], dict[str, dict[str, str]]]:
    """Every provider's binding reshaped, and why some cannot serve (provider -> model -> why)."""
    caps = {p.name: p.capabilities for p in config.providers}
    out = {
        name: b.reshaped(shape, caps.get(name, CapabilitiesConfig()))
        for name, b in bindings.items()
    }
    return out, {name: b.unsupported for name, b in out.items() if b.unsupported}


def shape_key(kind: str, tools: Sequence[Any], *extra: Any) -> Hashable:
    """What identifies a shape: its tools by identity (by value for dicts), and options."""
    return (kind, tuple(_tool_key(t) for t in tools), _freeze(extra))


def _tool_key(tool: Any) -> Hashable:
    if isinstance(tool, dict):
        return _freeze(tool)
    return id(tool)  # held by the cached router's shape, so the id stays its own


def _freeze(value: Any) -> str:
    # Objects (a schema class, a tool) by identity: two classes may share a name and repr.
    # The cached router's shape holds them, so the ids stay theirs.
    return json.dumps(value, sort_keys=True, default=lambda o: f"<{type(o).__name__} {id(o)}>")


class Derived:
    """The routers derived from one root."""

    __slots__ = ("_cache", "_live", "_lock")

    def __init__(self) -> None:
        self._cache: LRUCache[Hashable, ResilientRouter] = LRUCache(_CACHED)
        # By id: routers are pydantic models, unhashable.
        self._live: weakref.WeakValueDictionary[int, ResilientRouter] = (
            weakref.WeakValueDictionary()
        )
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], ResilientRouter]) -> ResilientRouter:
        with self._lock:
            found = self._cache.get(key)
        if found is not None:
            return found
        router = make()  # outside the lock: reshaping builds every provider's binding
        with self._lock:
            router = self._cache.setdefault(key, router)
            self._live[id(router)] = router
        return router

    def rebind(self, root: ResilientRouter) -> None:
        """Follow the root's reload: its new pipeline, and bindings reshaped from its new ones."""
        with self._lock:
            live = list(self._live.values())
        for router in live:
            assert router.shape is not None
            bindings, unsupported = reshape(root.bindings, root.router_config, router.shape)
            router.pipeline, router.bindings, router.unsupported = (
                root.pipeline,
                bindings,
                unsupported,
            )
            router.router_config = root.router_config

    def __len__(self) -> int:
        return len(self._live)

    def __repr__(self) -> str:
        return f"Derived(cached={len(self._cache)}, live={len(self._live)})"
