"""``llm-router simulate --replicas N``: N routers over the same simulated providers, whose
own token limit counts every replica's calls. Each replica on its own state lets about N
times the limit at the provider (429s); on one store (in memory, or on the real Redis) the
replicas keep within it together."""

from __future__ import annotations

import math
from typing import Any

import pytest

from router_middleware import RouterConfig
from router_middleware._cli import main
from router_middleware.sim import (
    Fault,
    PromptMix,
    Scenario,
    SimulationReport,
    simulate,
    with_token_limits,
)

LIMIT = 20_000
REPLICAS = 4


def scenario(**state: Any) -> Scenario:
    config = RouterConfig.model_validate(
        {
            "providers": [
                {
                    "name": "p",
                    "models": [{"name": "chat"}],
                    "rate_limit": {"tokens_per_minute": LIMIT},
                }
            ],
            "retry": {"attempts": 1},
            "max_wait_seconds": 30.0,
            "deadline_seconds": 120.0,
        }
    )
    mix = PromptMix(prompt_tokens=(200, 400), max_tokens=(256,), answer_tokens=(100, 200))
    faults = {"p": Fault(latency_seconds=0.5, latency_p95_seconds=0.5)}
    return with_token_limits(
        Scenario(
            config,
            faults,
            requests=60,
            duration_seconds=60.0,
            concurrency=8,
            speed=math.inf,
            prompts=mix,
            **{"replicas": REPLICAS, **state},
        )
    )


def provider(report: SimulationReport) -> dict[str, Any]:
    return report.providers["p"]


def test_replicas_on_their_own_state_overrun_a_providers_limit() -> None:
    report = simulate(scenario())
    p = provider(report)
    assert report.scenario["replicas"] == REPLICAS
    assert report.scenario["state"] == "own memory"
    assert p["throttled"] >= 50, p  # the provider's own 429s: no replica knew of the others
    # Every replica sends its own share of the limit: the provider is offered far more.
    assert p["calls"] >= 1.5 * simulate(scenario(shared_state=True)).providers["p"]["calls"]
    assert report.requests["total"] == REPLICAS * 60
    assert len(report.replicas) == REPLICAS
    assert sum(r["succeeded"] for r in report.replicas) == report.requests["succeeded"]
    assert all(r["succeeded"] > 0 for r in report.replicas)
    assert {f["replica"] for f in report.failures} == set(range(REPLICAS))


def test_replicas_on_one_store_keep_within_the_providers_limit() -> None:
    report = simulate(scenario(shared_state=True))
    p = provider(report)
    assert report.scenario["state"] == "shared memory"
    assert p["throttled"] == 0, p
    assert p["peak_window_tokens"] <= LIMIT
    assert all(r["succeeded"] > 0 for r in report.replicas), report.replicas
    # The shared limit serves more in all than replicas that met 429s and cool-downs.
    assert report.requests["succeeded"] > simulate(scenario()).requests["succeeded"]


def test_the_same_seed_gives_the_same_replicated_run() -> None:
    a, b = simulate(scenario(shared_state=True)), simulate(scenario(shared_state=True))
    assert a.requests == b.requests
    assert a.replicas == b.replicas


def test_replicas_sharing_state_on_redis_keep_within_the_providers_limit(
    redis_url: str, redis_client: Any
) -> None:
    report = simulate(scenario(state_url=redis_url))
    p = provider(report)
    assert report.scenario["state"] == "redis"
    assert p["throttled"] == 0, p
    assert p["peak_window_tokens"] <= LIMIT
    assert report.requests["succeeded"] > simulate(scenario()).requests["succeeded"]
    assert redis_client.keys("*") == []  # the run's keys are gone


def test_one_replica_reports_as_before() -> None:
    report = simulate(scenario(replicas=1))
    assert report.replicas == []
    assert "replica" not in report.timeline[0]


def test_the_command_line_runs_replicas(
    capsys: pytest.CaptureFixture[str], clean_env: None
) -> None:
    args = ["simulate", "--no-config", "--tokens", "--speed", "max", "--requests", "40"]
    assert main([*args, "--duration", "10", "--replicas", "3", "--shared"]) == 0
    out = capsys.readouterr().out
    assert "Replicas: 3 routers" in out
    assert "one in-memory store" in out
    assert "Replicas:\n  replica" in out


def test_replicas_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="replicas"):
        scenario(replicas=0)
