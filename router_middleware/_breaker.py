"""Circuit breakers: take a failing provider out of rotation, then probe it back in.

:class:`CircuitBreaker` is the policy object; its algorithm is the pure functions of
``_breaker_algorithm``, carried out by a :class:`~._storage.StateStore` as domain
operations (acquire a permit, report an outcome, reset), so a shared store runs the very
same logic as the in-memory default. A :class:`Permit` carries the generation it was
issued in: outcomes of calls admitted before a transition never drive the new state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from ._breaker_algorithm import (
    FAILURE,
    IGNORE,
    INITIAL,
    NO_EVENTS,
    SUCCESS,
    BreakerRecord,
    BreakerState,
    BreakerTransition,
    Permit,
    advance,
    window_failures,
)
from ._clock import Clock
from ._config import CircuitBreakerConfig
from ._memory import InMemoryStore
from ._storage import StateStore

__all__ = ["BreakerState", "BreakerTransition", "CircuitBreaker", "Permit"]

logger = logging.getLogger("router_middleware")

_Listener = Callable[[BreakerTransition], None]


class CircuitBreaker:
    """A circuit breaker for one provider.

    Call :meth:`try_acquire` before each call (``None`` means skip the provider), then
    report the outcome with :meth:`on_success`, :meth:`on_failure` or :meth:`on_ignore`.
    The state lives in ``store`` under the key ``"breaker:<name>"``; breakers that share
    a store and a name share one state.

    Example:
        >>> from router_middleware._clock import FakeClock
        >>> clock = FakeClock()
        >>> cfg = CircuitBreakerConfig(threshold=2, reset_timeout_seconds=10)
        >>> breaker = CircuitBreaker(cfg, clock=clock, name="openai")
        >>> breaker.on_failure(breaker.try_acquire())
        ()
        >>> [t.to_state.value for t in breaker.on_failure(breaker.try_acquire())]
        ['open']
        >>> breaker.state.value, breaker.try_acquire(), breaker.retry_after()
        ('open', None, 10.0)
        >>> clock.advance(10)
        >>> _ = breaker.on_success(breaker.try_acquire())  # the half-open trial
        >>> breaker
        CircuitBreaker(name='openai', state=closed, failures=0/2 in 60s, trips=1)
    """

    __slots__ = (
        "_clock",
        "_config",
        "_enabled",
        "_key",
        "_listeners",
        "_listeners_lock",
        "_name",
        "_permit",
        "_rate_rule",
        "_store",
    )

    def __init__(
        self,
        config: CircuitBreakerConfig,
        *,
        clock: Clock,
        name: str = "",
        store: StateStore | None = None,
        listeners: Iterable[_Listener] = (),
    ) -> None:
        self._config = config
        self._enabled = config.enabled
        # Whether the failure-rate rule (which counts successes) is on: read on every
        # success, so a plain copy (a read of the pydantic config costs several times more).
        self._rate_rule = config.failure_rate_threshold is not None
        self._clock = clock
        self._name = name
        self._store: StateStore = store if store is not None else InMemoryStore()
        self._key = self._store.key(f"{name}:breaker")
        # Copy-on-write, so emitting iterates a snapshot without holding any lock.
        self._listeners: tuple[_Listener, ...] = tuple(listeners)
        self._listeners_lock = threading.Lock()
        self._permit = Permit(-1)

    @property
    def name(self) -> str:
        return self._name

    @property
    def config(self) -> CircuitBreakerConfig:
        return self._config

    def try_acquire(self) -> Permit | None:
        """Leave to call the provider now, or ``None`` when the breaker rejects the call."""
        return self.acquire()[0]

    def acquire(self) -> tuple[Permit | None, tuple[BreakerTransition, ...]]:
        """:meth:`try_acquire`, with the transitions the acquisition caused (a half-open)."""
        if not self._enabled:
            return self._permit, NO_EVENTS
        rec = self._store.breaker_record(self._key)
        events = NO_EVENTS
        if rec is None or rec.state == BreakerState.CLOSED:
            # Closed admits without changing anything: no transaction on the hot path. A
            # trip right after this read makes the permit stale, as if taken just before.
            generation: int | None = 0 if rec is None else rec.generation
        else:
            generation, events = self._store.breaker_acquire(
                self._key, self._clock.now(), self._config, self._name
            )
            if events:
                self.emit(events)
        if generation is None:
            return None, events
        return self.permit(generation), events

    def permit(self, generation: int) -> Permit:
        """A permit of ``generation``, as an admission granted it."""
        # Permits of one generation are interchangeable: reuse one instead of allocating.
        permit = self._permit
        if permit.generation != generation:
            permit = self._permit = Permit(generation)
        return permit

    @property
    def key(self) -> str:
        """This breaker's key in its store."""
        return self._key

    def on_success(self, permit: Permit) -> tuple[BreakerTransition, ...]:
        """The call succeeded: a half-open trial closes the breaker.

        Each ``on_*`` method returns the transitions it caused (usually none), so a caller
        can report them without reading the state again.
        """
        return self._report(permit, SUCCESS)

    def on_failure(self, permit: Permit) -> tuple[BreakerTransition, ...]:
        """The call failed in a way that counts against the provider."""
        return self._report(permit, FAILURE)

    def on_ignore(self, permit: Permit) -> tuple[BreakerTransition, ...]:
        """The call ended without a verdict (cancelled, or an error that must not count)."""
        return self._report(permit, IGNORE)

    def _report(self, permit: Permit, outcome: int) -> tuple[BreakerTransition, ...]:
        if not self._enabled:
            return NO_EVENTS
        if outcome == IGNORE or (outcome == SUCCESS and not self._rate_rule):
            rec = self._store.breaker_record(self._key)
            if rec is None or rec.state == BreakerState.CLOSED:
                return NO_EVENTS  # changes nothing while closed: no transaction
        events = self._store.breaker_report(
            self._key, self._clock.now(), self._config, self._name, permit.generation, outcome
        )
        if events:
            self.emit(events)
        return events

    def reset(self) -> tuple[BreakerTransition, ...]:
        """Close the breaker and forget its failures; returns the transitions."""
        return self._command("reset")[1]

    def force_open(self) -> tuple[BreakerTransition, ...]:
        """Open the breaker now; it half-opens after the reset timeout as usual."""
        return self._command("force_open")[1]

    def _snapshot(self) -> BreakerRecord:
        """The record as of now, emitting the lazy half-open transition if it is due."""
        return self._command("observe")[0]

    def _command(self, command: str) -> tuple[BreakerRecord, tuple[BreakerTransition, ...]]:
        if not self._enabled:
            return INITIAL, NO_EVENTS
        rec, events = self._store.breaker_command(
            self._key, command, self._clock.now(), self._config, self._name
        )
        if events:
            self.emit(events)
        return rec, events

    def is_open(self) -> bool:
        """Whether the breaker rejects calls until its reset timeout (half-open is not)."""
        return self._enabled and self._snapshot().state == BreakerState.OPEN

    @property
    def state(self) -> BreakerState:
        return BreakerState(self._snapshot().state)

    @property
    def trips(self) -> int:
        """How many times the breaker has opened."""
        return self._snapshot().trips

    @property
    def transitions(self) -> int:
        """How many state changes the breaker has made."""
        return self._snapshot().transitions

    def retry_after(self) -> float:
        """Seconds until an open breaker half-opens; 0 when it is not open."""
        rec = self._snapshot()
        if rec.state != BreakerState.OPEN:
            return 0.0
        return max(0.0, rec.opened_at + self._config.reset_timeout_seconds - self._clock.now())

    def failures_in_window(self) -> int:
        """Failures counted towards ``threshold`` in the current window."""
        return window_failures(self._snapshot(), self._clock.now(), self._config)

    def add_listener(self, listener: _Listener) -> None:
        """Call ``listener(transition)`` after every state change, after earlier listeners."""
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: _Listener) -> None:
        """Stop calling ``listener``. Raises ValueError if it was not added."""
        with self._listeners_lock:
            listeners = list(self._listeners)
            listeners.remove(listener)
            self._listeners = tuple(listeners)

    def emit(self, events: tuple[BreakerTransition, ...]) -> None:
        """Tell the listeners about ``events`` (transitions a store operation caused)."""
        listeners = self._listeners
        for event in events:
            for listener in listeners:
                try:
                    listener(event)
                except Exception:
                    logger.exception(
                        "circuit breaker %r: listener %r failed on %s -> %s",
                        self._name,
                        listener,
                        event.from_state.value,
                        event.to_state.value,
                    )

    def __repr__(self) -> str:
        cfg = self._config
        if not self._enabled:
            return f"CircuitBreaker(name={self._name!r}, disabled)"
        now = self._clock.now()
        # _advance is pure: show the live state without emitting anything from repr.
        rec, _ = advance(self._store.breaker_record(self._key), now, cfg, self._name)
        return (
            f"CircuitBreaker(name={self._name!r}, state={BreakerState(rec.state).value}, "
            f"failures={window_failures(rec, now, cfg)}/{cfg.threshold} "
            f"in {cfg.sampling_duration_seconds:g}s, trips={rec.trips})"
        )
