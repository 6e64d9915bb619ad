"""What every exporter shares: it follows one router, and the routers derived from it.

An exporter hears the router's events as an observer and, for what it reads live (gauges
at scrape time, breaker states), keeps a reference to the router it follows: the root,
so the routers derived with ``bind_tools`` or ``with_structured_output`` (which share the
root's observers) are covered too.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, TypeVar

from .._observe import Observer

if TYPE_CHECKING:
    from .._router import ResilientRouter

__all__ = ["Following"]

F = TypeVar("F", bound="Following")


class Following(Observer):
    """An observer that follows one router; :meth:`watch` sets which."""

    def __init__(self) -> None:
        self._router: ResilientRouter | None = None
        self._lock = threading.Lock()

    def watch(self: F, router: ResilientRouter) -> F:
        """Follow ``router`` (its root), observing it unless it already reports here;
        returns this exporter.

        Raises:
            ValueError: this exporter already follows another router.
        """
        root = router.root or router
        with self._lock:
            if self._router is not None and self._router is not root:
                raise ValueError("this exporter already follows another router")
            self._router = root
        if self not in root.observers:
            root.add_observer(self)
        return self
