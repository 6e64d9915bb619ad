"""Prometheus metrics for a router: an observer for what happens, a collector for what is.

:class:`PrometheusExporter` is an :class:`~router_middleware.Observer`: counters and
histograms move on the router's events (attempts, retries, fallbacks, breaker
transitions, waits, cool-downs), and nothing else runs per request. What a provider *is*
now (breaker state, calls in flight, cool-down left, token headroom, budget spent) is
read from the router's live providers when Prometheus scrapes, so it follows reloads and
costs nothing between scrapes.

Names follow the OpenTelemetry GenAI metrics where one exists
(``gen_ai_client_operation_duration_seconds``, ``gen_ai_client_token_usage``), with a
``llm_router_`` prefix otherwise. Every label value comes from the configuration
(provider, model, currency) or a closed set (outcome, error kind, breaker state): no
text of a request ever becomes a label, so the number of series is bounded.

Example:
    >>> from prometheus_client import generate_latest
    >>> from router_middleware import ResilientRouter
    >>> from router_middleware.testing import ScriptedChatModel
    >>> router = ResilientRouter({"a": ScriptedChatModel(text="hi", usage=(5, 2))})
    >>> exporter = PrometheusExporter.attach(router)
    >>> router.invoke("hello").content
    'hi'
    >>> sample = exporter.registry.get_sample_value
    >>> labels = {"provider": "a", "model": "a", "outcome": "succeeded", "error_kind": ""}
    >>> sample("llm_router_attempts_total", labels)
    1.0
    >>> tokens = {"provider": "a", "model": "a", "token_type": "input"}
    >>> sample("gen_ai_client_token_usage_sum", tokens)
    5.0
    >>> sample("llm_router_breaker_state", {"provider": "a"})
    0.0
    >>> b"llm_router_in_flight" in generate_latest(exporter.registry)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._breaker import BreakerState, BreakerTransition
from .._observe import AttemptEnd
from ._follow import Following

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from .._router import ResilientRouter

__all__ = ["PrometheusExporter"]

# OpenTelemetry GenAI's advised buckets for gen_ai.client.operation.duration and
# gen_ai.client.token.usage; its gen_ai.server.time_to_first_token ones for the first token.
DURATION_BUCKETS = tuple(0.01 * 2**i for i in range(14))  # 0.01 .. 81.92
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1 .. 67,108,864
FIRST_TOKEN_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1)
FIRST_TOKEN_BUCKETS += (0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
WAIT_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

BREAKER_VALUE = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}
"""``llm_router_breaker_state``: 0 closed, 1 half-open, 2 open."""

_Child = TypeVar("_Child")


class PrometheusExporter(Following):
    """A router's metrics in a Prometheus registry (its own unless ``registry`` is given).

    Attach it with :meth:`attach` (or ``router.add_observer(exporter)`` and
    :meth:`watch`, for the scrape-time gauges); serve it with :meth:`serve` or
    :meth:`asgi_app`. One exporter follows one router (and the routers derived from it);
    pass ``prometheus_client.REGISTRY`` as ``registry`` to expose it with the process's
    default metrics.

    Example:
        >>> from router_middleware import ResilientRouter
        >>> from router_middleware.testing import ScriptedChatModel
        >>> exporter = PrometheusExporter()
        >>> router = ResilientRouter({"a": ScriptedChatModel()}, observers=[exporter])
        >>> exporter.watch(router) is exporter
        True
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.attempts = Counter(
            "llm_router_attempts",
            "Provider attempts by how they ended (outcome: succeeded, failed, ignored, "
            "cancelled; error_kind: the failure's kind).",
            ["provider", "model", "outcome", "error_kind"],
            registry=r,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Duration of provider attempts, as the router saw them.",
            ["provider", "model", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "llm_router_time_to_first_token_seconds",
            "Seconds from a streamed attempt's start to its first chunk.",
            ["provider", "model"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per attempt that reported usage, by gen_ai.token.type (input, output).",
            ["provider", "model", "token_type"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.cost = Counter(
            "llm_router_cost",
            "Cost of the tokens providers reported, from the models' prices.",
            ["provider", "model", "currency"],
            registry=r,
        )
        self.retries = Counter(
            "llm_router_retries",
            "Attempts after which the router tried the same provider again.",
            ["provider", "model", "error_kind"],
            registry=r,
        )
        self.fallbacks = Counter(
            "llm_router_fallbacks",
            "Requests that left a provider after a failure (reason: its error kind) and "
            "were admitted by another.",
            ["from_provider", "to_provider", "reason"],
            registry=r,
        )
        self.rate_limited = Counter(
            "llm_router_rate_limited",
            "Provider requests the router's own limits turned away (never admitted there).",
            ["provider"],
            registry=r,
        )
        self.transitions = Counter(
            "llm_router_breaker_transitions",
            "Circuit breaker transitions.",
            ["provider", "from_state", "to_state"],
            registry=r,
        )
        self.cooldowns = Counter(
            "llm_router_cooldowns",
            "Times a provider asked for time (Retry-After) and was skipped for it.",
            ["provider"],
            registry=r,
        )
        self.waits = Histogram(
            "llm_router_limiter_wait_seconds",
            "Waits of requests for capacity (woken: a release ended the wait).",
            ["woken"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        r.register(_LiveState(self))
        # Children by label values: labels() takes a lock and checks its arguments on
        # every call, a dict lookup does not. A race makes a child twice, harmlessly
        # (prometheus_client returns the same one).
        self._attempts: dict[tuple[str, str, str, str], Any] = {}
        self._duration: dict[tuple[str, str, str], Any] = {}
        self._first_token: dict[tuple[str, str], Any] = {}
        self._tokens: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._cost: dict[tuple[str, str, str], Any] = {}
        self._retries: dict[tuple[str, str, str], Any] = {}

    # -- attaching, serving -----------------------------------------------------------------

    @classmethod
    def attach(
        cls, router: ResilientRouter, registry: CollectorRegistry | None = None
    ) -> PrometheusExporter:
        """A new exporter, observing ``router`` and reading its providers at scrape time."""
        exporter = cls(registry)
        return exporter.watch(router)

    def serve(self, port: int = 9464, addr: str = "127.0.0.1") -> WSGIServer:
        """Serve ``/metrics`` over HTTP on a daemon thread (``prometheus_client``'s
        ``start_http_server`` with this registry); ``server.shutdown()`` stops it.

        Binds to loopback unless ``addr`` says otherwise (``"0.0.0.0"``: every interface).
        """
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return server

    def asgi_app(self) -> Callable[..., Any]:
        """An ASGI app serving this registry (mount it at ``/metrics`` in your server)."""
        from prometheus_client import make_asgi_app

        return make_asgi_app(self.registry)

    # -- events -----------------------------------------------------------------------------

    def attempt_ended(self, end: AttemptEnd) -> None:
        provider, model, outcome, kind = end.provider, end.model, end.outcome, end.kind or ""
        _child(self._attempts, self.attempts, (provider, model, outcome, kind)).inc()
        if end.latency is not None:
            _child(self._duration, self.duration, (provider, model, outcome)).observe(end.latency)
        if end.first_chunk is not None:
            _child(self._first_token, self.first_token, (provider, model)).observe(end.first_chunk)
        if end.input_tokens or end.output_tokens:
            self._record_usage(end)
        if not end.ends_request:
            _child(self._retries, self.retries, (provider, model, kind)).inc()

    def _record_usage(self, end: AttemptEnd) -> None:
        key = (end.provider, end.model)
        pair = self._tokens.get(key)
        if pair is None:
            pair = self._tokens[key] = (
                self.tokens.labels(end.provider, end.model, "input"),
                self.tokens.labels(end.provider, end.model, "output"),
            )
        pair[0].observe(end.input_tokens)
        pair[1].observe(end.output_tokens)
        if end.cost:
            currency = self._currency(end.provider)
            _child(self._cost, self.cost, (end.provider, end.model, currency)).inc(end.cost)

    def _currency(self, provider: str) -> str:
        router = self._router
        state = router.providers.get(provider) if router is not None else None
        return state.currency if state is not None else "USD"

    def request_ended(self, provider: str, outcome: str) -> None:
        if outcome == "rate_limited":
            self.rate_limited.labels(provider).inc()

    def fell_back(self, from_provider: str, to_provider: str, reason: str) -> None:
        self.fallbacks.labels(from_provider, to_provider, reason).inc()

    def breaker_changed(self, transition: BreakerTransition) -> None:
        self.transitions.labels(
            transition.name, transition.from_state.value, transition.to_state.value
        ).inc()

    def waited(self, providers: Sequence[str], seconds: float, woken: bool) -> None:
        self.waits.labels("true" if woken else "false").observe(seconds)

    def cooled_down(self, provider: str, seconds: float) -> None:
        self.cooldowns.labels(provider).inc()

    def __repr__(self) -> str:
        following = "-" if self._router is None else list(self._router.providers)
        return f"PrometheusExporter(providers={following})"


def _child(cache: dict[Any, _Child], metric: Any, key: tuple[str, ...]) -> _Child:
    child = cache.get(key)
    if child is None:
        child = cache[key] = metric.labels(*key)
    return child


class _LiveState(Collector):
    """The gauges read from the router's live providers when Prometheus scrapes."""

    def __init__(self, exporter: PrometheusExporter) -> None:
        self._exporter = exporter

    def describe(self) -> Iterable[Metric]:
        # Registering must not collect: the exporter may not follow a router yet.
        return ()

    def collect(self) -> Iterable[Metric]:
        router = self._exporter._router
        if router is None:
            return
        providers = router.providers  # one read: a reload swaps the whole mapping
        enabled = GaugeMetricFamily(
            "llm_router_provider_enabled",
            "1 when the provider is in rotation, 0 when disabled.",
            labels=["provider"],
        )
        breaker = GaugeMetricFamily(
            "llm_router_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            labels=["provider"],
        )
        in_flight = GaugeMetricFamily(
            "llm_router_in_flight", "Provider calls in flight.", labels=["provider"]
        )
        cooldown = GaugeMetricFamily(
            "llm_router_cooldown_remaining_seconds",
            "Seconds until a Retry-After cool-down ends (0 when none).",
            labels=["provider"],
        )
        headroom = GaugeMetricFamily(
            "llm_router_token_headroom",
            "Tokens the provider's token limits would admit now (providers with token limits).",
            labels=["provider"],
        )
        spent = GaugeMetricFamily(
            "llm_router_budget_spent",
            "Cost charged to the provider's budget in its current period.",
            labels=["provider", "currency"],
        )
        max_cost = GaugeMetricFamily(
            "llm_router_budget_max_cost",
            "The provider's budget per period.",
            labels=["provider", "currency"],
        )
        for name, p in providers.items():
            enabled.add_metric([name], 1.0 if p.enabled else 0.0)
            breaker.add_metric([name], BREAKER_VALUE[p.breaker.state])
            in_flight.add_metric([name], p.limiter.in_flight)
            cooldown.add_metric([name], p.cooldown_left)
            room = p.token_headroom
            if room is not None:
                headroom.add_metric([name], room)
            if p.budget is not None:
                spent.add_metric([name, p.currency], p.budget.spent())
                max_cost.add_metric([name, p.currency], p.budget.limit)
        yield from (enabled, breaker, in_flight, cooldown, headroom, spent, max_cost)
        cache = router.pipeline.cache
        if cache is not None:
            yield from _cache_metrics(cache.metrics())
        status = getattr(router.store, "status", None)
        if status is not None:
            yield from _state_metrics(status())


def _state_metrics(figures: dict[str, Any]) -> Iterable[Metric]:
    """Shared state (Redis): whether it is degraded now, how often it was, its errors."""
    degraded = GaugeMetricFamily(
        "llm_router_state_degraded",
        "1 while shared state (Redis) fails and the router runs on local state, else 0.",
    )
    degraded.add_metric([], 1.0 if figures["degraded"] else 0.0)
    degradations = CounterMetricFamily(
        "llm_router_state_degradations", "Times shared state (Redis) became unavailable."
    )
    degradations.add_metric([], figures["degradations"])
    errors = CounterMetricFamily(
        "llm_router_state_errors", "Operations on shared state (Redis) that failed."
    )
    errors.add_metric([], figures["errors"])
    yield from (degraded, degradations, errors)


def _cache_metrics(figures: dict[str, Any]) -> Iterable[Metric]:
    """The response cache's counts, read from the cache itself at scrape time."""
    hits = CounterMetricFamily(
        "llm_router_cache_hits",
        "Requests answered from the response cache, by the provider that made the answer.",
        labels=["provider"],
    )
    for provider, count in sorted(figures["hits_by_provider"].items()):
        hits.add_metric([provider], count)
    misses = CounterMetricFamily(
        "llm_router_cache_misses", "Requests the response cache could not answer."
    )
    misses.add_metric([], figures["misses"])
    coalesced = CounterMetricFamily(
        "llm_router_cache_coalesced",
        "Requests that waited for an identical one in flight and took its answer.",
    )
    coalesced.add_metric([], figures["coalesced"])
    entries = GaugeMetricFamily("llm_router_cache_entries", "Answers the cache holds now.")
    entries.add_metric([], figures["entries"])
    yield from (hits, misses, coalesced, entries)
