"""Run the real router against simulated providers, and report what it did.

The router, its providers and their faults run on a real asyncio event loop whose clock
is virtual: when every task waits, the loop jumps to the next timer instead of sleeping
(pacing the jump by ``speed`` so a watcher sees progress). A minute of traffic takes
seconds, timeouts and backoffs mean what the configuration says, and a run with the
same seed gives the same counts.

Example:
    >>> report = simulate(default_scenario(requests=60, duration_seconds=6.0, speed=math.inf))
    >>> report.requests["total"], sorted(report.providers)
    (60, ['primary', 'secondary', 'slow-backup'])
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ._breaker import BreakerTransition
from ._config import (
    CircuitBreakerConfig,
    ModelConfig,
    ProviderConfig,
    RateLimitConfig,
    RetryConfig,
    RouterConfig,
    TimeoutConfig,
)
from ._router import ResilientRouter
from ._virtual import LoopClock, VirtualLoop
from .testing import SimulatedProvider

__all__ = [
    "Fault",
    "Scenario",
    "SimulationReport",
    "default_scenario",
    "parse_fault",
    "scenario_for",
    "simulate",
]

Progress = Callable[[int, int], None]


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
    """

    config: RouterConfig
    faults: Mapping[str, Fault] = field(default_factory=dict)
    requests: int = 600
    concurrency: int = 32
    duration_seconds: float = 60.0
    seed: int = 0
    speed: float = 10.0
    model: str | None = None

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
                models=_model("chat", 0.15, 0.6),
                rate_limit=RateLimitConfig(requests_per_second=8, max_concurrent=8),
            ),
            ProviderConfig(
                name="secondary",
                priority=2,
                models=_model("chat", 0.2, 0.8),
                rate_limit=RateLimitConfig(requests_per_second=6),
            ),
            ProviderConfig(
                name="slow-backup",
                priority=3,
                models=_model("chat", 0.3, 0.9),
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
    scenario = Scenario(config, {}, **overrides)
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
        Fault(failure_rate=0.01, outage=(0.25 * span, 0.5 * span)),
        Fault(
            latency_seconds=0.5,
            latency_p95_seconds=1.2,
            failure_rate=0.02,
            rate_limit_burst=(0.63 * span, 0.75 * span),
            retry_after_seconds=3.0,
        ),
        Fault(latency_seconds=1.5, latency_p95_seconds=4.0, hang_rate=0.03),
    ]
    return {p.name: role for p, role in zip(ranked, roles, strict=False)}


# -- the report ------------------------------------------------------------------------------


@dataclass
class SimulationReport:
    """What happened: request outcomes, per-provider counts, breaker transitions.

    ``requests`` holds ``total``, ``succeeded``, ``failed``, ``errors`` (by type),
    ``served_by`` (provider -> answers), ``latency_p50``/``latency_p95`` (seconds, as
    the caller saw them) and ``simulated_seconds``. ``providers`` holds each provider's
    router metrics and the faults it injected; ``transitions`` each breaker change.
    ``wall_seconds`` is the real time the run took (the one value a seed does not fix).
    """

    scenario: dict[str, Any]
    requests: dict[str, Any]
    providers: dict[str, dict[str, Any]]
    transitions: list[dict[str, Any]]
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form."""
        return asdict(self)


def _percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = p / 100 * (len(ordered) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


# -- the virtual-time loop -------------------------------------------------------------------


# -- running ---------------------------------------------------------------------------------


def simulate(scenario: Scenario, on_progress: Progress | None = None) -> SimulationReport:
    """Run ``scenario`` through a real :class:`ResilientRouter`; ``on_progress(done, total)``
    is called as requests finish. Safe to call under a running loop (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run(scenario, on_progress)
    box: list[SimulationReport | BaseException] = []

    def worker() -> None:
        try:
            box.append(_run(scenario, on_progress))
        except BaseException as exc:  # handed to the caller's thread
            box.append(exc)

    thread = threading.Thread(target=worker, name="router-simulation")
    thread.start()
    thread.join()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _run(scenario: Scenario, on_progress: Progress | None) -> SimulationReport:
    loop = VirtualLoop(scenario.speed)
    began = time.perf_counter()
    try:
        report = loop.run_until_complete(_drive(scenario, LoopClock(loop), on_progress))
    finally:
        loop.close()
    report.wall_seconds = round(time.perf_counter() - began, 3)
    return report


def _providers(scenario: Scenario, clock: LoopClock) -> dict[str, SimulatedProvider]:
    built = {}
    for pc in scenario.config.providers:
        fault = scenario.faults.get(pc.name, Fault())
        built[pc.name] = SimulatedProvider(
            text="simulated answer",
            latency=fault.latency_seconds,
            latency_p95=fault.latency_p95_seconds,
            failure_rate=fault.failure_rate,
            outages=[fault.outage] if fault.outage else [],
            rate_limit_bursts=[fault.rate_limit_burst] if fault.rate_limit_burst else [],
            retry_after=fault.retry_after_seconds,
            hang_rate=fault.hang_rate,
            hang_seconds=3600.0,
            seed=random.Random(f"{scenario.seed}:{pc.name}").getrandbits(32),
            clock=clock,
            epoch=clock.now(),
            usage=(60, 150),
        )
    return built


async def _drive(
    scenario: Scenario, clock: LoopClock, on_progress: Progress | None
) -> SimulationReport:
    providers = _providers(scenario, clock)
    config = scenario.config
    # Each provider serves every model of its config through one simulated model.
    targets = {pc.name: {m.name: providers[pc.name] for m in pc.models} for pc in config.providers}
    router = ResilientRouter(targets, config, clock=clock, seed=scenario.seed)
    start = clock.now()
    transitions: list[dict[str, Any]] = []

    def record(t: BreakerTransition) -> None:
        transitions.append(
            {
                "at": round(t.at - start, 3),
                "provider": t.name,
                "from": t.from_state.value,
                "to": t.to_state.value,
                "reason": t.reason,
            }
        )

    router.add_listener(record)
    total = scenario.requests
    gap = scenario.duration_seconds / total
    slots = asyncio.Semaphore(scenario.concurrency)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    served: dict[str, int] = {}
    done = 0

    async def one(i: int) -> None:
        nonlocal done
        await asyncio.sleep(max(0.0, start + i * gap - clock.now()))
        async with slots:
            begun = clock.now()
            try:
                message = await router.ainvoke(f"request {i}", model=scenario.model)
            except Exception as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            else:
                name = message.response_metadata["router"]["provider"]
                served[name] = served.get(name, 0) + 1
                latencies.append(clock.now() - begun)
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    tasks = [asyncio.ensure_future(one(i)) for i in range(total)]
    # A request outliving its arrival time plus the deadline is stuck: stop waiting.
    grace = (config.deadline_seconds or 60.0) + config.max_wait_seconds + 1.0
    await asyncio.wait(tasks, timeout=scenario.duration_seconds + grace)
    stuck = sum(not t.done() for t in tasks)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if stuck:
        errors["Unfinished"] = stuck
    return SimulationReport(
        scenario=_describe(scenario),
        requests={
            "total": total,
            "succeeded": len(latencies),
            "failed": total - len(latencies),
            "errors": dict(sorted(errors.items())),
            "served_by": {n: served.get(n, 0) for n in providers},
            "latency_p50": _round(_percentile(latencies, 50)),
            "latency_p95": _round(_percentile(latencies, 95)),
            "simulated_seconds": round(clock.now() - start, 3),
        },
        providers=_provider_rows(router, providers),
        transitions=transitions,
        wall_seconds=0.0,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _provider_rows(
    router: ResilientRouter, providers: Mapping[str, SimulatedProvider]
) -> dict[str, dict[str, Any]]:
    snapshot = router.metrics()["providers"]
    rows = {}
    for name, m in snapshot.items():
        rows[name] = {
            "requests": m["total_requests"],
            "successes": m["successful_requests"],
            "failures": m["failed_requests"],
            "rate_limited": m["rate_limited_requests"],
            "breaker_trips": m["circuit_breaker_trips"],
            "retries": m["retries"],
            "fallbacks": m["fallbacks"],
            "timeouts": m["timeouts"],
            "latency_p50": _round(m["latency_p50"]),
            "latency_p95": _round(m["latency_p95"]),
            "input_tokens": m["input_tokens"],
            "output_tokens": m["output_tokens"],
            "cost": round(m["cost"], 6),
            "breaker_state": m["circuit_breaker_state"],
            "calls": providers[name].calls,
            "injected": dict(sorted(providers[name].faults.items())),
        }
    return rows


def _describe(scenario: Scenario) -> dict[str, Any]:
    return {
        "requests": scenario.requests,
        "concurrency": scenario.concurrency,
        "duration_seconds": scenario.duration_seconds,
        "seed": scenario.seed,
        "speed": None if math.isinf(scenario.speed) else scenario.speed,
        "model": scenario.model,
        "strategy": scenario.config.strategy,
        "faults": {n: asdict(f) for n, f in scenario.faults.items()},
    }
