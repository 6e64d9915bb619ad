"""A provider's live state: its runnable(s), limiter, breaker, backoff policy and metrics."""

from __future__ import annotations

import asyncio
import inspect
import random
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableBinding, RunnableLambda

from ._breaker import BreakerState, BreakerTransition, CircuitBreaker
from ._clock import Clock
from ._config import ProviderConfig, RouterConfig, TimeoutConfig
from ._errors import ConfigurationError
from ._limiter import ProviderLimiter
from ._metrics import ProviderMetrics
from ._retry import BackoffPolicy
from ._storage import StateStore
from ._types import LLMRequest, message_from_handler_output
from ._waiting import SlotQueue

__all__ = ["Provider", "ProviderTarget"]

ProviderTarget = Runnable[Any, Any] | Callable[..., Any] | Mapping[str, Runnable[Any, Any]]
"""What serves a provider: a runnable (bound to the chosen model when the provider serves
several), a handler ``(LLMRequest) -> LLMResponse`` (sync or async), or a mapping from
model name to the runnable that serves it."""

_warned_self_retry: set[str] = set()
_warn_lock = threading.Lock()


class Provider:
    """One provider as the router runs it.

    Attributes:
        name, config: identity and configuration.
        enabled: runtime switch (see ``ResilientRouter.disable``).
        limiter, breaker, metrics, backoff: its policies and their live state.
        last_selected: selection sequence number, read by the strategies.
        cooldown_until: clock time before which a ``Retry-After`` (a 429's, or a 503's)
            keeps it skipped.
    """

    __slots__ = (
        "_cost",
        "_runnables",
        "backoff",
        "breaker",
        "config",
        "cooldown_until",
        "enabled",
        "is_handler",
        "last_selected",
        "limiter",
        "metrics",
        "models",
        "name",
        "priority",
        "slots",
        "target",
        "timeouts",
    )

    def __init__(
        self,
        config: ProviderConfig,
        target: ProviderTarget,
        router_config: RouterConfig,
        *,
        clock: Clock,
        store: StateStore | None = None,
        on_transition: Callable[[BreakerTransition], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.enabled = config.enabled
        self.priority = config.priority
        self.models = tuple(m.name for m in config.models)
        self._cost = {m.name: m.average_cost_per_1k for m in config.models}
        self.last_selected = 0
        self.cooldown_until = 0.0
        self.timeouts: TimeoutConfig = config.timeouts or router_config.timeouts
        self.backoff = BackoffPolicy(config.retry or router_config.retry, rng=rng)
        self.metrics = ProviderMetrics()
        self.slots = SlotQueue()
        self.limiter = ProviderLimiter(
            config.rate_limit,
            clock=clock,
            store=store,
            name=self.name,
            on_release=self.slots.notify,
        )
        self.breaker = CircuitBreaker(
            config.circuit_breaker or router_config.circuit_breaker,
            clock=clock,
            name=self.name,
            store=store,
        )
        self.breaker.add_listener(self._on_transition)
        if on_transition is not None:
            self.breaker.add_listener(on_transition)
        self.target = target
        self.is_handler, self._runnables = _runnables_for(self.name, target, self.models)
        for runnable in {id(r): r for r in self._runnables.values()}.values():
            _warn_if_self_retrying(self.name, runnable)

    def _on_transition(self, transition: BreakerTransition) -> None:
        if transition.to_state is BreakerState.OPEN:
            self.metrics.record_trip()

    def runnable(self, model: str) -> Runnable[Any, Any]:
        """The runnable that serves ``model`` here (already bound to it)."""
        return self._runnables[model]

    def serves(self, model: str) -> bool:
        return model in self._cost

    def cost_per_1k(self, model: str | None) -> float:
        """Mean of the input and output price per 1k tokens of ``model`` here."""
        return self._cost[model if model is not None else self.models[0]]

    @property
    def circuit_breaker_state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (the seed's ``circuitBreakerState``)."""
        return self.breaker.state.value

    def adopt_state(self, old: Provider) -> None:
        """Carry over the live state of ``old`` (same name) across a config reload.

        Breaker and bucket state live in the router's store under the provider's name, so
        the new policies continue from it; metrics and selection history move here.
        """
        self.metrics = old.metrics
        self.last_selected = old.last_selected
        self.cooldown_until = old.cooldown_until

    def __repr__(self) -> str:
        return (
            f"Provider(name={self.name!r}, enabled={self.enabled}, models={list(self.models)}, "
            f"priority={self.priority:g}, breaker={self.circuit_breaker_state}, "
            f"in_flight={self.limiter.in_flight})"
        )


def _runnables_for(
    name: str, target: ProviderTarget, models: tuple[str, ...]
) -> tuple[bool, dict[str, Runnable[Any, Any]]]:
    if isinstance(target, Mapping):
        missing = [m for m in models if m not in target]
        extra = [m for m in target if m not in models]
        if missing or extra:
            raise ConfigurationError(
                f"provider {name!r}: runnables given for models {sorted(target)} but its config "
                f"lists {list(models)}"
            )
        return False, {m: _as_runnable(name, target[m]) for m in models}
    if isinstance(target, Runnable):
        if len(models) == 1:
            return False, {models[0]: target}
        return False, {m: target.bind(model=m) for m in models}
    if callable(target):
        handler = _handler_runnable(name, target)
        return True, dict.fromkeys(models, handler)
    raise ConfigurationError(
        f"provider {name!r}: expected a Runnable, a handler function or a mapping of model to "
        f"Runnable, got {type(target).__name__}"
    )


def _as_runnable(name: str, value: Any) -> Runnable[Any, Any]:
    if not isinstance(value, Runnable):
        raise ConfigurationError(
            f"provider {name!r}: per-model targets must be Runnables, got {type(value).__name__}"
        )
    return value


def _handler_runnable(name: str, handler: Callable[..., Any]) -> Runnable[Any, Any]:
    """Wrap a seed-style handler so each attempt is a child run like any runnable's."""
    is_async = inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - async callable objects
    )

    if is_async:

        async def acall(request: LLMRequest) -> BaseMessage:
            return message_from_handler_output(await handler(request), name)

        def call(request: LLMRequest) -> BaseMessage:
            return message_from_handler_output(_run_coroutine_sync(handler(request)), name)

        return RunnableLambda(call, afunc=acall, name=name)

    def call_sync(request: LLMRequest) -> BaseMessage:
        return message_from_handler_output(handler(request), name)

    return RunnableLambda(call_sync, name=name)


def _run_coroutine_sync(coro: Any) -> Any:
    """Run an async handler from sync code, even under a running loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[Any] = []
    error: list[BaseException] = []

    def runner() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=runner, name="router-middleware-handler")
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _warn_if_self_retrying(name: str, runnable: Runnable[Any, Any]) -> None:
    # No RunnableRetry can exist unless its module was loaded: do not import it for this.
    retry_module = sys.modules.get("langchain_core.runnables.retry")
    retry_type = getattr(retry_module, "RunnableRetry", ())
    inner: Any = runnable
    while isinstance(inner, RunnableBinding) and not isinstance(inner, retry_type):
        inner = inner.bound
    retries = getattr(inner, "max_retries", 0)
    if isinstance(inner, retry_type) or (isinstance(retries, int) and retries > 0):
        with _warn_lock:
            if name in _warned_self_retry:
                return
            _warned_self_retry.add(name)
        warnings.warn(
            f"provider {name!r} retries on its own (max_retries={retries}); the router owns "
            "retrying, so build provider clients with max_retries=0 to avoid multiplied retries "
            "and delayed failover",
            RuntimeWarning,
            stacklevel=4,
        )
