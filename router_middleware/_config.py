"""Configuration as small, validated value objects.

Field names are snake_case with their unit in the name (``*_seconds``). The seed
TypeScript library's shape is accepted as well: camelCase keys, milliseconds
(``initialBackoffMs``), ``tokensPerSecond`` for the request rate and a ``resilience``
section holding ``retry`` and ``circuitBreaker``; it is translated on the way in.

Each field's type, bounds, default and description are written here once: the
deployment settings (``router_middleware.settings``) inherit them through
``RouterFields`` and ``ProviderFields``, and ``docs/ENV.md`` is generated from them.
Numbers are bounded so that the limiter's and the breaker's arithmetic stays finite,
and a boolean is never read as a number. Messages name fields, never their values.

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

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ._config_base import (
    MAX_COUNT,
    ConfigModel,
    Count,
    FieldProblem,
    Number,
    Seconds,
    WaitSeconds,
    repeated,
    translate,
)
from ._config_cache import CacheConfig
from ._config_limits import BudgetConfig, ModelConfig, RateLimitConfig, TokenLimitConfig
from ._config_state import StateConfig
from ._config_streaming import StreamingConfig
from ._config_tools import CapabilitiesConfig, StructuredOutputConfig, ToolLoopConfig
from ._errors import ConfigurationError

__all__ = [
    "BudgetConfig",
    "CacheConfig",
    "CircuitBreakerConfig",
    "FieldProblem",
    "ModelConfig",
    "ProviderConfig",
    "ProviderFields",
    "RateLimitConfig",
    "RetryConfig",
    "RouterConfig",
    "RouterFields",
    "StreamingConfig",
    "TimeoutConfig",
    "TokenLimitConfig",
    "format_validation_error",
    "unserved_default",
]


def unserved_default(default_model: str | None, models: Iterable[ModelConfig]) -> None:
    """Raise when providers serve models but none of them is ``default_model``."""
    served = {m.name for m in models}
    if default_model is not None and served and default_model not in served:
        raise FieldProblem(
            "default_model", f"no provider serves this model ({len(served)} model(s) configured)"
        )


class RetryConfig(ConfigModel):
    """Retries on one provider: exponential backoff with full jitter.

    ``attempts`` is the total number of tries on one provider (1 = no retry), as in the seed.
    """

    enabled: bool = Field(True, description="Whether to retry on the same provider at all.")
    attempts: Count = Field(
        3, le=10_000, description="Tries on one provider, the first included (1: no retry)."
    )
    initial_backoff_seconds: WaitSeconds = Field(0.1, description="Wait before the first retry.")
    max_backoff_seconds: WaitSeconds = Field(1.0, description="Cap on any wait between two tries.")
    multiplier: Number = Field(
        2.0, ge=1, le=100, description="Growth of the wait from one retry to the next."
    )
    jitter: bool = Field(True, description="Draw each wait between 0 and its value (full jitter).")

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "initialBackoffMs": ("initial_backoff_seconds", 0.001),
        "maxBackoffMs": ("max_backoff_seconds", 0.001),
    }

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise FieldProblem("max_backoff_seconds", "must be >= initial_backoff_seconds")
        return self

    @property
    def tries(self) -> int:
        """Tries per provider once ``enabled`` is applied."""
        return self.attempts if self.enabled else 1


class CircuitBreakerConfig(ConfigModel):
    """When a provider is taken out of rotation, and how it comes back.

    The breaker opens after ``threshold`` counted failures within
    ``sampling_duration_seconds`` or, when ``failure_rate_threshold`` is set, when at
    least ``minimum_calls`` calls in the window failed at that rate or more.
    """

    enabled: bool = Field(True, description="Whether failures can open the breaker.")
    # The breaker keeps up to ``threshold`` failure times: the cap bounds that memory.
    threshold: Count = Field(
        5, le=10_000, description="Failures within the sampling window that open it."
    )
    sampling_duration_seconds: Seconds = Field(
        60.0, description="The window failures are counted in."
    )
    reset_timeout_seconds: Seconds = Field(
        30.0, description="How long it stays open before a probe."
    )
    half_open_max_calls: Count = Field(
        1, le=10_000, description="Probe calls let through at once when half-open."
    )
    failure_rate_threshold: Number | None = Field(
        None, gt=0, le=1, description="Also open at this failure share (0-1)."
    )
    minimum_calls: Count = Field(
        10, le=MAX_COUNT, description="Calls needed in the window before the rate counts."
    )

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "samplingDurationMs": ("sampling_duration_seconds", 0.001),
        "resetTimeoutMs": ("reset_timeout_seconds", 0.001),
        "halfOpenMaxCalls": ("half_open_max_calls", 1),
        "failureRateThreshold": ("failure_rate_threshold", 1),
        "minimumCalls": ("minimum_calls", 1),
    }


class TimeoutConfig(ConfigModel):
    """Per-attempt time limits; ``None`` disables one.

    ``attempt_seconds`` bounds a whole non-streaming call; ``first_token_seconds`` the
    wait for a stream's first chunk; ``idle_seconds`` the silence between two chunks.
    """

    attempt_seconds: Seconds | None = Field(
        None, description="Limit on one whole call; none for no limit."
    )
    first_token_seconds: Seconds | None = Field(
        None, description="Limit on the wait for a stream's first chunk."
    )
    idle_seconds: Seconds | None = Field(
        None, description="Limit on silence between two chunks of a stream."
    )

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "attemptMs": ("attempt_seconds", 0.001),
        "firstTokenMs": ("first_token_seconds", 0.001),
        "idleMs": ("idle_seconds", 0.001),
    }


class ProviderFields(ConfigModel):
    """What a deployment can set about one provider: :class:`ProviderConfig` less the name.

    The settings (``router_middleware.settings``) key providers by name, so they take
    these fields as they are.
    """

    type: Literal["openai", "anthropic", "google", "ollama", "custom"] = Field(
        "custom", description="The provider's kind (informational, as in the seed)."
    )
    enabled: bool = Field(True, description="Whether the provider takes requests.")
    priority: Number = Field(1, ge=0, le=10**6, description="Lower is preferred.")
    weight: Number = Field(1, gt=0, le=10**6, description="Its share of traffic under `weighted`.")
    models: list[ModelConfig] = Field(min_length=1, description="The models it serves.")
    rate_limit: RateLimitConfig = Field(RateLimitConfig(), description="Admission limits.")
    retry: RetryConfig | None = Field(None, description="Overrides the router-wide retry.")
    circuit_breaker: CircuitBreakerConfig | None = Field(
        None, description="Overrides the router-wide circuit breaker."
    )
    timeouts: TimeoutConfig | None = Field(None, description="Overrides the router-wide timeouts.")
    capabilities: CapabilitiesConfig = Field(
        CapabilitiesConfig(), description="What it can do, where detection cannot tell."
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list,
        description="Labels a request can select or avoid providers by (`eu`, `free-tier`).",
    )
    budget: BudgetConfig | None = Field(
        None, description="Spend allowed per period; skipped once spent."
    )

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "rateLimit": ("rate_limit", 1),
        "circuitBreaker": ("circuit_breaker", 1),
    }

    @model_validator(mode="after")
    def _unique_models(self) -> ProviderFields:
        again = repeated([m.name for m in self.models])
        if again:
            raise FieldProblem("models", again)
        return self


class ProviderConfig(ProviderFields):
    """One provider: the models it serves, its priority and its limits.

    ``retry``, ``circuit_breaker`` and ``timeouts`` override the router-wide defaults
    for this provider when given. ``handler`` exists for seed parity (the seed puts the
    handler in the config); a handler passed to the router by name takes precedence.

    Example:
        >>> ProviderConfig(name="a", models=[{"name": "m"}], priority=2).priority
        2.0
    """

    name: Annotated[str, Field(min_length=1)] = Field(
        description="The provider's name; runnables are matched to it by name."
    )
    handler: Annotated[Any, Field(exclude=True, repr=False)] = Field(
        None, description="A callable serving requests (seed parity); code given by name wins."
    )

    def model(self, name: str) -> ModelConfig | None:
        """The configuration of model ``name`` if this provider serves it."""
        for m in self.models:
            if m.name == name:
                return m
        return None


class RouterFields(ConfigModel):
    """The router-wide fields: :class:`RouterConfig` less its providers.

    The settings hold providers keyed by name rather than as a list, and take the
    rest as it is, so each field's type, default and description is written here once.
    """

    strategy: Annotated[str, Field(min_length=1)] = Field(
        "round_robin",
        description="How providers are ordered: `round_robin`, `cost_priority_round_robin`, "
        "`weighted`, `least_busy`, `lowest_latency`, `usage_based` or a registered name.",
    )
    default_model: str | None = Field(
        None, description="The model of requests that name none; some provider must serve it."
    )
    retry: RetryConfig = Field(RetryConfig(), description="Retries on one provider.")
    circuit_breaker: CircuitBreakerConfig = Field(
        CircuitBreakerConfig(), description="When a failing provider leaves rotation."
    )
    timeouts: TimeoutConfig = Field(TimeoutConfig(), description="Per-attempt time limits.")
    max_wait_seconds: WaitSeconds = Field(
        5.0, description="How long a request may wait for a provider with free capacity."
    )
    deadline_seconds: Seconds | None = Field(
        120.0, description="Limit on one request end to end, retries included."
    )
    max_attempts: Count = Field(
        10, le=10_000, description="The most provider calls one request may make."
    )
    max_cooldown_seconds: Seconds = Field(
        300.0, description="Cap on how long one Retry-After keeps a provider cooling down."
    )
    structured_output: StructuredOutputConfig = Field(
        StructuredOutputConfig(), description="What an answer that does not validate means."
    )
    tool_loop: ToolLoopConfig = Field(ToolLoopConfig(), description="Turns after tool results.")
    streaming: StreamingConfig = Field(
        StreamingConfig(), description="Whether a stream that breaks part-way resumes."
    )
    cache: CacheConfig = Field(CacheConfig(), description="Reusing answers to identical requests.")
    state: StateConfig = Field(
        StateConfig(), description="Where live state lives: this process, or Redis."
    )
    currency: Annotated[str, Field(min_length=1, max_length=16)] = Field(
        "USD", description="The currency of the configured prices, named with every cost."
    )
    token_counter: Literal["approximate", "tiktoken"] = Field(
        "approximate",
        description="How input tokens are estimated: `approximate` (no dependency) or "
        "`tiktoken` (the `tiktoken` extra).",
    )

    @field_validator("strategy")
    @classmethod
    def _known_strategy(cls, value: str) -> str:
        from ._strategies import strategy_names

        if value not in strategy_names():
            # The value may be anything pasted into the wrong place: name, never quote, it.
            raise ValueError(f"unknown strategy; expected one of {', '.join(strategy_names())}")
        return value


class RouterConfig(RouterFields):
    """The whole router: strategy, providers and resilience defaults.

    ``max_wait_seconds`` is how long a request may wait for a provider with capacity when
    every candidate is saturated; ``deadline_seconds`` bounds a request end to end, and
    ``max_attempts`` caps the provider calls one request may make. A provider's
    ``Retry-After`` cools it down for at most ``max_cooldown_seconds``.
    """

    providers: list[ProviderConfig] = Field(
        default_factory=list, description="The providers, in the order given."
    )

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "loadBalancingStrategy": ("strategy", 1),
        "load_balancing_strategy": ("strategy", 1),
        "defaultModel": ("default_model", 1),
        "circuitBreaker": ("circuit_breaker", 1),
        "maxWaitMs": ("max_wait_seconds", 0.001),
        "deadlineMs": ("deadline_seconds", 0.001),
        "maxAttempts": ("max_attempts", 1),
        "maxCooldownMs": ("max_cooldown_seconds", 0.001),
    }

    @model_validator(mode="before")
    @classmethod
    def _seed_keys(cls, data: Any) -> Any:
        data = translate(data, cls._seed)
        if isinstance(data, dict) and "resilience" in data:
            resilience = data.pop("resilience")
            if not isinstance(resilience, Mapping):
                raise ValueError("'resilience' must be a mapping with 'retry'/'circuitBreaker'")
            for key, value in translate(
                resilience, {"circuitBreaker": ("circuit_breaker", 1)}
            ).items():
                if key in data:
                    raise ValueError(f"{key!r} given both at top level and under 'resilience'")
                data[key] = value
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RouterConfig:
        again = repeated([p.name for p in self.providers])
        if again:
            raise FieldProblem("providers", again)
        unserved_default(self.default_model, (m for p in self.providers for m in p.models))
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

    Example:
        >>> try:
        ...     RouterConfig(retry={"attempts": True})
        ... except ValidationError as exc:
        ...     format_validation_error(exc)
        ['retry.attempts: Input should be a number, not a boolean']
    """
    lines = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(p) for p in err["loc"]]
        problem = (err.get("ctx") or {}).get("error")
        if isinstance(problem, FieldProblem):
            loc.append(problem.field)
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{prefix}{'.'.join(loc) or '(root)'}: {message}")
    return lines
