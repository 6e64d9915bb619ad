"""Run the real router against simulated providers, and report what it did.

The router, its providers and their faults run on a real asyncio event loop whose clock
is virtual: when every task waits, the loop jumps to the next timer instead of sleeping
(pacing the jump by ``speed`` so a watcher sees progress). A minute of traffic takes
seconds, timeouts and backoffs mean what the configuration says, and a run with the
same seed gives the same counts. What to run, a :class:`Scenario`, comes from ``_scenario``.

Example:
    >>> from router_middleware._scenario import default_scenario
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
from dataclasses import asdict, dataclass
from typing import Any

from ._breaker import BreakerTransition
from ._router import ResilientRouter
from ._scenario import Fault, Scenario
from ._virtual import LoopClock, VirtualLoop
from .testing import SimulatedProvider

__all__ = ["SimulationReport", "simulate"]

Progress = Callable[[int, int], None]


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
