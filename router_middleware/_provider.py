"""A provider's live state: its gates (cool-down, breaker, bucket, slots), backoff, metrics.

How the provider is *called* is its :class:`~._binding.Binding`; this object is what
routers that call it differently share, and what a config reload carries over: the
metrics, the slot queue and the selection history move to the rebuilt state, while
breaker, bucket, slot counts and cool-down live in the store under the provider's name.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from ._breaker import BreakerTransition, CircuitBreaker
from ._clock import Clock
from ._config import ProviderConfig, RouterConfig, TimeoutConfig
from ._gates import BreakerGate, CooldownGate, Gate, LimiterGate
from ._limiter import ProviderLimiter
from ._metrics import ProviderMetrics
from ._retry import BackoffPolicy
from ._storage import StateStore
from ._waiting import SlotQueue

__all__ = ["Provider"]


class Provider:
    """One provider as the router runs it.

    Attributes:
        name, config: identity and configuration.
        enabled: runtime switch (see ``ResilientRouter.disable``).
        gates: the admission checks every attempt passes, in order.
        limiter, breaker, metrics, backoff: its policies and their live state.
        last_selected: selection sequence number, read by the strategies.
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "_cost",
        "attempt_seconds",
        "backoff",
        "breaker",
        "config",
        "enabled",
        "gates",
        "last_selected",
        "limiter",
        "metrics",
        "models",
        "name",
        "priority",
        "slots",
        "timeouts",
    )

    def __init__(
        self,
        config: ProviderConfig,
        router_config: RouterConfig,
        *,
        clock: Clock,
        store: StateStore,
        on_transition: Callable[[BreakerTransition], None] | None = None,
        rng: random.Random | None = None,
        previous: Provider | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.enabled = config.enabled
        self.priority = config.priority
        self.models = tuple(m.name for m in config.models)
        self._cost = {m.name: m.average_cost_per_1k for m in config.models}
        self._clock = clock
        self.timeouts: TimeoutConfig = config.timeouts or router_config.timeouts
        # Read on every attempt: a plain copy (reading the pydantic config costs more).
        self.attempt_seconds = self.timeouts.attempt_seconds
        self.backoff = BackoffPolicy(config.retry or router_config.retry, rng=rng)
        # Carried across a reload: calls admitted before it release into the same queue.
        self.metrics: ProviderMetrics = previous.metrics if previous else ProviderMetrics()
        self.slots: SlotQueue = previous.slots if previous else SlotQueue()
        self.last_selected: int = previous.last_selected if previous else 0
        # Its slots are released by the limiter gate, which wakes the queue itself.
        self.limiter = ProviderLimiter(config.rate_limit, clock=clock, store=store, name=self.name)
        self.breaker = CircuitBreaker(
            config.circuit_breaker or router_config.circuit_breaker,
            clock=clock,
            name=self.name,
            store=store,
        )
        if on_transition is not None:
            self.breaker.add_listener(on_transition)
        self._cooldown = CooldownGate(self.name, store, clock, router_config.max_cooldown_seconds)
        gates: list[Gate] = [self._cooldown]
        if self.breaker.config.enabled:
            gates.append(BreakerGate(self.breaker, self.slots))
        gates.append(LimiterGate(self.limiter, self.slots))
        self.gates: tuple[Gate, ...] = tuple(gates)

    def serves(self, model: str) -> bool:
        return model in self._cost

    def cost_per_1k(self, model: str | None) -> float:
        """Mean of the input and output price per 1k tokens of ``model`` here."""
        return self._cost[model if model is not None else self.models[0]]

    @property
    def circuit_breaker_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (the seed's ``circuitBreakerState``)."""
        return self.breaker.state.value

    @property
    def cooldown_left(self) -> float:
        """Seconds until a ``Retry-After`` cool-down ends; 0.0 when none is in force."""
        return max(0.0, self._cooldown.until() - self._clock.now())

    @property
    def cooldown_until(self) -> float | None:
        """Wall-clock epoch seconds a cool-down in force ends; ``None`` when none is."""
        left = self.cooldown_left
        return time.time() + left if left else None

    def clear_cooldown(self) -> None:
        self._cooldown.clear()

    def __repr__(self) -> str:
        return (
            f"Provider(name={self.name!r}, enabled={self.enabled}, models={list(self.models)}, "
            f"priority={self.priority:g}, breaker={self.circuit_breaker_state}, "
            f"in_flight={self.limiter.in_flight})"
        )
