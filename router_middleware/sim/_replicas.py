"""Several replicas in one run: the store each replica keeps its state in (its own, one
shared in memory, or Redis on the simulated clock), and one metrics view over them all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._memory import InMemoryStore
from .._storage import StateStore
from ._virtual import LoopClock

if TYPE_CHECKING:
    from .._router import ResilientRouter
    from ._scenario import Scenario

__all__ = ["merged", "percentile", "replica_stores", "store_name"]


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


# Leases are renewed on real time but expire on the run's: long enough never to lapse
# while a simulated call runs (the router releases every slot it takes).
_SIM_LEASE_SECONDS = 86_400.0


class _SharedMemory(InMemoryStore):
    """One in-memory store for every replica of a run: what Redis is to a deployment. A
    release wakes the waiters of every replica, as Redis's release notices do."""

    def __init__(self) -> None:
        super().__init__()
        self._wakes: list[Callable[[str], None]] = []

    def add_release_listener(self, listener: Callable[[str], None]) -> None:
        self._wakes.append(listener)

    def release_slot(self, key: str) -> None:
        super().release_slot(key)
        provider = key.split(":")[1]
        for wake in self._wakes:
            wake(provider)


def replica_stores(
    scenario: Scenario, clock: LoopClock
) -> tuple[list[StateStore], Callable[[], None]]:
    """Each replica's store, and what ends them once the run is over."""
    n = scenario.replicas
    if scenario.state_url is None:
        if scenario.shared_state:
            return [_SharedMemory()] * n, lambda: None
        return [InMemoryStore() for _ in range(n)], lambda: None
    try:
        import redis

        from ..redis import RedisStore
    except ImportError as exc:
        needs = "--state-url needs redis-py: pip install 'router-middleware[redis]'"
        raise ValueError(needs) from exc
    client = redis.Redis.from_url(scenario.state_url)
    # A prefix of its own: runs never meet each other's state, nor a deployment's.
    prefix = f"llmr-sim-{uuid.uuid4().hex[:12]}"
    # One store per replica, as each process of a deployment has its own.
    stores = [
        RedisStore(
            client,
            prefix=prefix,
            lease_seconds=_SIM_LEASE_SECONDS,
            clock=clock,
            time_source="caller",  # the scripts run on the simulated clock
        )
        for _ in range(n)
    ]

    def close() -> None:
        for store in stores:
            store.close()
        for key in client.scan_iter(match=f"{{{prefix}:*", count=1000):
            client.delete(key)
        client.close()

    return list[StateStore](stores), close


def store_name(scenario: Scenario) -> str:
    if scenario.state_url is not None:
        return "redis"
    return "shared memory" if scenario.shared_state else "own memory"


# The counters of a provider's metrics: a run's total is their sum over the replicas.
_COUNTS = (
    "total_requests", "successful_requests", "failed_requests", "rate_limited_requests",
    "cancelled", "circuit_breaker_trips", "retries", "fallbacks", "timeouts", "throttled",
    "input_tokens", "output_tokens", "cost",
)  # fmt: skip


def merged(
    snapshots: list[dict[str, dict[str, Any]]], routers: list[ResilientRouter]
) -> dict[str, dict[str, Any]]:
    """One ``metrics()["providers"]`` over every replica: counts summed, latency
    percentiles over every replica's samples, the breaker's state the worst of them."""
    if len(snapshots) == 1:
        return snapshots[0]
    worst = {"closed": 0, "half_open": 1, "open": 2}
    merged: dict[str, dict[str, Any]] = {}
    for name in snapshots[0]:
        rows = [s[name] for s in snapshots]
        row = dict(rows[0])
        for key in _COUNTS:
            row[key] = sum(r.get(key, 0) for r in rows)
        samples: list[float] = []
        for router in routers:
            window = router.provider_metrics[name].latency
            samples += window._buf[: window.count]
        for p in (50, 95):
            row[f"latency_p{p}"] = percentile(samples, p)
        states = [r["circuit_breaker_state"] for r in rows]
        row["circuit_breaker_state"] = max(states, key=lambda s: worst.get(s, 0))
        merged[name] = row
    return merged
