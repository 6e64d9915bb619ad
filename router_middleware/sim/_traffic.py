"""Token limits in a simulation: providers that enforce what the config says, and the
built-in scenario of ``llm-router simulate --tokens``.

:func:`with_token_limits` makes each simulated provider enforce the token limits its
configuration states (its ``rate_limit.tokens_per_minute``, its models' smallest
``max_input_tokens``), as the real provider would, and sends requests of varied sizes
(a :class:`~._scenario.PromptMix`): the run then shows whether the router keeps within
those limits, or the provider has to answer 429s. :func:`token_scenario` is three
providers over two minutes: one with a tokens-per-minute limit, one with a small
context window, one without limits.

Example:
    >>> faults = token_scenario(requests=60, duration_seconds=6.0).faults
    >>> faults["primary"].tokens_per_minute, faults["small-window"].max_input_tokens
    (100000, 2000)
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .._config import (
    CircuitBreakerConfig,
    ModelConfig,
    ProviderConfig,
    RateLimitConfig,
    RetryConfig,
    RouterConfig,
    TimeoutConfig,
)
from ._scenario import Fault, PromptMix, Scenario

__all__ = ["token_scenario", "with_token_limits"]


def with_token_limits(scenario: Scenario, prompts: PromptMix | None = None) -> Scenario:
    """``scenario`` with requests of varied sizes (``prompts``, else the scenario's own
    or the default mix) and each provider enforcing the token limits of its config.

    A provider's ``tokens_per_minute`` and its models' smallest ``max_input_tokens``
    become its fault's, unless the fault sets its own: a fault says how the provider
    really behaves, which may differ from what the config believes. (The simulated
    provider serves all its models as one, and enforces no input or output tokens per
    minute apart: those, and a model's own ``token_limits``, stay the router's alone.)
    """
    faults = dict(scenario.faults)
    for pc in scenario.config.providers:
        fault = faults.get(pc.name, Fault())
        windows = [m.max_input_tokens for m in pc.models if m.max_input_tokens is not None]
        tpm, window = fault.tokens_per_minute, fault.max_input_tokens
        limited = replace(
            fault,
            tokens_per_minute=pc.rate_limit.tokens_per_minute if tpm is None else tpm,
            max_input_tokens=(min(windows) if windows else None) if window is None else window,
        )
        if limited != fault:  # a provider without a fault stays without one
            faults[pc.name] = limited
    mix = prompts or scenario.prompts or PromptMix()
    return replace(scenario, faults=faults, prompts=mix)


def _model(cost_in: float, cost_out: float, **kw: Any) -> list[ModelConfig]:
    return [
        ModelConfig(
            name="chat", cost_per_1k_input_tokens=cost_in, cost_per_1k_output_tokens=cost_out, **kw
        )
    ]


def token_scenario(**overrides: Any) -> Scenario:
    """Three providers over two minutes, sent prompts of 30 to 6,000 tokens.

    ``primary`` is cheap and preferred, with a limit of 100,000 tokens per minute, in
    the router's config and enforced by the provider alike: the router sends it
    requests while its window has room and skips it ("token limit") while the window is
    full. ``small-window`` is cheaper still but ranked second, with a context window of
    2,000 tokens: longer prompts skip it ("context window"). ``backup`` has no limits
    and costs most. Prices are per 1k tokens, in USD. ``overrides`` are
    :class:`~._scenario.Scenario` fields (``requests``, ``duration_seconds``, ...).
    """
    config = RouterConfig(
        strategy="cost_priority_round_robin",
        providers=[
            ProviderConfig(
                name="primary",
                priority=1,
                models=_model(0.00015, 0.0006),
                rate_limit=RateLimitConfig(tokens_per_minute=100_000),
            ),
            ProviderConfig(
                name="small-window",
                priority=2,
                models=_model(0.0001, 0.0004, max_input_tokens=2_000),
            ),
            ProviderConfig(name="backup", priority=3, models=_model(0.0008, 0.004)),
        ],
        retry=RetryConfig(attempts=2, initial_backoff_seconds=0.2, max_backoff_seconds=2.0),
        circuit_breaker=CircuitBreakerConfig(
            threshold=5, sampling_duration_seconds=10.0, reset_timeout_seconds=4.0
        ),
        timeouts=TimeoutConfig(attempt_seconds=10.0),
        max_wait_seconds=2.0,
        deadline_seconds=20.0,
    )
    faults = {
        "primary": Fault(latency_seconds=0.8, latency_p95_seconds=2.0),
        "small-window": Fault(latency_seconds=0.3, latency_p95_seconds=0.8),
        "backup": Fault(latency_seconds=1.2, latency_p95_seconds=3.0),
    }
    traffic: dict[str, Any] = {"requests": 600, "duration_seconds": 120.0, "currency": "USD"}
    return with_token_limits(Scenario(config, faults, **{**traffic, **overrides}))
