"""The Prometheus exporter: a scripted run, its text output parsed back, and serving."""

from __future__ import annotations

import logging
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from router_middleware import (
    AttemptEnd,
    FakeClock,
    NoProviderForModelError,
    ResilientRouter,
)
from router_middleware.exporters import PrometheusExporter, instrument
from router_middleware.testing import ScriptedChatModel, http_error

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _parse(exporter: PrometheusExporter) -> Samples:
    """The registry's text exposition, parsed back: (sample name, labels) -> value."""
    text = generate_latest(exporter.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def _label_values(samples: Samples, label: str) -> set[str]:
    return {v for _, labels in samples for k, v in labels if k == label}


def _model(name: str) -> dict[str, Any]:
    return {"name": name, "cost_per_1k_input_tokens": 1.0, "cost_per_1k_output_tokens": 2.0}


def _config(*names: str, **extra: Any) -> dict[str, Any]:
    return {
        "strategy": "cost_priority_round_robin",
        "default_model": "m",
        "currency": "EUR",
        "providers": [
            {"name": n, "priority": i, "models": [_model("m")]} for i, n in enumerate(names)
        ],
        "retry": {"attempts": 2, "initial_backoff_seconds": 0, "max_backoff_seconds": 0},
        "circuit_breaker": {"threshold": 2, "reset_timeout_seconds": 60},
        **extra,
    }


def _scripted_router(clock: FakeClock) -> tuple[ResilientRouter, PrometheusExporter]:
    # alpha fails twice (a retry, then its breaker opens and the request fails over to
    # beta); beta answers every call after 0.25 s, reporting 7 input and 3 output tokens.
    alpha = ScriptedChatModel(script=[http_error(503), http_error(503)], clock=clock)
    beta = ScriptedChatModel(text="hello there", usage=(7, 3), latency=0.25, clock=clock)
    router = ResilientRouter({"alpha": alpha, "beta": beta}, _config("alpha", "beta"), clock=clock)
    return router, PrometheusExporter.attach(router)


def _assert_scripted_run(samples: Samples) -> None:
    ab = {"provider": "alpha", "model": "m"}
    bm = {"provider": "beta", "model": "m"}
    attempts = "llm_router_attempts_total"
    assert _value(samples, attempts, **ab, outcome="failed", error_kind="transient") == 2
    assert _value(samples, attempts, **bm, outcome="succeeded", error_kind="") == 2
    assert _value(samples, "llm_router_retries_total", **ab, error_kind="transient") == 1
    fallback = {"from_provider": "alpha", "to_provider": "beta", "reason": "transient"}
    assert _value(samples, "llm_router_fallbacks_total", **fallback) == 1
    opened = {"provider": "alpha", "from_state": "closed", "to_state": "open"}
    assert _value(samples, "llm_router_breaker_transitions_total", **opened) == 1
    # Durations: beta's two answers took 0.25 s each on the fake clock.
    duration = "gen_ai_client_operation_duration_seconds"
    assert _value(samples, f"{duration}_count", **bm, outcome="succeeded") == 2
    assert _value(samples, f"{duration}_sum", **bm, outcome="succeeded") == pytest.approx(0.5)
    assert _value(samples, f"{duration}_bucket", **bm, outcome="succeeded", le="0.16") == 0
    assert _value(samples, f"{duration}_bucket", **bm, outcome="succeeded", le="0.32") == 2
    # The stream's first chunk came when the answer did.
    ttft = "llm_router_time_to_first_token_seconds"
    assert _value(samples, f"{ttft}_count", **bm) == 1
    assert _value(samples, f"{ttft}_sum", **bm) == pytest.approx(0.25)
    tokens = "gen_ai_client_token_usage"
    assert _value(samples, f"{tokens}_sum", **bm, token_type="input") == 14
    assert _value(samples, f"{tokens}_sum", **bm, token_type="output") == 6
    assert _value(samples, f"{tokens}_count", **bm, token_type="input") == 2
    # 7 input tokens at 1.0 per 1k and 3 output at 2.0 per 1k, twice.
    cost = _value(samples, "llm_router_cost_total", **bm, currency="EUR")
    assert cost == pytest.approx(2 * 0.013)
    # Gauges, read at scrape time from the live providers.
    assert _value(samples, "llm_router_breaker_state", provider="alpha") == 2
    assert _value(samples, "llm_router_breaker_state", provider="beta") == 0
    assert _value(samples, "llm_router_in_flight", provider="beta") == 0
    assert _value(samples, "llm_router_provider_enabled", provider="alpha") == 1
    assert _value(samples, "llm_router_cooldown_remaining_seconds", provider="alpha") == 0
    # Only configured names and closed sets in labels.
    assert _label_values(samples, "provider") == {"alpha", "beta"}
    assert _label_values(samples, "model") == {"m"}


def test_a_scripted_run_is_exported_with_names_labels_and_values(clock: FakeClock) -> None:
    router, exporter = _scripted_router(clock)
    assert router.invoke("hi").content == "hello there"  # alpha: retry, breaker, fallback
    chunks = list(router.stream("hi"))  # alpha is open: beta streams
    assert "".join(str(c.content) for c in chunks) == "hello there"
    samples = _parse(exporter)
    _assert_scripted_run(samples)
    assert {
        "llm_router_attempts_total",
        "gen_ai_client_operation_duration_seconds_bucket",
        "gen_ai_client_token_usage_bucket",
        "llm_router_time_to_first_token_seconds_bucket",
        "llm_router_cost_total",
        "llm_router_retries_total",
        "llm_router_fallbacks_total",
        "llm_router_breaker_transitions_total",
        "llm_router_breaker_state",
        "llm_router_in_flight",
        "llm_router_cooldown_remaining_seconds",
        "llm_router_provider_enabled",
    } <= _names(samples)
    # Not set in this config: no token headroom, no budget series.
    assert not {"llm_router_token_headroom", "llm_router_budget_spent"} & _names(samples)


async def test_the_async_path_exports_the_same(clock: FakeClock) -> None:
    router, exporter = _scripted_router(clock)
    assert (await router.ainvoke("hi")).content == "hello there"
    chunks = [c async for c in router.astream("hi")]
    assert "".join(str(c.content) for c in chunks) == "hello there"
    _assert_scripted_run(_parse(exporter))


def test_rate_limits_cooldowns_and_waits_are_counted(clock: FakeClock) -> None:
    throttled = ScriptedChatModel(script=[http_error(429, retry_after=5)], clock=clock)
    router = ResilientRouter(
        {"alpha": throttled, "beta": ScriptedChatModel(clock=clock)},
        _config("alpha", "beta"),
        clock=clock,
    )
    exporter = instrument(router)
    router.invoke("hi")
    samples = _parse(exporter)
    assert _value(samples, "llm_router_cooldowns_total", provider="alpha") == 1
    assert _value(samples, "llm_router_cooldown_remaining_seconds", provider="alpha") == 5
    fallback = {"from_provider": "alpha", "to_provider": "beta", "reason": "rate_limited"}
    assert _value(samples, "llm_router_fallbacks_total", **fallback) == 1
    # The router's own limit: one request every 2 s, so the second waits for the bucket.
    rate = {"requests_per_second": 0.5, "burst": 1}
    lone = ResilientRouter(
        {"solo": ScriptedChatModel(clock=clock)},
        {"providers": [{"name": "solo", "models": [_model("m")], "rate_limit": rate}]},
        clock=clock,
    )
    exporter = instrument(lone)
    lone.invoke("a")
    lone.invoke("b")
    samples = _parse(exporter)
    assert _value(samples, "llm_router_limiter_wait_seconds_count", woken="false") == 1
    assert _value(samples, "llm_router_limiter_wait_seconds_sum", woken="false") == (
        pytest.approx(2.0, rel=0.01)
    )


def test_budget_and_token_limits_appear_when_set(clock: FakeClock) -> None:
    config = _config("alpha")
    config["providers"][0]["budget"] = {"max_cost": 5, "period_seconds": 3600}
    config["providers"][0]["rate_limit"] = {"tokens_per_minute": 10_000}
    router = ResilientRouter(
        {"alpha": ScriptedChatModel(usage=(7, 3), clock=clock)}, config, clock=clock
    )
    exporter = instrument(router)
    router.invoke("hi")
    samples = _parse(exporter)
    budget = {"provider": "alpha", "currency": "EUR"}
    assert _value(samples, "llm_router_budget_spent", **budget) == pytest.approx(0.013)
    assert _value(samples, "llm_router_budget_max_cost", **budget) == 5
    headroom = _value(samples, "llm_router_token_headroom", provider="alpha")
    assert headroom is not None
    assert 0 < headroom < 10_000


def test_cache_hits_and_misses_are_read_from_the_cache(clock: FakeClock) -> None:
    router = ResilientRouter(
        {"alpha": ScriptedChatModel(clock=clock)},
        _config("alpha", cache={"enabled": True}),
        clock=clock,
    )
    exporter = instrument(router)
    assert "llm_router_cache_hits_total" not in _names(_parse(exporter))  # nothing yet
    for _ in range(3):
        router.invoke("hi")
    router.invoke("something else")
    samples = _parse(exporter)
    assert _value(samples, "llm_router_cache_hits_total", provider="alpha") == 2
    assert _value(samples, "llm_router_cache_misses_total") == 2
    assert _value(samples, "llm_router_cache_coalesced_total") == 0
    assert _value(samples, "llm_router_cache_entries") == 2
    plain = instrument(ResilientRouter({"alpha": ScriptedChatModel(clock=clock)}, _config("alpha")))
    assert not {n for n in _names(_parse(plain)) if n.startswith("llm_router_cache")}


def test_an_unknown_model_creates_no_series(clock: FakeClock) -> None:
    router, exporter = _scripted_router(clock)
    with pytest.raises(NoProviderForModelError):
        router.invoke("hi", model="user-typed-model")
    samples = _parse(exporter)
    assert "user-typed-model" not in generate_latest(exporter.registry).decode()
    assert "llm_router_attempts_total" not in _names(samples)


def test_an_observer_that_raises_never_breaks_routing(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(PrometheusExporter):
        def attempt_ended(self, end: AttemptEnd) -> None:
            raise RuntimeError("exporter down")

    router, exporter = _scripted_router(clock)
    Broken.attach(router)  # a second exporter, with its own registry, that fails
    with caplog.at_level(logging.ERROR, logger="router_middleware"):
        assert router.invoke("hi").content == "hello there"
    assert "failed on attempt_ended" in caplog.text
    samples = _parse(exporter)  # the exporter after it still heard everything
    assert _value(
        samples,
        "llm_router_attempts_total",
        provider="beta",
        model="m",
        outcome="succeeded",
        error_kind="",
    )


def test_gauges_follow_a_reload(clock: FakeClock) -> None:
    router, exporter = _scripted_router(clock)
    router.invoke("hi")
    gamma = ScriptedChatModel(clock=clock)
    router.apply_config(_config("beta", "gamma"), {"gamma": gamma})
    router.disable("beta")
    assert router.invoke("hi").content == "ok"  # gamma, the only one enabled
    samples = _parse(exporter)
    states = {
        dict(labels)["provider"]: value
        for (name, labels), value in samples.items()
        if name == "llm_router_breaker_state"
    }
    assert states == {"beta": 0, "gamma": 0}  # alpha is gone from the gauges
    assert _value(samples, "llm_router_provider_enabled", provider="beta") == 0
    attempts = {"model": "m", "outcome": "succeeded", "error_kind": ""}
    assert _value(samples, "llm_router_attempts_total", provider="gamma", **attempts) == 1
    # Counters keep what happened before the reload (alpha's failures).
    failed = {"model": "m", "outcome": "failed", "error_kind": "transient"}
    assert _value(samples, "llm_router_attempts_total", provider="alpha", **failed) == 2


def test_attach_is_idempotent_and_one_exporter_follows_one_router(clock: FakeClock) -> None:
    exporter = PrometheusExporter()
    router = ResilientRouter({"a": ScriptedChatModel(clock=clock)}, observers=[exporter])
    exporter.watch(router)  # already an observer: not added twice
    router.invoke("hi")
    attempts = {"provider": "a", "model": "a", "outcome": "succeeded", "error_kind": ""}
    assert exporter.registry.get_sample_value("llm_router_attempts_total", attempts) == 1
    other = ResilientRouter({"b": ScriptedChatModel(clock=clock)})
    with pytest.raises(ValueError, match="another router"):
        exporter.watch(other)


def test_a_registry_given_is_used() -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry)
    assert exporter.registry is registry
    assert registry.get_sample_value("llm_router_breaker_state", {"provider": "a"}) is None


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        body: bytes = response.read()
    return body.decode()


def _served(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def test_serve_over_http_on_loopback(clock: FakeClock) -> None:
    router, exporter = _scripted_router(clock)
    router.invoke("hi")
    server = exporter.serve(port=0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        text = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
    assert {"llm_router_attempts", "llm_router_breaker_state"} <= _served(text)


async def test_asgi_app_serves_the_registry(clock: FakeClock) -> None:
    router, exporter = _scripted_router(clock)
    await router.ainvoke("hi")
    app = exporter.asgi_app()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/metrics",
        "headers": [],
        "query_string": b"",
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    text = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert {"gen_ai_client_operation_duration_seconds", "llm_router_fallbacks"} <= _served(text)


def test_shared_state_degraded_is_a_gauge_and_its_changes_counters() -> None:
    from tests.redis_server import free_port

    config = _config("alpha", state={"url": f"redis://127.0.0.1:{free_port()}/0"})
    router = ResilientRouter({"alpha": ScriptedChatModel()}, config)
    exporter = instrument(router)
    router.invoke("hi")  # Redis is not there: degraded, served on local state
    samples = _parse(exporter)
    assert _value(samples, "llm_router_state_degraded") == 1
    assert _value(samples, "llm_router_state_degradations_total") == 1
    assert (_value(samples, "llm_router_state_errors_total") or 0) >= 1
    router.store.close()  # type: ignore[attr-defined]
    plain = instrument(ResilientRouter({"alpha": ScriptedChatModel()}, _config("alpha")))
    assert not {n for n in _names(_parse(plain)) if n.startswith("llm_router_state")}
