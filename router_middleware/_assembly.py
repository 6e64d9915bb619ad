"""Assembling a router's parts: provider states and bindings, and the pipeline over them."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping

from ._binding import Binding, ProviderTarget
from ._breaker import BreakerTransition
from ._cache import ResponseCache
from ._classify import ErrorClassifier
from ._clock import Clock
from ._config import ModelConfig, ProviderConfig, RouterConfig
from ._config_state import StateConfig
from ._errors import ConfigurationError
from ._memory import InMemoryStore
from ._metrics import ProviderMetrics
from ._observe import Observers
from ._pipeline import Pipeline
from ._prefill import prefill_targets
from ._provider import Provider
from ._storage import StateStore
from ._strategies import SelectionStrategy, get_strategy
from ._tokens import TokenCounter, counter_named

__all__ = [
    "BreakerListener",
    "Listeners",
    "build",
    "follow_shared_state",
    "state_store",
    "with_inferred_providers",
]

BreakerListener = Callable[[BreakerTransition], None]


class Listeners(list[BreakerListener]):
    """The router's breaker listeners, called in order; one that raises is logged, not fatal."""

    def __call__(self, transition: BreakerTransition) -> None:
        for listener in list(self):
            try:
                listener(transition)
            except Exception:
                logging.getLogger("router_middleware").exception(
                    "breaker listener %r failed", listener
                )


def build(
    cfg: RouterConfig,
    targets: Mapping[str, ProviderTarget],
    previous: Mapping[str, Provider],
    *,
    cache: ResponseCache | None = None,
    clock: Clock,
    store: StateStore,
    listeners: Listeners,
    observers: Observers,
    metrics: dict[str, ProviderMetrics],
    strategy: SelectionStrategy | None,
    classifier: ErrorClassifier | None,
    token_counter: TokenCounter | None,
    seed: int | None,
) -> tuple[Pipeline, dict[str, Binding]]:
    """The pipeline over ``cfg``'s providers and how each is called.

    Providers in ``previous`` that remain carry their live state over; the store keys of
    those that are gone are dropped, and ``metrics`` (what the metrics observer reads)
    is made to list exactly the providers built. The previous response ``cache`` is kept
    (its answers, its counters) while its config is unchanged.
    """
    missing = [p.name for p in cfg.providers if p.name not in targets and p.handler is None]
    unknown = [n for n in targets if n not in {p.name for p in cfg.providers}]
    problems = [f"providers.{n}: configured, but no runnable or handler was given" for n in missing]
    problems += [f"{n!r}: a runnable or handler was given, but no provider config" for n in unknown]
    if problems:
        raise ConfigurationError(problems)

    def on_transition(transition: BreakerTransition) -> None:
        listeners(transition)
        observers.breaker_changed(transition)

    bindings = {
        pc.name: Binding(
            pc.name, targets.get(pc.name, pc.handler), tuple(m.name for m in pc.models)
        )
        for pc in cfg.providers
    }
    built = [
        Provider(
            pc,
            cfg,
            clock=clock,
            store=store,
            on_transition=on_transition,
            rng=None if seed is None else random.Random(f"{seed}:{pc.name}"),
            previous=previous.get(pc.name),
        )
        for pc in cfg.providers
    ]
    for name in previous:
        if name not in bindings:
            store.forget(name)
    metrics.clear()
    metrics.update({p.name: p.metrics for p in built})
    pipeline = Pipeline(
        built,
        cfg,
        strategy or get_strategy(cfg.strategy),
        clock,
        observers,
        classifier,
        token_counter or counter_named(cfg.token_counter),
    )
    pipeline.prefill = prefill_targets(
        {pc.name: pc.capabilities.prefill for pc in cfg.providers},
        ((name, m, b.runnable(m)) for name, b in bindings.items() for m in b.models),
    )
    if cfg.cache.enabled:
        keep = cache is not None and cache.config == cfg.cache
        pipeline.cache = cache if keep else ResponseCache(cfg.cache, clock)
    return pipeline, bindings


def with_inferred_providers(
    cfg: RouterConfig, targets: Mapping[str, ProviderTarget]
) -> RouterConfig:
    """Without provider entries, each given runnable serves the model it names."""
    if cfg.providers or not targets:
        return cfg
    inferred = []
    for name, target in targets.items():
        if isinstance(target, Mapping):
            models = list(target)
        else:
            named = getattr(target, "model_name", None) or getattr(target, "model", None)
            models = [named if isinstance(named, str) and named else name]
        inferred.append(ProviderConfig(name=name, models=[ModelConfig(name=m) for m in models]))
    return RouterConfig.model_validate({**cfg.model_dump(), "providers": inferred})


def state_store(config: StateConfig, clock: Clock) -> StateStore:
    """Where the router keeps its state: Redis when ``config.url`` is set, else memory."""
    if config.url is None:
        return InMemoryStore()
    from .redis import shared_store

    return shared_store(config, clock)


def follow_shared_state(
    store: StateStore, wake: Callable[[str], None], observers: Observers
) -> None:
    """Wake local waiters on other replicas' releases, and tell the observers when shared
    state degrades or recovers (stores without these hooks are left alone)."""
    add_release = getattr(store, "add_release_listener", None)
    if add_release is not None:
        add_release(wake)
    add_state = getattr(store, "add_state_listener", None)
    if add_state is not None:
        add_state(observers.state_changed)
