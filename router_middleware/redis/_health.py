"""Whether shared state is usable now: degrading on a failure, recovering by itself.

Invariants: a store is degraded from its first failure until a background check (every
``recheck_seconds``, from its own thread, never on a request's path) finds Redis
answering; each change is logged once and told to the listeners once, however many
requests meet it; while degraded, no request touches Redis.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Health"]

logger = logging.getLogger("router_middleware")

_StateListener = Callable[[bool, str], None]


class Health:
    """The degraded flag of a shared store, its counters, and the re-check thread.

    Example:
        >>> health = Health(ping=lambda: True, recheck_seconds=60, mode="local")
        >>> health.degraded, health.degradations
        (False, 0)
    """

    __slots__ = (
        "_checker",
        "_listeners",
        "_lock",
        "_ping",
        "_stop",
        "degradations",
        "degraded",
        "errors",
        "mode",
        "recheck_seconds",
    )

    def __init__(self, ping: Callable[[], Any], recheck_seconds: float, mode: str) -> None:
        self._ping = ping
        self.recheck_seconds = recheck_seconds
        self.mode = mode  # what degraded means, for the log line
        self.degraded = False
        self.degradations = 0
        self.errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._checker: threading.Thread | None = None
        self._listeners: tuple[_StateListener, ...] = ()

    def add_listener(self, listener: _StateListener) -> None:
        """Call ``listener(degraded, reason)`` at each change."""
        self._listeners = (*self._listeners, listener)

    def failed(self, exc: BaseException) -> None:
        """An operation on Redis failed: count it, and degrade if not yet degraded."""
        with self._lock:
            self.errors += 1
            if self.degraded:
                return
            self.degraded = True
            self.degradations += 1
            checker = self._checker = threading.Thread(
                target=self._recheck, name="router-middleware-state-recheck", daemon=True
            )
        # The URL may hold a password: name the error's type and its text, never the URL.
        reason = f"{type(exc).__name__}: {exc}"
        logger.warning("shared state unavailable (%s); %s until Redis answers", reason, self.mode)
        self._tell(True, reason)
        checker.start()

    def _recheck(self) -> None:
        while not self._stop.wait(self.recheck_seconds):
            try:
                self._ping()
            except Exception:
                continue
            with self._lock:
                self.degraded = False
            logger.warning("shared state available again: limits are shared")
            self._tell(False, "Redis answers again")
            return

    def _tell(self, degraded: bool, reason: str) -> None:
        for listener in self._listeners:
            try:
                listener(degraded, reason)
            except Exception:
                logger.exception("state listener %r failed", listener)

    def close(self) -> None:
        """Stop the re-check (a closed store stays as it is)."""
        self._stop.set()
        checker = self._checker
        if checker is not None and checker.is_alive():
            checker.join(timeout=2)
