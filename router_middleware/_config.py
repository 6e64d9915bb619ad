"""Configuration as small, validated value objects.

Field names are snake_case with their unit in the name (``*_seconds``). The seed
TypeScript library's shape is accepted as well: camelCase keys, milliseconds
(``initialBackoffMs``), ``tokensPerSecond`` for the request rate and a ``resilience``
section holding ``retry`` and ``circuitBreaker``; it is translated on the way in.

Example:
    >>> cfg = RouterConfig.model_validate({
    ...     "loadBalancingStrategy": "round_robin",
    ...     "providers": [{"name": "a", "models": [{"name": "m"}],
    ...                    "rateLimit": {"tokensPerSecond": 5}}],
    ...     "resilience": {"retry": {"attempts": 2, "initialBackoffMs": 50}},
    ... })
    >>> cfg.retry.initial_backoff_seconds, cfg.providers[0].rate_limit.requests_per_second
    (0.05, 5.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ._errors import ConfigurationError

__all__ = [
    "CircuitBreakerConfig",
    "ModelConfig",
    "ProviderConfig",
    "RateLimitConfig",
    "RetryConfig",
    "RouterConfig",
    "TimeoutConfig",
    "format_validation_error",
]

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Cost = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def _translate(data: Any, keys: Mapping[str, tuple[str, float]]) -> Any:
    """Rename seed (camelCase) keys to ours, scaling millisecond values to seconds."""
    if not isinstance(data, Mapping):
        return data
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in keys:
            name, scale = keys[key]
            if name in data:
                raise ValueError(f"both {key!r} and {name!r} given; use one")
            if scale != 1 and isinstance(value, (int, float)) and not isinstance(value, bool):
                value = value * scale
            out[name] = value
        else:
            out[key] = value
    return out


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(_Config):
    """A model a provider serves, with its price.

    Example:
        >>> ModelConfig(name="gpt-4o-mini", cost_per_1k_input_tokens=0.00015).name
        'gpt-4o-mini'
    """

    name: Annotated[str, Field(min_length=1)]
    cost_per_1k_input_tokens: Cost = 0.0
    cost_per_1k_output_tokens: Cost = 0.0
    max_tokens: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return _translate(
            data,
            {
                "costPer1kInputTokens": ("cost_per_1k_input_tokens", 1),
                "costPer1kOutputTokens": ("cost_per_1k_output_tokens", 1),
                "maxTokens": ("max_tokens", 1),
            },
        )

    @property
    def average_cost_per_1k(self) -> float:
        """Mean of the input and output price: the price the cost strategy ranks by."""
        return (self.cost_per_1k_input_tokens + self.cost_per_1k_output_tokens) / 2


class RateLimitConfig(_Config):
    """Per-provider admission limits. ``None`` means unlimited.

    ``burst`` defaults to ``max(1, ceil(requests_per_second))``: one second's worth.
    """

    requests_per_second: PositiveSeconds | None = None
    burst: Annotated[int, Field(gt=0)] | None = None
    max_concurrent: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return _translate(
            data,
            {
                "tokensPerSecond": ("requests_per_second", 1),
                "requestsPerSecond": ("requests_per_second", 1),
                "maxConcurrent": ("max_concurrent", 1),
            },
        )

    @property
    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.requests_per_second or 1))


class RetryConfig(_Config):
    """Retries on one provider: exponential backoff with full jitter.

    ``attempts`` is the total number of tries on one provider (1 = no retry), as in the seed.
    """

    enabled: bool = True
    attempts: Annotated[int, Field(ge=1)] = 3
    initial_backoff_seconds: NonNegativeSeconds = 0.1
    max_backoff_seconds: NonNegativeSeconds = 1.0
    multiplier: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 2.0
    jitter: bool = True

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return _translate(
            data,
            {
                "initialBackoffMs": ("initial_backoff_seconds", 0.001),
                "maxBackoffMs": ("max_backoff_seconds", 0.001),
            },
        )

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must be >= initial_backoff_seconds")
        return self

    @property
    def tries(self) -> int:
        """Tries per provider once ``enabled`` is applied."""
        return self.attempts if self.enabled else 1


class CircuitBreakerConfig(_Config):
    """When a provider is taken out of rotation, and how it comes back.

    The breaker opens after ``threshold`` counted failures within
    ``sampling_duration_seconds`` or, when ``failure_rate_threshold`` is set, when at
    least ``minimum_calls`` calls in the window failed at that rate or more.
    """

    enabled: bool = True
    threshold: Annotated[int, Field(ge=1)] = 5
    sampling_duration_seconds: PositiveSeconds = 60.0
    reset_timeout_seconds: PositiveSeconds = 30.0
    half_open_max_calls: Annotated[int, Field(ge=1)] = 1
    failure_rate_threshold: Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)] | None = None
    minimum_calls: Annotated[int, Field(ge=1)] = 10

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return _translate(
            data,
            {
                "samplingDurationMs": ("sampling_duration_seconds", 0.001),
                "resetTimeoutMs": ("reset_timeout_seconds", 0.001),
                "halfOpenMaxCalls": ("half_open_max_calls", 1),
                "failureRateThreshold": ("failure_rate_threshold", 1),
                "minimumCalls": ("minimum_calls", 1),
            },
        )


class TimeoutConfig(_Config):
    """Per-attempt time limits; ``None`` disables one.

    ``attempt_seconds`` bounds a whole non-streaming call; ``first_token_seconds`` the
    wait for a stream's first chunk; ``idle_seconds`` the silence between two chunks.
    """

    attempt_seconds: PositiveSeconds | None = None
    first_token_seconds: PositiveSeconds | None = None
    idle_seconds: PositiveSeconds | None = None

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return _translate(
            data,
            {
                "attemptMs": ("attempt_seconds", 0.001),
                "firstTokenMs": ("first_token_seconds", 0.001),
                "idleMs": ("idle_seconds", 0.001),
            },
        )


class ProviderConfig(_Config):
    """One provider: the models it serves, its priority and its limits.

    ``retry``, ``circuit_breaker`` and ``timeouts`` override the router-wide defaults
    for this provider when given. ``handler`` exists for seed parity (the seed puts the
    handler in the config); a handler passed to the router by name takes precedence.
    """

    name: Annotated[str, Field(min_length=1)]
    type: Literal["openai", "anthropic", "google", "ollama", "custom"] = "custom"
    enabled: bool = True
    priority: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 1
    models: Annotated[list[ModelConfig], Field(min_length=1)]
    rate_limit: RateLimitConfig = RateLimitConfig()
    retry: RetryConfig | None = None
    circuit_breaker: CircuitBreakerConfig | None = None
    timeouts: TimeoutConfig | None = None
    handler: Annotated[Any, Field(exclude=True, repr=False)] = None

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        return _translate(
            data,
            {
                "rateLimit": ("rate_limit", 1),
                "circuitBreaker": ("circuit_breaker", 1),
            },
        )

    @model_validator(mode="after")
    def _unique_models(self) -> ProviderConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"provider {self.name!r} lists model(s) twice: {', '.join(dupes)}")
        return self

    def model(self, name: str) -> ModelConfig | None:
        """The configuration of model ``name`` if this provider serves it."""
        for m in self.models:
            if m.name == name:
                return m
        return None


class RouterConfig(_Config):
    """The whole router: strategy, providers and resilience defaults.

    ``max_wait_seconds`` is how long a request may wait for a provider with capacity when
    every candidate is saturated; ``deadline_seconds`` bounds a request end to end, and
    ``max_attempts`` caps the provider calls one request may make. A provider's
    ``Retry-After`` cools it down for at most ``max_cooldown_seconds``.
    """

    strategy: Annotated[str, Field(min_length=1)] = "round_robin"
    default_model: str | None = None
    providers: list[ProviderConfig] = Field(default_factory=list)
    retry: RetryConfig = RetryConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    timeouts: TimeoutConfig = TimeoutConfig()
    max_wait_seconds: NonNegativeSeconds = 5.0
    deadline_seconds: PositiveSeconds | None = 120.0
    max_attempts: Annotated[int, Field(ge=1)] = 10
    max_cooldown_seconds: PositiveSeconds = 300.0

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        data = _translate(
            data,
            {
                "loadBalancingStrategy": ("strategy", 1),
                "load_balancing_strategy": ("strategy", 1),
                "defaultModel": ("default_model", 1),
                "circuitBreaker": ("circuit_breaker", 1),
                "maxWaitMs": ("max_wait_seconds", 0.001),
                "deadlineMs": ("deadline_seconds", 0.001),
                "maxAttempts": ("max_attempts", 1),
                "maxCooldownMs": ("max_cooldown_seconds", 0.001),
            },
        )
        if isinstance(data, dict) and "resilience" in data:
            resilience = data.pop("resilience")
            if not isinstance(resilience, Mapping):
                raise ValueError("'resilience' must be a mapping with 'retry'/'circuitBreaker'")
            for key, value in _translate(
                resilience, {"circuitBreaker": ("circuit_breaker", 1)}
            ).items():
                if key in data:
                    raise ValueError(f"{key!r} given both at top level and under 'resilience'")
                data[key] = value
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        from ._strategies import strategy_names

        if self.strategy not in strategy_names():
            raise ValueError(
                f"unknown strategy {self.strategy!r}; expected one of {', '.join(strategy_names())}"
            )
        names = [p.name for p in self.providers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate provider name(s): {', '.join(dupes)}")
        model = self.default_model
        if model is not None and self.providers and not any(p.model(model) for p in self.providers):
            served = sorted({m.name for p in self.providers for m in p.models})
            raise ValueError(
                f"default_model {model!r} is served by no provider (served: {', '.join(served)})"
            )
        return self

    @classmethod
    def coerce(cls, value: RouterConfig | Mapping[str, Any]) -> RouterConfig:
        """Accept a config, or a mapping in our or the seed's shape.

        Raises:
            ConfigurationError: naming every field at fault.
        """
        if isinstance(value, RouterConfig):
            return value
        if not isinstance(value, Mapping):
            raise ConfigurationError(
                f"config must be a RouterConfig or a mapping, not {type(value).__name__}"
            )
        try:
            return cls.model_validate(value)
        except ValidationError as exc:
            raise ConfigurationError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One readable line per pydantic error: ``providers.0.priority: must be >= 0``.

    Input values are left out on purpose, so a secret never reaches a message.
    """
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        lines.append(f"{prefix}{where or '(root)'}: {err['msg']}")
    return lines
