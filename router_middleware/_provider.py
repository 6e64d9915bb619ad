"""A provider's live state: its gates (cool-down, context window, budget, breaker, token
limits, request bucket and slots), backoff, metrics, token calibration.

How the provider is *called* is its :class:`~._binding.Binding`; this object is what
routers that call it differently share, and what a config reload carries over: the
metrics, the slot queue, the selection history, the token calibration and the context
windows learnt move to the rebuilt state, while breaker, buckets, token windows, budget,
slot counts and cool-down live in the store under the provider's name.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._breaker import BreakerTransition, CircuitBreaker
from ._clock import Clock
from ._config import ProviderConfig, RouterConfig, TimeoutConfig
from ._gates import BreakerGate, CooldownGate, CountGate, Gate, LimiterGate
from ._limiter import ProviderLimiter
from ._metrics import ProviderMetrics
from ._quota_headers import ProviderQuota, quota_from_message
from ._retry import BackoffPolicy
from ._storage import StateStore
from ._token_gates import BudgetGate, ContextWindowGate, TokenGate
from ._tokens import Calibration
from ._waiting import SlotQueue

if TYPE_CHECKING:
    from ._context import RequestContext

__all__ = ["Provider"]


class Provider:
    """One provider as the router runs it.

    Attributes:
        name, config: identity and configuration.
        enabled: runtime switch (see ``ResilientRouter.disable``).
        gates: the admission checks every attempt passes, in order.
        limiter, breaker, metrics, backoff: its policies and their live state.
        tokens, budget: its token limits and budget (``None`` without them).
        counts: its counters in a shared store (``metrics(scope="cluster")``), if any.
        calibration: how its token counts compare with the router's estimates.
        last_selected: selection sequence number, read by the strategies.
        weighs_tokens: whether admission here needs a request's token estimate.
    """

    __slots__ = (
        "_clock",
        "_cooldown",
        "_cost",
        "_prices",
        "attempt_seconds",
        "backoff",
        "breaker",
        "budget",
        "calibration",
        "config",
        "context_window",
        "counts",
        "currency",
        "enabled",
        "gates",
        "last_selected",
        "limiter",
        "metrics",
        "models",
        "name",
        "priority",
        "remote",
        "slots",
        "store",
        "timeouts",
        "tokens",
        "weighs_tokens",
    )

    context_window: ContextWindowGate

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
        self._prices = {
            m.name: (m.cost_per_1k_input_tokens / 1000, m.cost_per_1k_output_tokens / 1000)
            for m in config.models
        }
        self._clock = clock
        self.store = store
        # Admission is a network round trip: the async driver runs it off the event loop.
        self.remote: bool = getattr(store, "remote", False)
        self.timeouts: TimeoutConfig = config.timeouts or router_config.timeouts
        # Read on every attempt: a plain copy (reading the pydantic config costs more).
        self.attempt_seconds = self.timeouts.attempt_seconds
        self.backoff = BackoffPolicy(config.retry or router_config.retry, rng=rng)
        # Carried across a reload: calls admitted before it release into the same queue.
        self.metrics: ProviderMetrics = previous.metrics if previous else ProviderMetrics()
        self.slots: SlotQueue = previous.slots if previous else SlotQueue()
        self.last_selected: int = previous.last_selected if previous else 0
        self.calibration: Calibration = previous.calibration if previous else Calibration()
        self.currency = router_config.currency
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
        learned: dict[str, int] = previous.context_window.learned if previous else {}
        self.context_window = ContextWindowGate(config, self.calibration, learned)
        tokens = TokenGate(
            self.name, config, store, clock, self.calibration, self.slots, self.limiter.concurrency
        )
        self.tokens = tokens if tokens.active else None
        self.budget: BudgetGate | None = None
        if config.budget is not None:
            self.budget = BudgetGate(
                self.name, config, store, clock, self.calibration, self.currency, self.price
            )
        self.weighs_tokens = bool(self.context_window.active or self.tokens or self.budget)
        # Requests that can never fit are turned away before anything is taken for them;
        # the breaker's permit before any limit, so a refused trial takes no tokens.
        gates: list[Gate] = [self._cooldown, self.context_window]
        if self.budget is not None:
            gates.append(self.budget)
        if self.breaker.config.enabled:
            gates.append(BreakerGate(self.breaker, self.slots))
        if self.tokens is not None:
            gates.append(self.tokens)
        gates.append(LimiterGate(self.limiter, self.slots))
        # The deployment's metrics, counted in each settle (shared stores only).
        self.counts: CountGate | None = None
        if hasattr(store, "counts") and self.remote:
            self.counts = CountGate(self.name, store, self.price)
            gates.append(self.counts)
        self.gates: tuple[Gate, ...] = tuple(gates)

    def now(self) -> float:
        return self._clock.now()

    def serves(self, model: str) -> bool:
        return model in self._cost

    def cost_per_1k(self, model: str | None) -> float:
        """Mean of the input and output price per 1k tokens of ``model`` here."""
        return self._cost[model if model is not None else self.models[0]]

    def price(self, model: str, tokens_in: int, tokens_out: int) -> tuple[float, float]:
        """What ``tokens_in`` input and ``tokens_out`` output tokens of ``model`` cost here,
        in the currency of its prices (0 for a model it does not serve)."""
        price_in, price_out = self._prices.get(model, (0.0, 0.0))
        return tokens_in * price_in, tokens_out * price_out

    def learn(self, message: Any, context: RequestContext | None, tokens_in: int) -> None:
        """What an answer says about the provider: the quota it has left (rate-limit
        headers), and how it counts tokens (against the request's estimate, if one was
        made: only requests that limits weighed are estimated)."""
        quota = quota_from_message(message)
        if quota is not None:
            self.heed(quota)
        if tokens_in and context is not None and context.estimated:
            self.calibration.observe(context.estimated_tokens(), tokens_in)

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

    @property
    def token_headroom(self) -> float | None:
        """Tokens its own token limits would admit now; ``None`` without token limits."""
        return None if self.tokens is None else self.tokens.headroom()

    def heed(self, quota: ProviderQuota) -> None:
        """The provider said how much quota it has left: the local limits never assume
        more (its request bucket, its token windows)."""
        bucket = self.limiter.bucket
        if bucket is not None and quota.requests_remaining is not None:
            bucket.cap(quota.requests_remaining)
        if self.tokens is not None:
            self.tokens.cap(
                (
                    quota.tokens_remaining,
                    quota.input_tokens_remaining,
                    quota.output_tokens_remaining,
                ),
                (
                    quota.tokens_reset_seconds,
                    quota.input_tokens_reset_seconds,
                    quota.output_tokens_reset_seconds,
                ),
            )

    def __repr__(self) -> str:
        return (
            f"Provider(name={self.name!r}, enabled={self.enabled}, models={list(self.models)}, "
            f"priority={self.priority:g}, breaker={self.circuit_breaker_state}, "
            f"in_flight={self.limiter.in_flight})"
        )
