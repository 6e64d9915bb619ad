"""The observer seam: one place that hears everything the router does.

The run scaffold reports each routed request's start and end (tracers open a span on
them); the pipeline reports to one :class:`Observer`: attempt start and end (provider, model,
outcome, latency, time to first token, tokens, cost), the end of a provider request that
made no attempt (turned away by the router's limits),
retries, fallbacks from one provider to the next, breaker transitions, limiter waits and
cool-downs. The per-provider metrics are
one observer (:class:`MetricsObserver`); an exporter (Prometheus, OpenTelemetry) is
another, added with ``ResilientRouter(observers=[...])``. An observer that raises is
logged and never fails a request.

Example:
    >>> class Count(Observer):
    ...     ends = 0
    ...     def attempt_ended(self, end):
    ...         self.ends += 1
    >>> counter = Count()
    >>> Observers([counter]).attempt_ended(AttemptEnd("a", "m", 1, "succeeded"))
    >>> counter.ends
    1
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._breaker import BreakerState, BreakerTransition
from ._metrics import ProviderMetrics, usage_from_message

if TYPE_CHECKING:
    from ._lease import Lease
    from ._provider import Provider

__all__ = [
    "AttemptEnd",
    "MetricsObserver",
    "Observer",
    "Observers",
    "attempt_end",
    "paid",
    "request_outcome",
]

logger = logging.getLogger("router_middleware")


@dataclass(slots=True)
class AttemptEnd:
    """How one provider attempt ended.

    ``outcome`` is ``"succeeded"``, ``"failed"`` (``kind`` says how: an
    :class:`~._classification.ErrorKind` value), ``"ignored"`` (ended without a verdict
    on the provider) or ``"cancelled"``. ``ends_request`` is false when the router will
    retry the same provider; ``fallback`` when the request moves on to another one.
    ``message`` is the answer of a succeeded attempt (a stream's chunks summed), for
    observers that read its metadata (response model, finish reason).
    """

    provider: str
    model: str
    attempt: int
    outcome: str
    kind: str | None = None
    latency: float | None = None
    first_chunk: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    ends_request: bool = True
    fallback: bool = False
    message: Any = None


def attempt_end(
    lease: Lease,
    outcome: str,
    kind: str | None = None,
    latency: float | None = None,
    first_chunk: float | None = None,
) -> AttemptEnd:
    """How the attempt of ``lease`` ended (its provider, model and number)."""
    return AttemptEnd(
        lease.provider.name, lease.model, lease.attempt, outcome, kind, latency, first_chunk
    )


def paid(end: AttemptEnd, provider: Provider, message: Any) -> None:
    """Count the usage ``message`` reports (if any) and its cost in ``end``: an answer
    paid for but not taken, or a stream that broke part-way."""
    if message is not None:
        end.input_tokens, end.output_tokens = usage_from_message(message)
        end.cost = sum(provider.price(end.model, end.input_tokens, end.output_tokens))


class Observer:
    """Hears what the router does; override the methods you need (each is a no-op)."""

    def request_started(self, model: str | None, stream: bool) -> None:
        """A routed request (``invoke``, ``ainvoke``, ``stream``, ``astream``) starts, on
        the caller's thread or task: its attempt events follow there, then
        :meth:`request_finished`. ``model`` is the one asked for (``None``: any)."""

    def request_finished(self, outcome: str, error: BaseException | None) -> None:
        """The request that started last on this thread or task ended: ``"succeeded"``,
        ``"cached"`` (answered by the response cache, no attempt), ``"failed"`` (``error``
        says how) or ``"cancelled"`` (cancelled, interrupted, or a stream closed early)."""

    def attempt_started(self, provider: str, model: str, attempt: int) -> None:
        """A provider call is about to start."""

    def attempt_ended(self, end: AttemptEnd) -> None:
        """A provider attempt ended; told once what follows is known (so after
        :meth:`retried` when the router retries: ``end.ends_request`` says which)."""

    def request_ended(self, provider: str, outcome: str) -> None:
        """A provider request ended without an attempt of its own: ``"rate_limited"``, the
        router's limits turned the request away there and it was never admitted there."""

    def retried(self, provider: str, attempt: int, delay: float) -> None:
        """The router will call ``provider`` again after ``delay`` seconds."""

    def fell_back(self, from_provider: str, to_provider: str, reason: str) -> None:
        """A request that left ``from_provider`` after a failure (``reason``: its
        :class:`~._classification.ErrorKind` value) was admitted by ``to_provider``.

        Told when the next provider admits the request, so the pair is that of one
        request (``AttemptEnd.fallback`` alone cannot say where it went); a request that
        no other provider takes has no fallback event.
        """

    def breaker_changed(self, transition: BreakerTransition) -> None:
        """A circuit breaker changed state (from a request or a runtime control)."""

    def waited(self, providers: Sequence[str], seconds: float, woken: bool) -> None:
        """A request waited for capacity; ``woken`` when a release ended the wait."""

    def cooled_down(self, provider: str, seconds: float) -> None:
        """``provider`` asked for time (``Retry-After``) and is skipped for ``seconds``."""

    def state_changed(self, degraded: bool, reason: str) -> None:
        """Shared state (Redis) failed, ``degraded`` (the router runs on local state, as
        ``state.on_error`` says), or answers again; told once per change, from the thread
        that met it."""


class Observers(Observer):
    """Several observers as one, in order; one that raises is logged, not fatal.

    Each event goes only to the observers that override its method: the hot path pays
    nothing for events nobody listens to.
    """

    _EVENTS = (
        "request_started",
        "request_finished",
        "attempt_started",
        "attempt_ended",
        "request_ended",
        "retried",
        "fell_back",
        "breaker_changed",
        "waited",
        "cooled_down",
        "state_changed",
    )

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self._observers: tuple[Observer, ...] = ()
        self._by_event: dict[str, tuple[Observer, ...]] = dict.fromkeys(self._EVENTS, ())
        self.heard: frozenset[str] = frozenset()
        """The events some observer overrides: a caller may skip building the others."""
        for observer in observers:
            self.add(observer)

    def add(self, observer: Observer) -> None:
        self._observers = (*self._observers, observer)
        self._index()

    def remove(self, observer: Observer) -> None:
        """Stop telling ``observer`` (by identity); one not added is ignored."""
        self._observers = tuple(o for o in self._observers if o is not observer)
        self._index()

    def _index(self) -> None:
        # Tuples swapped whole: an event told on another thread sees the old or the new set.
        self._by_event = {
            event: tuple(
                o
                for o in self._observers
                if getattr(type(o), event, None) is not getattr(Observer, event)
            )
            for event in self._EVENTS
        }
        self.heard = frozenset(e for e, heard_by in self._by_event.items() if heard_by)

    def started(self, model: str | None, stream: bool) -> Observers | None:
        """Tell :meth:`request_started` if some observer hears requests; returns the
        observers to tell :meth:`finished`, else ``None`` (the run scaffold's one test)."""
        if "request_started" not in self.heard and "request_finished" not in self.heard:
            return None
        self.request_started(model, stream)
        return self

    def finished(self, error: BaseException | None, cached: bool = False) -> None:
        """Tell :meth:`request_finished` how the request ended (``error``: what it raised)."""
        if error is not None:
            self.request_finished(request_outcome(error), error)
        else:
            self.request_finished("cached" if cached else "succeeded", None)

    def request_started(self, model: str | None, stream: bool) -> None:
        for o in self._by_event["request_started"]:
            try:
                o.request_started(model, stream)
            except Exception:
                _failed(o, "request_started")

    def request_finished(self, outcome: str, error: BaseException | None) -> None:
        for o in self._by_event["request_finished"]:
            try:
                o.request_finished(outcome, error)
            except Exception:
                _failed(o, "request_finished")

    def attempt_started(self, provider: str, model: str, attempt: int) -> None:
        for o in self._by_event["attempt_started"]:
            try:
                o.attempt_started(provider, model, attempt)
            except Exception:
                _failed(o, "attempt_started")

    def attempt_ended(self, end: AttemptEnd) -> None:
        for o in self._by_event["attempt_ended"]:
            try:
                o.attempt_ended(end)
            except Exception:
                _failed(o, "attempt_ended")

    def request_ended(self, provider: str, outcome: str) -> None:
        for o in self._by_event["request_ended"]:
            try:
                o.request_ended(provider, outcome)
            except Exception:
                _failed(o, "request_ended")

    def retried(self, provider: str, attempt: int, delay: float) -> None:
        for o in self._by_event["retried"]:
            try:
                o.retried(provider, attempt, delay)
            except Exception:
                _failed(o, "retried")

    def fell_back(self, from_provider: str, to_provider: str, reason: str) -> None:
        for o in self._by_event["fell_back"]:
            try:
                o.fell_back(from_provider, to_provider, reason)
            except Exception:
                _failed(o, "fell_back")

    def breaker_changed(self, transition: BreakerTransition) -> None:
        for o in self._by_event["breaker_changed"]:
            try:
                o.breaker_changed(transition)
            except Exception:
                _failed(o, "breaker_changed")

    def waited(self, providers: Sequence[str], seconds: float, woken: bool) -> None:
        for o in self._by_event["waited"]:
            try:
                o.waited(providers, seconds, woken)
            except Exception:
                _failed(o, "waited")

    def cooled_down(self, provider: str, seconds: float) -> None:
        for o in self._by_event["cooled_down"]:
            try:
                o.cooled_down(provider, seconds)
            except Exception:
                _failed(o, "cooled_down")

    def state_changed(self, degraded: bool, reason: str) -> None:
        for o in self._by_event["state_changed"]:
            try:
                o.state_changed(degraded, reason)
            except Exception:
                _failed(o, "state_changed")

    def __contains__(self, observer: object) -> bool:
        return any(o is observer for o in self._observers)

    def __repr__(self) -> str:
        return f"Observers({list(self._observers)!r})"


_CANCELLED = (asyncio.CancelledError, GeneratorExit, KeyboardInterrupt, SystemExit)


def request_outcome(error: BaseException) -> str:
    """How a request that raised ``error`` ended: ``"cancelled"`` for the endings that are
    no failure (a stream closed early raises ``GeneratorExit`` in it), else ``"failed"``."""
    return "cancelled" if isinstance(error, _CANCELLED) else "failed"


def _failed(observer: Observer, what: str) -> None:
    logger.exception("router observer %r failed on %s", observer, what)


class MetricsObserver(Observer):
    """Keeps each provider's :class:`~._metrics.ProviderMetrics` (``router.metrics()``).

    Accounting: one provider request per turn of a request to a provider, ending in
    exactly one of succeeded, failed, throttled (the provider's own 429), rate limited
    or cancelled; retries on the same provider are tallied apart.
    """

    def __init__(self, metrics_of: Callable[[str], ProviderMetrics | None]) -> None:
        self._metrics_of = metrics_of

    def attempt_ended(self, end: AttemptEnd) -> None:
        m = self._metrics_of(end.provider)
        if m is None:
            return
        if end.first_chunk is not None:
            m.record_first_token(end.first_chunk)
        if end.outcome != "succeeded" and (end.input_tokens or end.output_tokens):
            m.record_usage(end.input_tokens, end.output_tokens, end.cost)
        if not end.ends_request:
            m.record_retry()
        elif end.outcome == "succeeded":
            m.record_success(
                end.latency or 0.0,
                input_tokens=end.input_tokens,
                output_tokens=end.output_tokens,
                cost=end.cost,
            )
        elif end.outcome == "cancelled":
            m.record_cancelled()
        else:
            m.record_failure(
                end.latency,
                timeout=end.kind == "timeout",
                fallback=end.fallback,
                throttled=end.kind == "rate_limited",
            )

    def request_ended(self, provider: str, outcome: str) -> None:
        m = self._metrics_of(provider)
        if m is not None and outcome == "rate_limited":
            m.record_rate_limited()

    def breaker_changed(self, transition: BreakerTransition) -> None:
        m = self._metrics_of(transition.name)
        if m is not None and transition.to_state is BreakerState.OPEN:
            m.record_trip()
