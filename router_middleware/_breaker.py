"""Circuit breakers: take a failing provider out of rotation, then probe it back in.

The algorithm is a set of pure functions of ``(record, now, config, ...)`` run through
:meth:`StateStore.transact`, so a shared store (Redis) runs the very same logic as the
in-memory default. A record is small and bounded whatever the traffic: the last
``threshold`` failure times for the count rule and a ring of ten sub-window buckets of
``(calls, failures)`` for the optional failure-rate rule.

Every transition bumps the record's *generation*, and a :class:`Permit` carries the
generation it was issued in: an outcome reported on an older permit (a call that
started before the breaker tripped, reset or closed) is stale and never drives state.
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from ._clock import Clock
from ._config import CircuitBreakerConfig
from ._storage import InMemoryStore, StateStore

__all__ = ["BreakerState", "BreakerTransition", "CircuitBreaker", "Permit"]

logger = logging.getLogger("router_middleware")

_Listener = Callable[["BreakerTransition"], None]

# The rate rule's window slides in tenths of ``sampling_duration_seconds``: it always
# covers between 90% and 100% of the configured duration, in constant memory.
_BUCKETS = 10

_SUCCESS, _FAILURE, _IGNORE = 0, 1, 2


class BreakerState(str, Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerTransition:
    """One state change, as given to listeners.

    Example:
        >>> t = BreakerTransition("openai", BreakerState.CLOSED, BreakerState.OPEN, 12.0,
        ...                       "5 failures in 60s")
        >>> t.to_state.value, t.reason
        ('open', '5 failures in 60s')
    """

    name: str
    from_state: BreakerState
    to_state: BreakerState
    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; hand it back to exactly one ``on_*`` method.

    Always hand it back (``on_ignore`` when the call is cancelled): a half-open trial
    permit that is never reported keeps its trial slot until the breaker is reset or
    forced open.

    Example:
        >>> Permit(3).generation
        3
    """

    generation: int


class _Record(NamedTuple):
    """The whole stored state of one breaker: a tuple of primitives and short tuples."""

    state: BreakerState = BreakerState.CLOSED
    generation: int = 0
    opened_at: float = 0.0
    in_flight: int = 0
    failures: tuple[float, ...] = ()
    buckets: tuple[tuple[int, int, int], ...] = ()
    trips: int = 0
    transitions: int = 0


_INITIAL = _Record()
_NO_EVENTS: tuple[BreakerTransition, ...] = ()
_Step = tuple[_Record, tuple[BreakerTransition, ...]]


def _move(rec: _Record, to: BreakerState, now: float, name: str, reason: str) -> _Step:
    """Enter ``to``: a new generation, no trial in flight and an empty window."""
    event = BreakerTransition(name, BreakerState(rec.state), to, now, reason)
    new = _Record(
        state=to,
        generation=rec.generation + 1,
        opened_at=now if to == BreakerState.OPEN else rec.opened_at,
        trips=rec.trips + (to == BreakerState.OPEN),
        transitions=rec.transitions + 1,
    )
    return new, (event,)


def _advance(rec: _Record | None, now: float, cfg: CircuitBreakerConfig, name: str) -> _Step:
    """Apply the lazy OPEN -> HALF_OPEN move once the reset timeout has elapsed."""
    if rec is None:
        return _INITIAL, _NO_EVENTS
    if rec.state == BreakerState.OPEN and now >= rec.opened_at + cfg.reset_timeout_seconds:
        return _move(rec, BreakerState.HALF_OPEN, now, name, "reset timeout elapsed")
    return rec, _NO_EVENTS


def _observe(
    rec: _Record | None, now: float, cfg: CircuitBreakerConfig, name: str
) -> tuple[_Record, _Step]:
    step = _advance(rec, now, cfg, name)
    return step[0], step


def _acquire(
    rec: _Record | None, now: float, cfg: CircuitBreakerConfig, name: str
) -> tuple[_Record, tuple[int | None, tuple[BreakerTransition, ...]]]:
    rec, events = _advance(rec, now, cfg, name)
    if rec.state == BreakerState.CLOSED:
        return rec, (rec.generation, events)
    if rec.state == BreakerState.HALF_OPEN and rec.in_flight < cfg.half_open_max_calls:
        return rec._replace(in_flight=rec.in_flight + 1), (rec.generation, events)
    return rec, (None, events)


def _count_call(
    ring: tuple[tuple[int, int, int], ...], epoch: int, failed: bool
) -> tuple[tuple[tuple[int, int, int], ...], int, int]:
    """Add one call to the ring; return it with the window's total calls and failures."""
    if not ring:
        # Epoch ``epoch - _BUCKETS`` is already outside the window: an empty ring.
        ring = ((epoch - _BUCKETS, 0, 0),) * _BUCKETS
    i = epoch % _BUCKETS
    seen, calls, fails = ring[i]
    if seen != epoch:
        calls = fails = 0
    ring = (*ring[:i], (epoch, calls + 1, fails + failed), *ring[i + 1 :])
    calls = fails = 0
    for seen, c, f in ring:
        if epoch - seen < _BUCKETS:
            calls += c
            fails += f
    return ring, calls, fails


def _closed_outcome(
    rec: _Record, now: float, cfg: CircuitBreakerConfig, name: str, outcome: int
) -> _Step:
    window = cfg.sampling_duration_seconds
    rate = cfg.failure_rate_threshold
    buckets = rec.buckets
    calls = fails = 0
    if rate is not None:
        epoch = int(now // (window / _BUCKETS))
        buckets, calls, fails = _count_call(buckets, epoch, outcome == _FAILURE)
    if outcome == _SUCCESS:
        return (rec, _NO_EVENTS) if rate is None else (rec._replace(buckets=buckets), _NO_EVENTS)
    # Only the last ``threshold`` failures can matter, so only they are kept.
    kept = rec.failures[bisect_right(rec.failures, now - window) :]
    failures = (*kept, now)[-cfg.threshold :]
    if len(failures) >= cfg.threshold:
        return _move(rec, BreakerState.OPEN, now, name, f"{cfg.threshold} failures in {window:g}s")
    if rate is not None and calls >= cfg.minimum_calls and fails / calls >= rate:
        reason = f"{fails}/{calls} calls failed in {window:g}s"
        return _move(rec, BreakerState.OPEN, now, name, reason)
    return rec._replace(failures=failures, buckets=buckets), _NO_EVENTS


def _window_failures(rec: _Record, now: float, cfg: CircuitBreakerConfig) -> int:
    failures = rec.failures
    return len(failures) - bisect_right(failures, now - cfg.sampling_duration_seconds)


def _report(
    rec: _Record | None,
    now: float,
    cfg: CircuitBreakerConfig,
    name: str,
    generation: int,
    outcome: int,
) -> _Step:
    rec, events = _advance(rec, now, cfg, name)
    if generation != rec.generation:
        # Stale permits have no say: their half-open slot, if any, ended with their phase.
        return rec, events
    if rec.state == BreakerState.HALF_OPEN:
        if outcome == _IGNORE:
            return rec._replace(in_flight=max(0, rec.in_flight - 1)), events
        if outcome == _SUCCESS:
            rec, moved = _move(rec, BreakerState.CLOSED, now, name, "trial succeeded")
        else:
            rec, moved = _move(rec, BreakerState.OPEN, now, name, "trial failed")
        return rec, events + moved
    if rec.state == BreakerState.CLOSED and outcome != _IGNORE:
        rec, moved = _closed_outcome(rec, now, cfg, name, outcome)
        return rec, events + moved
    return rec, events


def _reset(rec: _Record | None, now: float, cfg: CircuitBreakerConfig, name: str) -> _Step:
    rec, events = _advance(rec, now, cfg, name)
    if rec.state == BreakerState.CLOSED:
        return rec._replace(failures=(), buckets=()), events
    rec, moved = _move(rec, BreakerState.CLOSED, now, name, "reset")
    return rec, events + moved


def _force_open(rec: _Record | None, now: float, cfg: CircuitBreakerConfig, name: str) -> _Step:
    rec, events = _advance(rec, now, cfg, name)
    if rec.state == BreakerState.OPEN:
        # Already open: forcing it again holds it open for a full reset timeout from now.
        return rec._replace(opened_at=now), events
    rec, moved = _move(rec, BreakerState.OPEN, now, name, "forced open")
    return rec, events + moved


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
        self._clock = clock
        self._name = name
        self._store: StateStore = store if store is not None else InMemoryStore()
        self._key = f"breaker:{name}"
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
        if not self._enabled:
            return self._permit
        rec = self._store.get(self._key)
        if rec is None or rec.state == BreakerState.CLOSED:
            # Closed admits without changing anything: no transaction on the hot path. A
            # trip right after this read makes the permit stale, as if taken just before.
            generation: int | None = 0 if rec is None else rec.generation
        else:
            generation, events = self._store.transact(
                self._key, _acquire, self._clock.now(), self._config, self._name
            )
            if events:
                self._emit(events)
        if generation is None:
            return None
        # Permits of one generation are interchangeable: reuse one instead of allocating.
        permit = self._permit
        if permit.generation != generation:
            permit = self._permit = Permit(generation)
        return permit

    def on_success(self, permit: Permit) -> tuple[BreakerTransition, ...]:
        """The call succeeded: a half-open trial closes the breaker.

        Each ``on_*`` method returns the transitions it caused (usually none), so a caller
        can report them without reading the state again.
        """
        return self._report(permit, _SUCCESS)

    def on_failure(self, permit: Permit) -> tuple[BreakerTransition, ...]:
        """The call failed in a way that counts against the provider."""
        return self._report(permit, _FAILURE)

    def on_ignore(self, permit: Permit) -> tuple[BreakerTransition, ...]:
        """The call ended without a verdict (cancelled, or an error that must not count)."""
        return self._report(permit, _IGNORE)

    def _report(self, permit: Permit, outcome: int) -> tuple[BreakerTransition, ...]:
        if not self._enabled:
            return _NO_EVENTS
        if outcome == _IGNORE or (
            outcome == _SUCCESS and self._config.failure_rate_threshold is None
        ):
            rec = self._store.get(self._key)
            if rec is None or rec.state == BreakerState.CLOSED:
                return _NO_EVENTS  # changes nothing while closed (see _report): no transaction
        events: tuple[BreakerTransition, ...] = self._store.transact(
            self._key,
            _report,
            self._clock.now(),
            self._config,
            self._name,
            permit.generation,
            outcome,
        )
        if events:
            self._emit(events)
        return events

    def reset(self) -> None:
        """Close the breaker and forget its failures."""
        self._apply(_reset)

    def force_open(self) -> None:
        """Open the breaker now; it half-opens after the reset timeout as usual."""
        self._apply(_force_open)

    def _apply(
        self, fn: Callable[[_Record | None, float, CircuitBreakerConfig, str], _Step]
    ) -> None:
        if not self._enabled:
            return
        events = self._store.transact(self._key, fn, self._clock.now(), self._config, self._name)
        if events:
            self._emit(events)

    def _snapshot(self) -> _Record:
        """The record as of now, emitting the lazy half-open transition if it is due."""
        if not self._enabled:
            return _INITIAL
        rec, events = self._store.transact(
            self._key, _observe, self._clock.now(), self._config, self._name
        )
        if events:
            self._emit(events)
        return rec

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
        return _window_failures(self._snapshot(), self._clock.now(), self._config)

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

    def _emit(self, events: tuple[BreakerTransition, ...]) -> None:
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
        rec, _ = _advance(self._store.get(self._key), now, cfg, self._name)
        return (
            f"CircuitBreaker(name={self._name!r}, state={BreakerState(rec.state).value}, "
            f"failures={_window_failures(rec, now, cfg)}/{cfg.threshold} "
            f"in {cfg.sampling_duration_seconds:g}s, trips={rec.trips})"
        )
