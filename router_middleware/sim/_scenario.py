"""What a simulation runs: the router's configuration, each provider's faults, the traffic.

:func:`default_scenario` is a minute of three providers showing every mechanism;
:func:`scenario_for` gives a deployment's own providers the same roles by priority;
:func:`parse_fault` reads the ``--fault`` option of ``llm-router simulate``;
:func:`injections` lists what a scenario makes each provider do, for reports;
:class:`PromptMix` is traffic of varied sizes, for token limits (``_traffic``).

Example:
    >>> scenario = default_scenario(requests=60, duration_seconds=6.0)
    >>> scenario.faults["primary"].outage
    (1.5, 3.0)
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
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

__all__ = [
    "Fault",
    "PromptMix",
    "Scenario",
    "default_scenario",
    "injections",
    "parse_fault",
    "scenario_for",
]


@dataclass(frozen=True)
class Fault:
    """How one simulated provider behaves; times are seconds from the start of the run.

    Example:
        >>> Fault(outage=(10.0, 20.0)).outage
        (10.0, 20.0)
    """

    latency_seconds: float = 0.3
    latency_p95_seconds: float = 0.8
    failure_rate: float = 0.0
    outage: tuple[float, float] | None = None
    rate_limit_burst: tuple[float, float] | None = None
    retry_after_seconds: float = 2.0
    hang_rate: float = 0.0
    tokens_per_minute: int | None = None
    """The provider's own limit, enforced with 429s (``None``: none)."""
    max_input_tokens: int | None = None
    """The provider's context window: longer prompts get a 400 (``None``: any fits)."""

    def __post_init__(self) -> None:
        for name in ("failure_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        for name in ("tokens_per_minute", "max_input_tokens"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1")
        if not 0.0 <= self.latency_seconds <= self.latency_p95_seconds:
            raise ValueError("latency must satisfy 0 <= latency <= latency_p95")
        for name in ("outage", "rate_limit_burst"):
            window = getattr(self, name)
            if window is not None and not 0.0 <= window[0] < window[1]:
                raise ValueError(f"{name} must be START-END with 0 <= START < END")


_FAULT_KEYS: dict[str, tuple[str, float]] = {
    "latency": ("latency_seconds", 1.0),
    "latency_ms": ("latency_seconds", 0.001),
    "latency_p95": ("latency_p95_seconds", 1.0),
    "latency_p95_ms": ("latency_p95_seconds", 0.001),
    "failure_rate": ("failure_rate", 1.0),
    "outage": ("outage", 1.0),
    "rate_limit_burst": ("rate_limit_burst", 1.0),
    "retry_after": ("retry_after_seconds", 1.0),
    "hang_rate": ("hang_rate", 1.0),
    "tokens_per_minute": ("tokens_per_minute", 1.0),
    "max_input_tokens": ("max_input_tokens", 1.0),
}
_WHOLE = {"tokens_per_minute", "max_input_tokens"}


def parse_fault(spec: str, base: Fault | None = None) -> tuple[str, Fault]:
    """Parse ``NAME:key=value,...`` into a provider name and its :class:`Fault`.

    Keys: ``latency``/``latency_ms`` (median), ``latency_p95``/``latency_p95_ms``,
    ``failure_rate``, ``hang_rate``, ``outage=START-END``, ``rate_limit_burst=START-END``
    (seconds), ``retry_after`` (seconds), and the provider's own token limits
    ``tokens_per_minute`` and ``max_input_tokens`` (whole tokens). Unset keys keep
    ``base``'s values. A median above the given p95 raises the p95 to it.

    Example:
        >>> parse_fault("primary:failure_rate=0.3,latency_ms=50,outage=2-5")
        ('primary', Fault(latency_seconds=0.05, latency_p95_seconds=0.8, failure_rate=0.3, \
outage=(2.0, 5.0), rate_limit_burst=None, retry_after_seconds=2.0, hang_rate=0.0, \
tokens_per_minute=None, max_input_tokens=None))

    Raises:
        ValueError: naming the part of ``spec`` at fault.
    """
    name, sep, body = spec.partition(":")
    if not sep or not name:
        raise ValueError(f"fault {spec!r}: expected NAME:key=value,...")
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in body.split(","))):
        key, eq, raw = part.partition("=")
        if not eq or key not in _FAULT_KEYS:
            raise ValueError(
                f"fault {spec!r}: unknown part {part!r}; keys: {', '.join(_FAULT_KEYS)}"
            )
        target, scale = _FAULT_KEYS[key]
        try:
            if target in ("outage", "rate_limit_burst"):
                start, dash, end = raw.partition("-")
                if not dash:
                    raise ValueError
                values[target] = (float(start), float(end))
            elif target in _WHOLE:
                values[target] = int(raw)
            else:
                values[target] = float(raw) * scale
        except ValueError:
            raise ValueError(f"fault {spec!r}: bad value in {part!r}") from None
    base = base or Fault()
    median = values.get("latency_seconds", base.latency_seconds)
    if "latency_p95_seconds" not in values and median > base.latency_p95_seconds:
        values["latency_p95_seconds"] = median
    return name, replace(base, **values)


# Filler for prompts of a given size: plain words, four characters a token.
_FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "


@dataclass(frozen=True)
class PromptMix:
    """Requests of varied sizes, for token limits: each request's prompt and
    ``max_tokens`` drawn from the run's seed and the request's index (so the same
    whatever order requests run in).

    Prompt sizes are log-uniform over ``prompt_tokens`` (as the providers count them:
    many short prompts, a few long ones, as chat traffic goes); ``max_tokens`` is one of
    ``max_tokens`` (``None``: the request sets none); answers are ``answer_tokens`` long,
    at most the request's ``max_tokens``.

    Example:
        >>> text, max_tokens = PromptMix().request(7, seed=0)
        >>> text[:16], len(text), max_tokens  # 52 + 6 tokens as the providers count it
        ('request 7: lorem', 208, 512)
    """

    prompt_tokens: tuple[int, int] = (30, 6000)
    max_tokens: tuple[int | None, ...] = (128, 256, 512, 1024, None)
    answer_tokens: tuple[int, int] = (40, 800)

    def __post_init__(self) -> None:
        if not 7 <= self.prompt_tokens[0] <= self.prompt_tokens[1]:
            raise ValueError("prompt_tokens must be (LOW, HIGH) with 7 <= LOW <= HIGH")
        if not 0 <= self.answer_tokens[0] <= self.answer_tokens[1]:
            raise ValueError("answer_tokens must be (LOW, HIGH) with 0 <= LOW <= HIGH")
        if not self.max_tokens or any(m is not None and m < 1 for m in self.max_tokens):
            raise ValueError("max_tokens must list values >= 1 (or None)")

    def request(self, index: int, seed: int) -> tuple[str, int | None]:
        """Request ``index``'s prompt and ``max_tokens``."""
        rng = random.Random(f"{seed}:prompt:{index}")
        low, high = self.prompt_tokens
        tokens = round(math.exp(rng.uniform(math.log(low), math.log(high))))
        head = f"request {index}: "
        # 6 tokens are the providers' overheads (a message, the reply's priming).
        size = max(len(head), 4 * (tokens - 6))
        body = _FILLER * (size // len(_FILLER) + 1)
        return (head + body)[:size], rng.choice(self.max_tokens)


@dataclass(frozen=True)
class Scenario:
    """A run: the router's configuration, each provider's faults and the traffic.

    ``requests`` arrive evenly over ``duration_seconds`` (all at once when 0), at most
    ``concurrency`` in flight; ``speed`` is simulated seconds per real second
    (``math.inf``: as fast as possible). Providers without a fault are healthy.
    ``currency`` names what the configured prices are in (``None``: unknown, the
    config's own unit). ``prompts``, when set, sends requests of varied sizes, whose
    tokens every provider counts; by default each request is a short ``request N``
    and every answer reports the same usage.

    ``replicas`` runs that many routers (replicas of one deployment), each sending the
    traffic above (``replicas`` x ``requests`` in all) to the same simulated providers,
    whose own limits count every replica's calls. Each replica keeps its state in its
    own memory unless ``shared_state`` (one in-memory store for all: what Redis gives a
    deployment, in-process) or ``state_url`` (that Redis, on the simulated clock).
    """

    config: RouterConfig
    faults: Mapping[str, Fault] = field(default_factory=dict)
    requests: int = 600
    concurrency: int = 32
    duration_seconds: float = 60.0
    seed: int = 0
    speed: float = 10.0
    model: str | None = None
    currency: str | None = None
    prompts: PromptMix | None = None
    replicas: int = 1
    shared_state: bool = False
    state_url: str | None = field(default=None, repr=False)  # it may hold a password

    def __post_init__(self) -> None:
        if self.requests < 1 or self.concurrency < 1:
            raise ValueError("requests and concurrency must be >= 1")
        if self.replicas < 1:
            raise ValueError("replicas must be >= 1")
        if not (self.duration_seconds >= 0 and math.isfinite(self.duration_seconds)):
            raise ValueError("duration_seconds must be finite and >= 0")
        if not self.speed > 0:
            raise ValueError("speed must be > 0")
        unknown = set(self.faults) - {p.name for p in self.config.providers}
        if unknown:
            raise ValueError(f"faults for unknown provider(s): {', '.join(sorted(unknown))}")

    @property
    def prompt_mix(self) -> PromptMix | None:
        """The traffic a run sends: ``prompts``; else, when a provider limits tokens, the
        default mix (a limit means nothing to requests of one fixed size); else
        ``None``, the fixed ``request N`` prompts."""
        if self.prompts is not None:
            return self.prompts
        limits = any(
            f.tokens_per_minute is not None or f.max_input_tokens is not None
            for f in self.faults.values()
        )
        return PromptMix() if limits else None


def _model(name: str, cost_in: float, cost_out: float) -> list[ModelConfig]:
    return [
        ModelConfig(name=name, cost_per_1k_input_tokens=cost_in, cost_per_1k_output_tokens=cost_out)
    ]


def default_scenario(**overrides: Any) -> Scenario:
    """Three providers over a minute: an outage and recovery, a 429 burst, a slow backup.

    ``primary`` is cheap, preferred and rate limited, so overflow goes to ``secondary``;
    prices are per 1k tokens, in USD, at the scale of today's small hosted models;
    it goes down from 25% to 50% of the run (its breaker opens, probes, closes again).
    ``secondary`` answers 429 with ``Retry-After`` from 63% to 75%. ``slow-backup`` is
    slow and sometimes hangs, which its attempt timeout cuts short. Times scale with
    ``duration_seconds``.
    """
    config = RouterConfig(
        strategy="cost_priority_round_robin",
        providers=[
            ProviderConfig(
                name="primary",
                priority=1,
                models=_model("chat", 0.00015, 0.0006),
                rate_limit=RateLimitConfig(requests_per_second=8, max_concurrent=8),
            ),
            ProviderConfig(
                name="secondary",
                priority=2,
                models=_model("chat", 0.0008, 0.004),
                rate_limit=RateLimitConfig(requests_per_second=6),
            ),
            ProviderConfig(
                name="slow-backup",
                priority=3,
                models=_model("chat", 0.0025, 0.01),
                rate_limit=RateLimitConfig(max_concurrent=16),
            ),
        ],
        retry=RetryConfig(attempts=2, initial_backoff_seconds=0.2, max_backoff_seconds=2.0),
        circuit_breaker=CircuitBreakerConfig(
            threshold=5, sampling_duration_seconds=10.0, reset_timeout_seconds=4.0
        ),
        timeouts=TimeoutConfig(attempt_seconds=5.0),
        max_wait_seconds=2.0,
        deadline_seconds=15.0,
    )
    scenario = Scenario(config, {}, **{"currency": "USD", **overrides})
    return replace(scenario, faults=_default_faults(config, scenario.duration_seconds))


def scenario_for(
    config: RouterConfig, faults: Mapping[str, Fault] | None = None, **kw: Any
) -> Scenario:
    """Simulate ``config``: by default its preferred provider has an outage, the next a
    429 burst, the third is slow; ``faults`` replaces a provider's behaviour."""
    scenario = Scenario(config, {}, **kw)
    chosen = {**_default_faults(config, scenario.duration_seconds), **(faults or {})}
    return replace(scenario, faults=chosen)


def _default_faults(config: RouterConfig, duration: float) -> dict[str, Fault]:
    span = duration or 60.0
    ranked = sorted(config.providers, key=lambda p: p.priority)
    roles = [
        Fault(failure_rate=0.01, outage=(round(0.25 * span, 3), round(0.5 * span, 3))),
        Fault(
            latency_seconds=0.5,
            latency_p95_seconds=1.2,
            failure_rate=0.02,
            rate_limit_burst=(round(0.63 * span, 3), round(0.75 * span, 3)),
            retry_after_seconds=3.0,
        ),
        Fault(latency_seconds=1.5, latency_p95_seconds=4.0, hang_rate=0.03),
    ]
    return {p.name: role for p, role in zip(ranked, roles, strict=False)}


def injections(scenario: Scenario) -> list[dict[str, Any]]:
    """What each provider of ``scenario`` is made to do, one entry per fault.

    Each entry has ``provider``, ``fault`` (``context window``, ``token limit``,
    ``outage``, ``429 burst``, ``hangs``, ``random failures``, ``latency``),
    ``start``/``end`` (simulated seconds; ``None``: the whole run), ``effect`` (a short
    sentence) and ``fate``, the key of ``SimulatedProvider.faults`` that counts the
    calls it hit (``None`` for latency).

    Example:
        >>> [(i["fault"], i["start"], i["end"]) for i in injections(default_scenario())][:2]
        [('outage', 15.0, 30.0), ('random failures', None, None)]
    """
    config = scenario.config
    attempt, deadline = config.timeouts.attempt_seconds, config.deadline_seconds
    if attempt is not None:
        ends = f"cut by the {attempt:g}s attempt timeout"
    elif deadline is not None:
        ends = f"no attempt timeout: cut by the {deadline:g}s deadline"
    else:
        ends = "no timeout cuts them"
    found: list[dict[str, Any]] = []
    for pc in config.providers:
        f = scenario.faults.get(pc.name, Fault())
        rows: list[tuple[str, tuple[float, float] | None, str, str | None]] = []
        if f.max_input_tokens is not None:
            effect = (
                f"answers HTTP 400 context_length_exceeded to prompts over "
                f"{f.max_input_tokens:,} tokens"
            )
            rows.append(("context window", None, effect, "too_long"))
        if f.tokens_per_minute is not None:
            effect = (
                f"answers HTTP 429 with Retry-After when prompt + max_tokens would take its "
                f"60 s window over {f.tokens_per_minute:,} tokens"
            )
            rows.append(("token limit", None, effect, "token_limited"))
        if f.outage:
            rows.append(("outage", f.outage, "every call fails fast with HTTP 503", "outage"))
        if f.rate_limit_burst:
            effect = f"every call gets HTTP 429 with Retry-After {f.retry_after_seconds:g}s"
            rows.append(("429 burst", f.rate_limit_burst, effect, "rate_limited"))
        if f.hang_rate:
            effect = f"{_percent(f.hang_rate)} of calls never answer ({ends})"
            rows.append(("hangs", None, effect, "hang"))
        if f.failure_rate:
            effect = f"{_percent(f.failure_rate)} of calls raise ConnectionError"
            rows.append(("random failures", None, effect, "failure"))
        effect = f"answers take {f.latency_seconds:g}s (median), {f.latency_p95_seconds:g}s (p95)"
        rows.append(("latency", None, effect, None))
        found += [
            {
                "provider": pc.name,
                "fault": kind,
                "start": None if window is None else window[0],
                "end": None if window is None else window[1],
                "effect": effect,
                "fate": fate,
            }
            for kind, window, effect, fate in rows
        ]
    return found


def _percent(share: float) -> str:
    return f"{share * 100:g}%"
