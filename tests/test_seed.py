"""Every example of the seed (TypeScript) README, as written, in Python syntax."""

from __future__ import annotations

import asyncio
import copy
import random
from typing import Any

import pytest

from router_middleware import (
    FakeClock,
    LLMRequest,
    LLMResponse,
    NoProviderForModelError,
    ResilientRouter,
    RouterConfig,
)

# -- the seed's handlers, with the SDK calls replaced by canned answers ----------------------


async def openai_handler(req: LLMRequest) -> LLMResponse:
    return LLMResponse(
        text=f"openai says: {req.prompt}", provider="openai-provider", model=req.model
    )


async def anthropic_handler(req: LLMRequest) -> LLMResponse:
    return LLMResponse(
        text=f"anthropic says: {req.prompt}", provider="anthropic-provider", model=req.model
    )


handlers = {"openai-provider": openai_handler, "anthropic-provider": anthropic_handler}

QUICK_START = {
    "loadBalancingStrategy": "cost_priority_round_robin",
    "providers": [
        {
            "name": "openai-provider",
            "type": "custom",
            "handler": handlers["openai-provider"],
            "models": [
                {
                    "name": "gpt-4",
                    "costPer1kInputTokens": 0.03,
                    "costPer1kOutputTokens": 0.06,
                    "maxTokens": 8192,
                }
            ],
            "rateLimit": {"tokensPerSecond": 10, "maxConcurrent": 5},
            "priority": 2,
        },
        {
            "name": "anthropic-provider",
            "type": "custom",
            "handler": handlers["anthropic-provider"],
            "models": [
                {
                    "name": "claude-3-sonnet",
                    "costPer1kInputTokens": 0.015,
                    "costPer1kOutputTokens": 0.075,
                    "maxTokens": 4096,
                }
            ],
            "rateLimit": {"tokensPerSecond": 20, "maxConcurrent": 10},
            "priority": 1,
        },
    ],
    "resilience": {
        "retry": {
            "enabled": True,
            "attempts": 3,
            "initialBackoffMs": 100,
            "maxBackoffMs": 1000,
            "multiplier": 2,
        },
        "circuitBreaker": {
            "enabled": True,
            "threshold": 5,
            "samplingDurationMs": 60000,
            "resetTimeoutMs": 30000,
        },
    },
}

cheap = expensive = local = openai_handler

MULTI_PROVIDER = {
    "loadBalancingStrategy": "cost_priority_round_robin",
    "providers": [
        {
            "name": "primary-cheap",
            "handler": cheap,
            "models": [
                {
                    "name": "gpt-3.5-turbo",
                    "costPer1kInputTokens": 0.001,
                    "costPer1kOutputTokens": 0.002,
                }
            ],
            "priority": 1,
            "rateLimit": {"tokensPerSecond": 50},
        },
        {
            "name": "secondary-expensive",
            "handler": expensive,
            "models": [
                {"name": "gpt-4", "costPer1kInputTokens": 0.03, "costPer1kOutputTokens": 0.06}
            ],
            "priority": 2,
            "rateLimit": {"tokensPerSecond": 10},
        },
        {
            "name": "backup-local",
            "handler": local,
            "models": [{"name": "llama2", "costPer1kInputTokens": 0, "costPer1kOutputTokens": 0}],
            "priority": 3,
            "rateLimit": {"tokensPerSecond": 5},
        },
    ],
}

SEED_CONFIGS = {"quick_start": QUICK_START, "multi_provider": MULTI_PROVIDER}


def test_quick_start_as_written() -> None:
    config = QUICK_START
    router = ResilientRouter.create(handlers, lambda: config)
    response = router.execute({"prompt": "Explain quantum computing", "model": "claude-3-sonnet"})
    assert response.provider == "anthropic-provider"
    assert response.text == "anthropic says: Explain quantum computing"


async def test_quick_start_async() -> None:
    router = await ResilientRouter.acreate(handlers, lambda: QUICK_START)
    response = await router.aexecute(
        {"prompt": "Explain quantum computing", "model": "claude-3-sonnet"}
    )
    assert (response.provider, response.model) == ("anthropic-provider", "claude-3-sonnet")


@pytest.mark.parametrize("name", sorted(SEED_CONFIGS))
def test_seed_configs_translate(name: str) -> None:
    cfg = RouterConfig.coerce(SEED_CONFIGS[name])
    assert cfg.strategy == "cost_priority_round_robin"
    if name == "quick_start":
        assert cfg.retry.initial_backoff_seconds == pytest.approx(0.1)
        assert cfg.retry.max_backoff_seconds == pytest.approx(1.0)
        assert cfg.circuit_breaker.sampling_duration_seconds == pytest.approx(60)
        assert cfg.circuit_breaker.reset_timeout_seconds == pytest.approx(30)
        openai = cfg.providers[0]
        assert openai.rate_limit.requests_per_second == 10
        assert openai.rate_limit.max_concurrent == 5
        assert openai.models[0].max_input_tokens == 8192


def test_multi_provider_setup_routes_each_model() -> None:
    router = ResilientRouter.create({}, lambda: MULTI_PROVIDER)
    assert router.execute({"prompt": "a", "model": "gpt-4"}).provider == "secondary-expensive"
    assert router.execute({"prompt": "a", "model": "llama2"}).provider == "backup-local"
    assert router.execute({"prompt": "a", "model": "gpt-3.5-turbo"}).provider == "primary-cheap"


def test_testing_circuit_breaker_example() -> None:
    rng = random.Random(7)

    async def flaky_handler(req: LLMRequest) -> LLMResponse:
        if rng.random() < 0.7:  # 70% failure rate
            raise Exception("Simulated failure")
        return LLMResponse(text="Success!", provider="flaky", model=req.model)

    config = {
        "providers": [{"name": "flaky", "handler": flaky_handler, "models": [{"name": "m"}]}],
        "resilience": {
            "retry": {
                "enabled": False,
                "attempts": 1,
                "initialBackoffMs": 0,
                "maxBackoffMs": 0,
                "multiplier": 2,
            },
            "circuitBreaker": {
                "enabled": True,
                "threshold": 3,
                "samplingDurationMs": 60000,
                "resetTimeoutMs": 30000,
            },
        },
    }
    router = ResilientRouter.create({}, lambda: config, clock=FakeClock())
    outcomes = []
    for _ in range(20):
        try:
            outcomes.append(router.execute({"prompt": "x", "model": "m"}).text)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    assert router.providers["flaky"].circuit_breaker_state == "open"
    assert router.providers["flaky"].metrics.circuit_breaker_trips >= 1
    assert "NoProviderAvailableError" in outcomes  # skipped while open, with a typed error


def test_provider_health_monitoring() -> None:
    router = ResilientRouter.create(handlers, lambda: QUICK_START)
    router.execute({"prompt": "hi", "model": "gpt-4"})
    provider = router.providers["openai-provider"]
    assert provider.circuit_breaker_state == "closed"
    metrics = provider.metrics
    assert metrics.successful_requests / metrics.total_requests == 1.0
    assert metrics.average_response_time >= 0
    for field in (
        "total_requests",
        "successful_requests",
        "failed_requests",
        "rate_limited_requests",
        "circuit_breaker_trips",
        "last_request_time",
        "average_response_time",
    ):
        assert hasattr(metrics, field)


def test_dynamic_configuration() -> None:
    def get_current_config() -> dict[str, Any]:
        return copy.deepcopy(QUICK_START)

    # Disable a failing provider, then create a new router with the updated config.
    config = get_current_config()
    next(p for p in config["providers"] if p["name"] == "anthropic-provider")["enabled"] = False
    new_router = ResilientRouter.create(handlers, lambda: config)
    assert new_router.execute({"prompt": "x", "model": "gpt-4"}).provider == "openai-provider"
    with pytest.raises(NoProviderForModelError):
        new_router.execute({"prompt": "x", "model": "claude-3-sonnet"})


def test_custom_error_handling_429_is_not_a_breaker_failure() -> None:
    class RateLimited(Exception):
        status = 429

    async def handler(req: LLMRequest) -> LLMResponse:
        raise RateLimited("slow down")

    config = {
        "providers": [
            {"name": "limited", "handler": handler, "models": [{"name": "m"}], "priority": 1},
            {"name": "backup", "handler": openai_handler, "models": [{"name": "m"}], "priority": 2},
        ],
        "loadBalancingStrategy": "cost_priority_round_robin",
    }
    router = ResilientRouter.create({}, lambda: config, clock=FakeClock())
    assert asyncio.run(router.aexecute({"prompt": "x", "model": "m"})).provider == "backup"
    assert router.providers["limited"].breaker.failures_in_window() == 0
