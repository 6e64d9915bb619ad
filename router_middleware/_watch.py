"""A live view of a router in Jupyter: one table, refreshed in place while requests run.

``router.watch()`` displays, per provider, the breaker state, calls in flight (of its
``max_concurrent``), requests per second over the last interval, its last failed
attempts' error kinds and when, the ``Retry-After`` cool-down left and the token headroom.
A daemon thread re-renders it every ``interval`` seconds into the same output (a display
id) until :meth:`Watch.stop` or the end of a ``with`` block; it reads the router's state
and never runs on, nor waits for, an event loop.

IPython is imported only when no ``display`` is given; without it ``watch()`` raises an
``ImportError`` that says so (a live view needs a frontend; ``router.metrics()`` is the
plain-data alternative).

Example:
    >>> from router_middleware import ResilientRouter
    >>> from router_middleware.testing import ScriptedChatModel
    >>> shown = []
    >>> class Handle:
    ...     def update(self, bundle, raw=False):
    ...         shown.append(bundle)
    >>> def display(bundle, raw=False, display_id=False):
    ...     shown.append(bundle)
    ...     return Handle()
    >>> router = ResilientRouter({"a": ScriptedChatModel()})
    >>> with router.watch(interval=60, display=display) as watch:
    ...     _ = router.invoke("hi")
    >>> len(shown), watch.running  # the first view, then one final update on stop
    (2, False)
    >>> "closed" in shown[-1]["text/plain"]
    True
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from html import escape
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ._display import _cell, _state, _table
from ._observe import AttemptEnd, Observer

if TYPE_CHECKING:
    from ._router import ResilientRouter

__all__ = ["Display", "DisplayHandle", "RecentErrors", "Watch", "watch_html", "watch_text"]

logger = logging.getLogger("router_middleware")

_HEAD = (
    "provider",
    "breaker",
    "in flight",
    "req/s",
    "requests",
    "failed",
    "recent errors",
    "cool-down",
    "token headroom",
)


class DisplayHandle(Protocol):
    """What :data:`Display` returns: IPython's ``DisplayHandle`` (its ``update``)."""

    def update(self, obj: Any, **kwargs: Any) -> None: ...


Display = Callable[..., "DisplayHandle | None"]
"""Called as ``display(bundle, raw=True, display_id=True)``, like
``IPython.display.display``: ``bundle`` maps ``text/html`` and ``text/plain`` to the view."""


class RecentErrors(Observer):
    """Keeps each provider's last ``size`` failed attempts: (monotonic time, error kind).

    Bounded deques, so a long watch of a failing provider holds constant memory; a lock,
    because attempts end on the callers' threads while the watch thread reads.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._by_provider: dict[str, deque[tuple[float, str]]] = {}

    def attempt_ended(self, end: AttemptEnd) -> None:
        if end.outcome != "failed":
            return
        with self._lock:
            recent = self._by_provider.get(end.provider)
            if recent is None:
                recent = self._by_provider[end.provider] = deque(maxlen=self._size)
            recent.append((time.monotonic(), end.kind or "error"))

    def of(self, provider: str) -> list[tuple[float, str]]:
        """The provider's recent failures, oldest first."""
        with self._lock:
            return list(self._by_provider.get(provider, ()))


def _rows(
    router: ResilientRouter,
    recent: RecentErrors,
    rates: Mapping[str, float | None],
    now: float,
) -> list[dict[str, Any]]:
    rows = []
    for name, p in router.providers.items():
        limit = p.config.rate_limit.max_concurrent
        rows.append(
            {
                "provider": name,
                "enabled": p.enabled,
                "breaker": p.circuit_breaker_state,
                "in_flight": f"{p.limiter.in_flight}/{'∞' if limit is None else limit}",
                "rate": rates.get(name),
                "requests": p.metrics.total_requests,
                "failed": p.metrics.failed_requests + p.metrics.throttled,
                "errors": [(kind, now - at) for at, kind in recent.of(name)],
                "cooldown": p.cooldown_left,
                "headroom": p.token_headroom,
            }
        )
    return rows


def _errors_text(errors: list[tuple[str, float]]) -> str:
    return ", ".join(f"{kind} {ago:.1f}s ago" for kind, ago in reversed(errors)) or "–"


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value else "–"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def watch_html(rows: list[dict[str, Any]], caption: str) -> str:
    """The live table as HTML, styled as ``router_html``'s (newest error first)."""
    cells = [
        [
            escape(r["provider"]) + ("" if r["enabled"] else " <b>(disabled)</b>"),
            _state(r["breaker"]),
            escape(r["in_flight"]),
            _rate(r["rate"]),
            _cell(r["requests"]),
            _cell(r["failed"]),
            escape(_errors_text(r["errors"])),
            _seconds(r["cooldown"]),
            _cell(r["headroom"]),
        ]
        for r in rows
    ]
    return _table(_HEAD, cells, caption)


def watch_text(rows: list[dict[str, Any]], caption: str) -> str:
    """The live table as aligned plain text, for frontends that show no HTML."""
    lines = [list(_HEAD)]
    for r in rows:
        lines.append(
            [
                r["provider"] + ("" if r["enabled"] else " (disabled)"),
                r["breaker"],
                r["in_flight"],
                _rate(r["rate"]),
                str(r["requests"]),
                str(r["failed"]),
                _errors_text(r["errors"]),
                _seconds(r["cooldown"]),
                "–" if r["headroom"] is None else f"{r['headroom']:.4g}",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(_HEAD))]
    table = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join([caption, *(t.rstrip() for t in table)])


def _ipython_display() -> Display:
    try:
        from IPython.display import display
    except ImportError as error:  # a live view needs a frontend; say which is missing
        raise ImportError(
            "router.watch() needs IPython (run it in Jupyter, or `pip install ipython`); "
            "router.metrics() gives the same numbers as plain data"
        ) from error
    return display


class Watch:
    """A live view of a router: see :meth:`~._controls.RuntimeControls.watch`.

    ``updates`` counts the in-place updates made (the first display is not one);
    ``failures`` the updates the display refused (logged, never raised: routing goes on);
    ``recent`` the observer that keeps the recent errors (attached until :meth:`stop`).
    """

    def __init__(
        self,
        router: ResilientRouter,
        interval: float = 1.0,
        *,
        errors: int = 5,
        display: Display | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        if errors < 1:
            raise ValueError(f"errors must be >= 1, got {errors!r}")
        self.interval = float(interval)
        self.updates = 0
        self.failures = 0
        self._router = router
        self._display = display if display is not None else _ipython_display()
        self.recent = RecentErrors(errors)
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # one render at a time: the thread's, or stop()'s last
        self._last: tuple[float, dict[str, int]] | None = None
        router.add_observer(self.recent)
        try:
            self._handle = self._display(self._bundle(), raw=True, display_id=True)
        except BaseException:
            router.remove_observer(self.recent)
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"router-watch-{id(self):x}", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """End the refreshing at once, show the final state, detach the observer."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        self._update()
        self._router.remove_observer(self.recent)

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return (
            f"<Watch {state} interval={self.interval:g}s updates={self.updates}"
            f" failures={self.failures}>"
        )

    def _run(self) -> None:
        # Waiting on the event, not sleeping: stop() wakes the thread at once.
        while not self._stopped.wait(self.interval):
            self._update()

    def _update(self) -> None:
        with self._lock:
            try:
                bundle = self._bundle()
                if self._handle is not None:
                    self._handle.update(bundle, raw=True)
                self.updates += 1
            except Exception:
                self.failures += 1
                if self.failures == 1:  # once, not once per interval
                    logger.exception("router.watch() could not update its view")

    def _bundle(self) -> dict[str, str]:
        now = time.monotonic()
        totals = {n: p.metrics.total_requests for n, p in self._router.providers.items()}
        rates: dict[str, float | None] = {}
        if self._last is not None:  # a rate needs two readings
            then, before = self._last
            elapsed = max(now - then, 1e-9)
            rates = {n: (t - before.get(n, 0)) / elapsed for n, t in totals.items()}
        self._last = (now, totals)
        rows = _rows(self._router, self.recent, rates, now)
        strategy = self._router.router_config.strategy
        live = "stopped" if self._stopped.is_set() else f"every {self.interval:g}s"
        html_caption = (
            f"<b>ResilientRouter</b> live · strategy <code>{escape(strategy)}</code> · {live}"
        )
        return {
            "text/html": watch_html(rows, html_caption),
            "text/plain": watch_text(rows, f"ResilientRouter live, {strategy}, {live}"),
        }
