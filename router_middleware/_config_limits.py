"""Configuration of what a provider may be sent: its models' windows and prices, its rate
limits in requests and in LLM tokens, and its budget.

Token limits are per minute, as providers state them: ``tokens_per_minute`` counts input
and output together (OpenAI, Azure), ``input_tokens_per_minute`` and
``output_tokens_per_minute`` count them apart (Anthropic). A provider's limits apply to
all its models together; a model's own ``token_limits`` add limits for that model alone.

The seed's ``maxTokens`` (``max_tokens`` here before context windows existed) is read as
``max_input_tokens``: its examples give ``gpt-4`` 8,192, that model's context window.

Example:
    >>> m = ModelConfig.model_validate({"name": "gpt-4", "maxTokens": 8192})
    >>> m.max_input_tokens, m.max_output_tokens
    (8192, None)
    >>> RateLimitConfig(tokens_per_minute=60_000, requests_per_second=5).tokens_per_minute
    60000
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, ClassVar

from pydantic import Field

from ._config_base import MAX_COUNT, MIN_SECONDS, ConfigModel, Cost, Count, Number, Seconds

__all__ = [
    "DEFAULT_OUTPUT_RESERVE",
    "BudgetConfig",
    "ModelConfig",
    "RateLimitConfig",
    "TokenLimitConfig",
]

DEFAULT_OUTPUT_RESERVE = 1024
"""Output tokens charged up front for a request that sets no ``max_tokens``, on a model
that configures no ``output_reserve_tokens``."""

_Tokens = Annotated[Count, Field(le=MAX_COUNT)]


class TokenLimitConfig(ConfigModel):
    """Limits in LLM tokens per minute; ``None`` for no such limit."""

    tokens_per_minute: _Tokens | None = Field(
        None, description="Input and output tokens per minute together (OpenAI, Azure style)."
    )
    input_tokens_per_minute: _Tokens | None = Field(
        None, description="Input tokens per minute, cache reads not counted (Anthropic style)."
    )
    output_tokens_per_minute: _Tokens | None = Field(
        None, description="Output tokens per minute (Anthropic style)."
    )

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "tokensPerMinute": ("tokens_per_minute", 1),
        "inputTokensPerMinute": ("input_tokens_per_minute", 1),
        "outputTokensPerMinute": ("output_tokens_per_minute", 1),
    }


class ModelConfig(ConfigModel):
    """A model a provider serves: its price, its context window, its own token limits.

    Example:
        >>> ModelConfig(name="gpt-4o-mini", cost_per_1k_input_tokens=0.00015).name
        'gpt-4o-mini'
    """

    name: Annotated[str, Field(min_length=1)] = Field(
        description="The model's name, as requests name it."
    )
    cost_per_1k_input_tokens: Cost = Field(0.0, description="Price of 1,000 input tokens.")
    cost_per_1k_output_tokens: Cost = Field(0.0, description="Price of 1,000 output tokens.")
    max_input_tokens: _Tokens | None = Field(
        None,
        description="Its context window for input (as in LangChain's model profiles); "
        "longer requests go to another provider. The seed's `maxTokens`.",
    )
    max_output_tokens: _Tokens | None = Field(
        None, description="The most output tokens a request may ask for (`max_tokens`)."
    )
    output_reserve_tokens: _Tokens | None = Field(
        None,
        description="Output tokens charged up front to token limits and budgets when a "
        f"request sets no `max_tokens` (default {DEFAULT_OUTPUT_RESERVE}, at most "
        "`max_output_tokens`).",
    )
    token_limits: TokenLimitConfig | None = Field(
        None, description="Token limits of this model alone, beside the provider's."
    )

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "costPer1kInputTokens": ("cost_per_1k_input_tokens", 1),
        "costPer1kOutputTokens": ("cost_per_1k_output_tokens", 1),
        "maxTokens": ("max_input_tokens", 1),
        "max_tokens": ("max_input_tokens", 1),
        "maxInputTokens": ("max_input_tokens", 1),
        "maxOutputTokens": ("max_output_tokens", 1),
        "tokenLimits": ("token_limits", 1),
    }

    @property
    def average_cost_per_1k(self) -> float:
        """Mean of the input and output price: the price the cost strategy ranks by."""
        return (self.cost_per_1k_input_tokens + self.cost_per_1k_output_tokens) / 2

    @property
    def output_reserve(self) -> int:
        """Output tokens charged up front for a request without ``max_tokens``."""
        reserve = self.output_reserve_tokens or DEFAULT_OUTPUT_RESERVE
        return min(reserve, self.max_output_tokens or reserve)


class RateLimitConfig(TokenLimitConfig):
    """Per-provider admission limits. ``None`` means unlimited.

    ``burst`` defaults to ``max(1, ceil(requests_per_second))``: one second's worth.
    """

    requests_per_second: Number | None = Field(
        None,
        ge=MIN_SECONDS,
        le=MAX_COUNT,
        description="Token-bucket refill rate; none for no rate limit.",
    )
    burst: Count | None = Field(
        None, le=MAX_COUNT, description="Bucket size; by default one second's worth of requests."
    )
    max_concurrent: Count | None = Field(
        None, le=MAX_COUNT, description="Calls in flight at once; none for no cap."
    )

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        **TokenLimitConfig._seed,
        "tokensPerSecond": ("requests_per_second", 1),
        "requestsPerSecond": ("requests_per_second", 1),
        "maxConcurrent": ("max_concurrent", 1),
    }

    @property
    def effective_burst(self) -> int:
        if self.burst is not None:
            return self.burst
        return max(1, math.ceil(self.requests_per_second or 1))


class BudgetConfig(ConfigModel):
    """Spend allowed per period; the provider is skipped once it is spent.

    Periods follow one another from the provider's first request; a request is charged its
    estimated cost when admitted and its real cost (from usage) when it ends.

    Example:
        >>> BudgetConfig(max_cost=5, period_seconds=86_400).max_cost
        5.0
    """

    max_cost: Annotated[Number, Field(ge=0, le=10**9)] = Field(
        description="Spend allowed per period, in the prices' currency."
    )
    period_seconds: Seconds = Field(86_400.0, description="Length of one budget period.")

    _seed: ClassVar[Mapping[str, tuple[str, float]]] = {
        "maxCost": ("max_cost", 1),
        "periodMs": ("period_seconds", 0.001),
    }
