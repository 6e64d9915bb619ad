"""Scenarios: parsing a fault, and what a scenario accepts."""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from router_middleware import RouterConfig
from router_middleware.sim import (
    Fault,
    PromptMix,
    Scenario,
    default_scenario,
    parse_fault,
    token_scenario,
    with_token_limits,
)
from router_middleware.sim._provider import count_prompt_tokens
from router_middleware.sim._scenario import injections


def test_parse_fault() -> None:
    name, fault = parse_fault("db:latency_ms=50,latency_p95=0.2,failure_rate=0.3,outage=2-5.5")
    assert name == "db"
    assert fault == Fault(
        latency_seconds=0.05, latency_p95_seconds=0.2, failure_rate=0.3, outage=(2.0, 5.5)
    )
    _, fault = parse_fault("x:rate_limit_burst=1-2,retry_after=4,hang_rate=0.1,latency=2")
    assert (fault.rate_limit_burst, fault.retry_after_seconds, fault.hang_rate) == ((1, 2), 4, 0.1)
    assert fault.latency_p95_seconds == 2.0  # raised to the median
    assert parse_fault("healthy:") == ("healthy", Fault())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "expected NAME:key=value"),
        ("a:speed=3", "unknown part 'speed=3'"),
        ("a:failure_rate=lots", "bad value in 'failure_rate=lots'"),
        ("a:outage=5", "bad value in 'outage=5'"),
        ("a:outage=5-2", "outage must be START-END"),
        ("a:failure_rate=2", "failure_rate must be within [0, 1]"),
        ("a:latency=1,latency_p95=0.5", "latency must satisfy"),
    ],
)
def test_parse_fault_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_fault(spec)


def test_scenario_checks() -> None:
    base = default_scenario()
    with pytest.raises(ValueError, match="unknown provider"):
        Scenario(base.config, {"ghost": Fault()})
    with pytest.raises(ValueError, match="requests and concurrency"):
        Scenario(base.config, requests=0)
    with pytest.raises(ValueError, match="speed"):
        Scenario(base.config, speed=0)


# -- token limits ----------------------------------------------------------------------------


def test_parse_token_limits() -> None:
    _, fault = parse_fault("p:tokens_per_minute=40000,max_input_tokens=2000")
    assert (fault.tokens_per_minute, fault.max_input_tokens) == (40_000, 2_000)
    assert isinstance(fault.tokens_per_minute, int)
    for spec, message in [
        ("p:tokens_per_minute=0", "tokens_per_minute must be a whole number >= 1"),
        ("p:max_input_tokens=-5", "max_input_tokens must be a whole number >= 1"),
        ("p:tokens_per_minute=1.5", "bad value in 'tokens_per_minute=1.5'"),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            parse_fault(spec)


def test_a_prompt_mix_draws_each_request_from_the_seed_and_its_index() -> None:
    mix = PromptMix()
    drawn = [mix.request(i, seed=3) for i in range(400)]
    assert drawn == [mix.request(i, seed=3) for i in range(400)]  # whatever the order
    assert drawn != [mix.request(i, seed=4) for i in range(400)]
    sizes = [count_prompt_tokens([HumanMessage(text)]) for text, _ in drawn]
    # The size as the providers count it, within the mix's range (a token of rounding).
    assert min(sizes) >= 30
    assert max(sizes) <= 6001
    assert max(sizes) > 4000  # some long prompts
    assert sorted(sizes)[len(sizes) // 2] < 1000  # log-uniform: most are short (median 424)
    caps = {cap for _, cap in drawn}
    assert caps == {128, 256, 512, 1024, None}
    assert all(text.startswith(f"request {i}: ") for i, (text, _) in enumerate(drawn))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt_tokens": (3, 10)}, "prompt_tokens must be"),
        ({"prompt_tokens": (100, 10)}, "prompt_tokens must be"),
        ({"answer_tokens": (5, 1)}, "answer_tokens must be"),
        ({"max_tokens": ()}, "max_tokens must list"),
        ({"max_tokens": (0, None)}, "max_tokens must list"),
    ],
)
def test_prompt_mix_checks(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PromptMix(**fields)


def test_token_traffic_goes_with_token_limits() -> None:
    base = default_scenario()
    assert base.prompt_mix is None  # the classic run: short prompts, fixed usage
    limited = replace(base, faults={**base.faults, "primary": Fault(tokens_per_minute=5000)})
    assert limited.prompt_mix == PromptMix()  # a limit needs requests of varied sizes
    custom = PromptMix(prompt_tokens=(10, 20))
    assert replace(limited, prompts=custom).prompt_mix is custom


def test_providers_enforce_the_token_limits_of_their_config() -> None:
    cfg = RouterConfig.model_validate(
        {
            "providers": [
                {
                    "name": "a",
                    "models": [
                        {"name": "m", "max_input_tokens": 8000},
                        {"name": "n", "max_input_tokens": 4000},
                    ],
                    "rate_limit": {"tokens_per_minute": 30_000},
                },
                {"name": "b", "models": [{"name": "m"}]},
            ]
        }
    )
    scenario = Scenario(cfg, {"a": Fault(failure_rate=0.1), "b": Fault(tokens_per_minute=9)})
    limited = with_token_limits(scenario)
    assert limited.faults["a"] == Fault(
        failure_rate=0.1, tokens_per_minute=30_000, max_input_tokens=4000
    )  # the smallest window: one simulated model serves both
    assert limited.faults["b"] == Fault(tokens_per_minute=9)  # its config says nothing
    # A fault's own limit is how the provider really behaves: it stands.
    stricter = replace(scenario, faults={"a": Fault(tokens_per_minute=10_000)})
    assert with_token_limits(stricter).faults["a"] == Fault(
        tokens_per_minute=10_000, max_input_tokens=4000
    )
    assert limited.prompts == PromptMix()
    mix = PromptMix(max_tokens=(64,))
    assert with_token_limits(scenario, mix).prompts is mix


def test_the_token_scenario_says_what_each_provider_enforces() -> None:
    scenario = token_scenario()
    assert (scenario.requests, scenario.duration_seconds) == (600, 120.0)
    primary = scenario.config.providers[0]
    assert primary.rate_limit.tokens_per_minute == scenario.faults["primary"].tokens_per_minute
    assert scenario.faults["small-window"].max_input_tokens == 2000
    found = {(i["provider"], i["fault"]): i for i in injections(scenario)}
    limit = found["primary", "token limit"]
    assert (limit["start"], limit["fate"]) == (None, "token_limited")
    assert limit["effect"] == (
        "answers HTTP 429 with Retry-After when prompt + max_tokens would take its 60 s "
        "window over 100,000 tokens"
    )
    window = found["small-window", "context window"]
    assert window["effect"] == (
        "answers HTTP 400 context_length_exceeded to prompts over 2,000 tokens"
    )
    assert window["fate"] == "too_long"
    assert ("backup", "token limit") not in found
    assert token_scenario(requests=50, duration_seconds=5.0).requests == 50
