"""What a simulation runs: the router's configuration, each provider's faults, the traffic.

:func:`default_scenario` is a minute of three providers showing every mechanism;
:func:`scenario_for` gives a deployment's own providers the same roles by priority;
:func:`parse_fault` reads the ``--fault`` option of ``llm-router simulate``;
:func:`injections` lists what a scenario makes each provider do, for reports.

Example:
    >>> scenario = default_scenario(requests=60, duration_seconds=6.0)
    >>> scenario.faults["primary"].outage
    (1.5, 3.0)
"""

from __future__ import annotations

import math
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

    def __post_init__(self) -> None:
        for name in ("failure_rate", "hang_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
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
}


def parse_fault(spec: str, base: Fault | None = None) -> tuple[str, Fault]:
    """Parse ``NAME:key=value,...`` into a provider name and its :class:`Fault`.

    Keys: ``latency``/``latency_ms`` (median), ``latency_p95``/``latency_p95_ms``,
    ``failure_rate``, ``hang_rate``, ``outage=START-END``, ``rate_limit_burst=START-END``
    (seconds) and ``retry_after`` (seconds). Unset keys keep ``base``'s values. A
    median above the given p95 raises the p95 to it.

    Example:
        >>> parse_fault("primary:failure_rate=0.3,latency_ms=50,outage=2-5")
        ('primary', Fault(latency_seconds=0.05, latency_p95_seconds=0.8, failure_rate=0.3, \
outage=(2.0, 5.0), rate_limit_burst=None, retry_after_seconds=2.0, hang_rate=0.0))

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
            else:
                values[target] = float(raw) * scale
        except ValueError:
            raise ValueError(f"fault {spec!r}: bad value in {part!r}") from None
    base = base or Fault()
    median = values.get("latency_seconds", base.latency_seconds)
    if "latency_p95_seconds" not in values and median > base.latency_p95_seconds:
        values["latency_p95_seconds"] = median
    return name, replace(base, **values)


@dataclass(frozen=True)
class Scenario:
    """A run: the router's configuration, each provider's faults and the traffic.

    ``requests`` arrive evenly over ``duration_seconds`` (all at once when 0), at most
    ``concurrency`` in flight; ``speed`` is simulated seconds per real second
    (``math.inf``: as fast as possible). Providers without a fault are healthy.
    ``currency`` names what the configured prices are in (``None``: unknown, the
    config's own unit).
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

    def __post_init__(self) -> None:
        if self.requests < 1 or self.concurrency < 1:
            raise ValueError("requests and concurrency must be >= 1")
        if not (self.duration_seconds >= 0 and math.isfinite(self.duration_seconds)):
            raise ValueError("duration_seconds must be finite and >= 0")
        if not self.speed > 0:
            raise ValueError("speed must be > 0")
        unknown = set(self.faults) - {p.name for p in self.config.providers}
        if unknown:
            raise ValueError(f"faults for unknown provider(s): {', '.join(sorted(unknown))}")


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

    Each entry has ``provider``, ``fault`` (``outage``, ``429 burst``, ``hangs``,
    ``random failures``, ``latency``), ``start``/``end`` (simulated seconds; ``None``:
    the whole run), ``effect`` (a short sentence) and ``fate``, the key of
    ``SimulatedProvider.faults`` that counts the calls it hit (``None`` for latency).

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
