"""The circuit breaker's algorithm: pure functions of ``(record, now, config, ...)``.

A record is small and bounded whatever the traffic: the last ``threshold`` failure times
for the count rule and a ring of ten sub-window buckets of ``(calls, failures)`` for the
optional failure-rate rule. Every transition bumps the record's *generation*; an outcome
reported with an older generation (a call that started before the breaker tripped,
reset or closed) is stale and never drives state.

Storage backends run these functions atomically (``_storage``): the in-memory store
under its lock, a shared store as one server-side script.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

from ._config import CircuitBreakerConfig

__all__ = [
    "FAILURE",
    "IGNORE",
    "INITIAL",
    "NO_EVENTS",
    "SUCCESS",
    "BreakerRecord",
    "BreakerState",
    "BreakerTransition",
    "Permit",
    "acquire",
    "advance",
    "force_open",
    "report",
    "reset",
    "window_failures",
]

# The rate rule's window slides in tenths of ``sampling_duration_seconds``: it always
# covers between 90% and 100% of the configured duration, in constant memory.
_BUCKETS = 10

SUCCESS, FAILURE, IGNORE = 0, 1, 2
"""Outcomes a permit is reported with."""


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


class BreakerRecord(NamedTuple):
    """The whole stored state of one breaker: a tuple of primitives and short tuples."""

    state: BreakerState = BreakerState.CLOSED
    generation: int = 0
    opened_at: float = 0.0
    in_flight: int = 0
    failures: tuple[float, ...] = ()
    buckets: tuple[tuple[int, int, int], ...] = ()
    trips: int = 0
    transitions: int = 0


INITIAL = BreakerRecord()
NO_EVENTS: tuple[BreakerTransition, ...] = ()
_Step = tuple[BreakerRecord, tuple[BreakerTransition, ...]]


def _move(rec: BreakerRecord, to: BreakerState, now: float, name: str, reason: str) -> _Step:
    """Enter ``to``: a new generation, no trial in flight and an empty window."""
    event = BreakerTransition(name, BreakerState(rec.state), to, now, reason)
    new = BreakerRecord(
        state=to,
        generation=rec.generation + 1,
        opened_at=now if to == BreakerState.OPEN else rec.opened_at,
        trips=rec.trips + (to == BreakerState.OPEN),
        transitions=rec.transitions + 1,
    )
    return new, (event,)


def advance(rec: BreakerRecord | None, now: float, cfg: CircuitBreakerConfig, name: str) -> _Step:
    """Apply the lazy OPEN -> HALF_OPEN move once the reset timeout has elapsed."""
    if rec is None:
        return INITIAL, NO_EVENTS
    if rec.state == BreakerState.OPEN and now >= rec.opened_at + cfg.reset_timeout_seconds:
        return _move(rec, BreakerState.HALF_OPEN, now, name, "reset timeout elapsed")
    return rec, NO_EVENTS


def acquire(
    rec: BreakerRecord | None, now: float, cfg: CircuitBreakerConfig, name: str
) -> tuple[BreakerRecord, tuple[int | None, tuple[BreakerTransition, ...]]]:
    rec, events = advance(rec, now, cfg, name)
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
    rec: BreakerRecord, now: float, cfg: CircuitBreakerConfig, name: str, outcome: int
) -> _Step:
    window = cfg.sampling_duration_seconds
    rate = cfg.failure_rate_threshold
    buckets = rec.buckets
    calls = fails = 0
    if rate is not None:
        epoch = int(now // (window / _BUCKETS))
        buckets, calls, fails = _count_call(buckets, epoch, outcome == FAILURE)
    if outcome == SUCCESS:
        return (rec, NO_EVENTS) if rate is None else (rec._replace(buckets=buckets), NO_EVENTS)
    # Only the last ``threshold`` failures can matter, so only they are kept.
    kept = rec.failures[bisect_right(rec.failures, now - window) :]
    failures = (*kept, now)[-cfg.threshold :]
    if len(failures) >= cfg.threshold:
        return _move(rec, BreakerState.OPEN, now, name, f"{cfg.threshold} failures in {window:g}s")
    if rate is not None and calls >= cfg.minimum_calls and fails / calls >= rate:
        reason = f"{fails}/{calls} calls failed in {window:g}s"
        return _move(rec, BreakerState.OPEN, now, name, reason)
    return rec._replace(failures=failures, buckets=buckets), NO_EVENTS


def window_failures(rec: BreakerRecord, now: float, cfg: CircuitBreakerConfig) -> int:
    failures = rec.failures
    return len(failures) - bisect_right(failures, now - cfg.sampling_duration_seconds)


def report(
    rec: BreakerRecord | None,
    now: float,
    cfg: CircuitBreakerConfig,
    name: str,
    generation: int,
    outcome: int,
) -> _Step:
    rec, events = advance(rec, now, cfg, name)
    if generation != rec.generation:
        # Stale permits have no say: their half-open slot, if any, ended with their phase.
        return rec, events
    if rec.state == BreakerState.HALF_OPEN:
        if outcome == IGNORE:
            return rec._replace(in_flight=max(0, rec.in_flight - 1)), events
        if outcome == SUCCESS:
            rec, moved = _move(rec, BreakerState.CLOSED, now, name, "trial succeeded")
        else:
            rec, moved = _move(rec, BreakerState.OPEN, now, name, "trial failed")
        return rec, events + moved
    if rec.state == BreakerState.CLOSED and outcome != IGNORE:
        rec, moved = _closed_outcome(rec, now, cfg, name, outcome)
        return rec, events + moved
    return rec, events


def reset(rec: BreakerRecord | None, now: float, cfg: CircuitBreakerConfig, name: str) -> _Step:
    rec, events = advance(rec, now, cfg, name)
    if rec.state == BreakerState.CLOSED:
        return rec._replace(failures=(), buckets=()), events
    rec, moved = _move(rec, BreakerState.CLOSED, now, name, "reset")
    return rec, events + moved


def force_open(
    rec: BreakerRecord | None, now: float, cfg: CircuitBreakerConfig, name: str
) -> _Step:
    rec, events = advance(rec, now, cfg, name)
    if rec.state == BreakerState.OPEN:
        # Already open: forcing it again holds it open for a full reset timeout from now.
        return rec._replace(opened_at=now), events
    rec, moved = _move(rec, BreakerState.OPEN, now, name, "forced open")
    return rec, events + moved
