"""How the store's values travel to and from its scripts: keys by index, breaker configs
as six arguments, numbers as text, breaker records and transitions back into Python, in
the caller's clock (``shift``: the caller's time minus the server's, as one reply
measured it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .._breaker_algorithm import BreakerRecord, BreakerState, BreakerTransition
from .._config import CircuitBreakerConfig
from .._ops import AcquirePermit, AdmitOp, CheckCooldown, TakeSlot, TakeWindows
from .._storage import Transitions

__all__ = ["Keys", "admission_answer", "breaker_config", "provider_of", "record", "transitions"]


def breaker_config(cfg: CircuitBreakerConfig) -> list[Any]:
    rate = cfg.failure_rate_threshold
    return [
        cfg.threshold,
        cfg.sampling_duration_seconds,
        cfg.reset_timeout_seconds,
        cfg.half_open_max_calls,
        "" if rate is None else rate,
        cfg.minimum_calls,
    ]


def transitions(raw: Sequence[Any], name: str, shift: float) -> Transitions:
    return tuple(
        BreakerTransition(
            name,
            BreakerState(frm.decode()),
            BreakerState(to.decode()),
            float(at) + shift,
            reason.decode(),
        )
        for frm, to, at, reason in raw
    )


def record(raw: Any, shift: float) -> BreakerRecord | None:
    if not raw:
        return None
    state, generation, opened_at, in_flight, failures, buckets, trips, transitions = raw
    return BreakerRecord(
        BreakerState(state.decode()),
        int(generation),
        float(opened_at) + shift,
        int(in_flight),
        tuple(float(f) + shift for f in failures),
        tuple((int(e), int(c), int(f)) for e, c, f in buckets),
        int(trips),
        int(transitions),
    )


class Keys:
    """The keys one script touches, each named once; ops refer to them by 1-based index."""

    __slots__ = ("index", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        found = self.index.get(key)
        if found is None:
            self.names.append(key)
            found = self.index[key] = len(self.names)
        return found


def provider_of(key: str) -> str:
    """The provider in a key's hash tag: ``{prefix:provider}:what``."""
    return key[key.index(":") + 1 : key.index("}")]


def admission_answer(op: AdmitOp, raw: Any, shift: float) -> Any:
    """One admission answer, as the store protocol gives it (see ``_ops``)."""
    match op:
        case CheckCooldown():
            return float(raw)
        case AcquirePermit(_, _, name):
            generation = None if raw[0] is None else int(raw[0])
            return generation, transitions(raw[1], name, shift), float(raw[2])
        case TakeSlot():
            return float(raw[0]), int(raw[1]), float(raw[2])
        case TakeWindows():
            return float(raw[0]), int(float(raw[1]))
    # Spend: the period's start goes back to AdjustSpend as it came, never shifted.
    return float(raw[0]), float(raw[1])
