"""Runtime control of a router: enable, disable, reset, reload; its metrics view.

A mixin of :class:`~._router.ResilientRouter`: the controls act on the router's live
provider states (its pipeline) and, on reload, rebuild them from a new config, keeping
what the providers that remain have learned, and rebind the routers derived from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, cast

from ._assembly import BreakerListener, build
from ._binding import ProviderTarget
from ._config import RouterConfig
from ._display import MetricsSnapshot, router_html
from ._errors import UnknownProviderError
from ._observe import Observer
from ._provider import Provider

if TYPE_CHECKING:
    import pandas

    from ._assembly import Listeners
    from ._binding import Binding
    from ._derived import Derived
    from ._metrics import ProviderMetrics
    from ._observe import Observers
    from ._pipeline import Pipeline
    from ._router import ResilientRouter
    from ._watch import Display, Watch
    from .settings import RouterSettings

__all__ = ["PARTS", "ConfigLike", "RuntimeControls"]

ConfigLike = RouterConfig | Mapping[str, Any]

PARTS = (
    "clock",
    "store",
    "listeners",
    "observers",
    "strategy",
    "classifier",
    "token_counter",
    "seed",
)
"""What a router is built from besides its config and targets (kept across reloads)."""


class RuntimeControls:
    """Enable, disable, reset and reload a router's providers; read its metrics."""

    if TYPE_CHECKING:
        router_config: RouterConfig
        pipeline: Pipeline
        bindings: dict[str, Binding]
        listeners: Listeners
        observers: Observers
        provider_metrics: dict[str, ProviderMetrics]
        root: ResilientRouter | None
        derived: Derived

    # -- runtime control --------------------------------------------------------------------

    @property
    def providers(self) -> Mapping[str, Provider]:
        """Provider name -> its live state (``.metrics``, ``.circuit_breaker_state``)."""
        return self.pipeline.providers

    def provider(self, name: str) -> Provider:
        try:
            return self.pipeline.providers[name]
        except KeyError:
            raise UnknownProviderError(name, list(self.pipeline.providers)) from None

    def enable(self, name: str) -> None:
        """Put provider ``name`` back in rotation, with no ``Retry-After`` cool-down."""
        provider = self.provider(name)
        provider.enabled = True
        provider.clear_cooldown()
        self.pipeline.invalidate()

    def disable(self, name: str) -> None:
        """Take provider ``name`` out of rotation (requests in flight finish)."""
        self.provider(name).enabled = False
        self.pipeline.invalidate()

    def reset_breaker(self, name: str) -> None:
        """Close provider ``name``'s circuit breaker, forget its failures, end its cool-down."""
        provider = self.provider(name)
        provider.breaker.reset()
        provider.clear_cooldown()

    def add_listener(self, listener: BreakerListener) -> None:
        """Call ``listener`` on every breaker transition of any provider."""
        self.listeners.append(listener)

    def add_observer(self, observer: Observer) -> None:
        """Report every attempt, retry, wait, cool-down and transition to ``observer``."""
        self.observers.add(observer)

    def remove_observer(self, observer: Observer) -> None:
        """Stop reporting to ``observer`` (one never added is ignored)."""
        self.observers.remove(observer)

    def apply_config(
        self,
        config: ConfigLike | RouterSettings,
        providers: Mapping[str, ProviderTarget] | None = None,
    ) -> None:
        """Apply a new config at runtime, keeping the state of providers that remain.

        ``providers`` adds or replaces runnables; providers absent from the new config
        are dropped; the others keep their metrics and breaker state.
        """
        from .settings import RouterSettings, reload_from_settings

        if self.root is not None:
            self.root.apply_config(config, providers)
            return
        if isinstance(config, RouterSettings):
            reload_from_settings(cast("ResilientRouter", self), config, providers)
            return
        old = self.pipeline.providers
        targets: dict[str, ProviderTarget] = {n: b.target for n, b in self.bindings.items()}
        targets.update(providers or {})
        cfg = RouterConfig.coerce(config)
        keep = {p.name for p in cfg.providers}
        pipeline, bindings = build(
            cfg,
            {n: t for n, t in targets.items() if n in keep},
            old,
            metrics=self.provider_metrics,
            cache=self.pipeline.cache,
            **{name: getattr(self, name) for name in PARTS},
        )
        for provider in pipeline.providers.values():
            provider.clear_cooldown()  # a new config is a fresh look at every provider
        self.pipeline, self.bindings = pipeline, bindings
        self.router_config = cfg
        self.derived.rebind(cast("ResilientRouter", self))

    def reload(
        self,
        config: ConfigLike | RouterSettings,
        providers: Mapping[str, ProviderTarget] | None = None,
    ) -> None:
        """Alias of :meth:`apply_config`."""
        self.apply_config(config, providers)

    def metrics(self, scope: Literal["local", "cluster"] = "local") -> dict[str, Any]:
        """A JSON-serialisable snapshot of every provider's metrics and health; with token
        limits, a budget or a context window learnt, their ``token_headroom``,
        ``budget_spent``/``budget_max_cost`` and ``context_refused_at`` (model -> tokens);
        with the response cache, ``cache`` (its counters) and ``cache_hits``/``cache_misses``
        in the totals; with shared state, ``state`` (its URL, password masked, whether
        it is degraded, how often it was).

        ``scope="cluster"`` (shared state only) gives the deployment's counters instead,
        every replica's attempts by outcome, tokens and cost, per provider and in total.
        """
        if scope == "cluster":
            return self._cluster_metrics()
        if scope != "local":
            raise ValueError(f"scope must be 'local' or 'cluster', not {scope!r}")
        providers = {}
        for name, p in self.pipeline.providers.items():
            snap = p.metrics.snapshot()
            snap.update(
                enabled=p.enabled,
                circuit_breaker_state=p.circuit_breaker_state,
                in_flight=p.limiter.in_flight,
                cooldown_seconds=p.cooldown_left,
                cooldown_until=p.cooldown_until,
            )
            if p.tokens is not None:
                snap["token_headroom"] = p.token_headroom
            if p.budget is not None:
                snap["budget_spent"] = p.budget.spent()
                snap["budget_max_cost"] = p.budget.limit
            if p.context_window.learned:
                snap["context_refused_at"] = dict(p.context_window.learned)
            providers[name] = snap
        keys = (
            "total_requests",
            "successful_requests",
            "failed_requests",
            "throttled",
            "rate_limited_requests",
        )
        totals = {k: sum(s[k] for s in providers.values()) for k in keys}
        snapshot = {"providers": providers, "totals": totals}
        if (cache := self.pipeline.cache) is not None:  # hits are no provider requests
            snapshot["cache"] = stats = cache.metrics()
            totals.update(cache_hits=stats["hits"], cache_misses=stats["misses"])
        status = getattr(self.store, "status", None)  # type: ignore[attr-defined]
        if status is not None:  # shared state: where it lives, whether it is degraded
            snapshot["state"] = status()
        return MetricsSnapshot(snapshot)

    def _cluster_metrics(self) -> dict[str, Any]:
        counts = getattr(self.store, "counts", None)  # type: ignore[attr-defined]
        if counts is None or not getattr(self.store, "remote", False):  # type: ignore[attr-defined]
            raise ValueError("metrics(scope='cluster') needs shared state: set state.url")
        providers: dict[str, dict[str, float]] = {}
        for name, p in self.pipeline.providers.items():
            providers[name] = {} if p.counts is None else counts(p.counts.key)
        totals: dict[str, float] = {}
        for found in providers.values():
            for field, value in found.items():
                totals[field] = totals.get(field, 0) + value
        return MetricsSnapshot({"scope": "cluster", "providers": providers, "totals": totals})

    def metrics_frame(self) -> pandas.DataFrame:
        """:meth:`metrics`' providers as a pandas DataFrame (the ``notebook`` extra): one
        row per provider, indexed by name, a column per metric (nested ones as
        ``context_refused_at.<model>``)."""
        from ._frame import metrics_frame

        return metrics_frame(self.metrics())

    def watch(
        self, interval: float = 1.0, *, errors: int = 5, display: Display | None = None
    ) -> Watch:
        """Show a live table of the providers in Jupyter, refreshed in place every
        ``interval`` seconds until ``.stop()`` or the end of a ``with`` block: breaker
        state, in flight, requests per second, the last ``errors`` error kinds, cool-down
        and token headroom. ``display`` defaults to ``IPython.display.display`` (an
        ``ImportError`` without IPython)."""
        from ._watch import Watch

        return Watch(cast("ResilientRouter", self), interval, errors=errors, display=display)

    def _repr_html_(self) -> str:
        return router_html(cast("ResilientRouter", self))
