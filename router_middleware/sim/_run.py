"""Run the real router against simulated providers, and report what it did.

The router, its providers and their faults run on a real asyncio event loop whose clock
is virtual: when every task waits, the loop jumps to the next timer instead of sleeping
(pacing the jump by ``speed`` so a watcher sees progress). A minute of traffic takes
seconds, timeouts and backoffs mean what the configuration says, and a run with the
same seed gives the same counts. What to run, a :class:`Scenario`, comes from ``_scenario``.

Example:
    >>> from router_middleware.sim import default_scenario
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
from copy import deepcopy
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._breaker import BreakerTransition
from .._router import ResilientRouter
from ._failures import failure, reason
from ._provider import SimulatedProvider
from ._replicas import merged, percentile, replica_stores, store_name
from ._scenario import Fault, Scenario, injections
from ._skips import SkipTally, current_request
from ._virtual import LoopClock, VirtualLoop

__all__ = ["SimulationReport", "simulate"]

Progress = Callable[[int, int], None]


# -- the report ------------------------------------------------------------------------------


@dataclass
class SimulationReport:
    """What happened: what was injected, request outcomes, per-provider counts, breaker
    transitions and why each failed request failed. Times are simulated seconds from the
    start of the run.

    ``scenario`` describes the run (traffic, seed, ``currency`` of the prices, and
    either ``tokens_per_answer``, the fixed usage of every answer, or ``prompts``, the
    :class:`~._scenario.PromptMix` whose tokens each provider counted). ``injected``
    lists each provider's faults (see :func:`~router_middleware.sim._scenario.injections`)
    with ``hits``, the calls each fault hit. ``requests`` holds ``total``, ``succeeded``,
    ``failed``, ``errors`` (by type), ``served_by`` (provider -> answers),
    ``latency_p50``/``latency_p95`` (seconds, as the caller saw them), ``cost`` (the sum
    over providers) and ``simulated_seconds``.
    ``providers`` holds each provider's router metrics: ``throttled`` counts the
    provider's own 429s, ``rate_limited`` the turns the router itself skipped it (its rate
    limit, concurrency cap or a Retry-After cool-down), ``cost`` is tokens times the
    config's prices per 1k tokens; ``injected`` counts the fates its calls met;
    ``skipped_for`` counts the requests the router skipped it for, by reason (``token
    limit``, ``context window``, ``rate limited``, ...); ``tokens_per_minute`` is the
    limit the provider itself enforces, ``peak_window_tokens`` the most its 60 s window
    held (at ``peak_window_at``), from its own log (``None``: it counts no tokens).
    ``transitions`` lists each breaker change; ``failures`` each failed request:
    ``request`` (its index), ``sent_at`` (its arrival), ``failed_at`` (``None``: still
    running when the run stopped), ``error`` (the exception type) and ``reason``.
    ``wall_seconds`` is the real time the run took (the one value a seed does not fix).
    ``timeline`` lists each finished request: ``request``, ``at`` (when it ended),
    ``latency`` (seconds, from admission to the end) and ``provider`` (``None``: failed).
    ``router`` is the router as the run left it (its ``metrics()``), not in ``to_dict``
    (with several replicas: the first replica's).
    ``replicas`` (a run of several replicas, else empty) holds each replica's outcomes as
    ``requests`` does, with ``store``; ``requests`` and ``providers`` are then the totals
    over every replica (a provider's latency percentiles over all their samples), and
    each failure, transition and timeline entry names its ``replica``.
    """

    scenario: dict[str, Any]
    requests: dict[str, Any]
    providers: dict[str, dict[str, Any]]
    transitions: list[dict[str, Any]]
    wall_seconds: float
    injected: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    timeline: list[dict[str, Any]] = field(default_factory=list)
    router: ResilientRouter | None = field(default=None, repr=False, compare=False)
    replicas: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable form (without the router)."""
        # Field by field: asdict would deep-copy the router, locks and all.
        return {f.name: deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "router"}


# -- running ---------------------------------------------------------------------------------

# Input and output tokens of every simulated answer (failures use none).
_USAGE = (60, 150)


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
    mix = scenario.prompt_mix
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
            usage=_USAGE,
            # With prompts of varied sizes every provider counts tokens, limit or none.
            answer_tokens=None if mix is None else mix.answer_tokens,
            tokens_per_minute=fault.tokens_per_minute,
            max_input_tokens=fault.max_input_tokens,
            # What it charges a call without max_tokens: the router's reserve, as a
            # deployment would configure it to match.
            output_reserve=pc.models[0].output_reserve,
        )
    return built


async def _drive(
    scenario: Scenario, clock: LoopClock, on_progress: Progress | None
) -> SimulationReport:
    providers = _providers(scenario, clock)
    config = scenario.config
    # Each provider serves every model of its config through one simulated model, which
    # every replica calls: its own limits count all their calls.
    targets = {pc.name: {m.name: providers[pc.name] for m in pc.models} for pc in config.providers}
    stores, close_stores = replica_stores(scenario, clock)
    routers = [
        ResilientRouter(targets, config, clock=clock, seed=scenario.seed + r, store=store)
        for r, store in enumerate(stores)
    ]
    skips = SkipTally()
    for router in routers:
        skips.watch(router)
    mix = scenario.prompt_mix
    start = clock.now()
    transitions: list[dict[str, Any]] = []
    several = scenario.replicas > 1

    def recorder(replica: int) -> Callable[[BreakerTransition], None]:
        def record(t: BreakerTransition) -> None:
            moved = {
                "at": round(t.at - start, 3),
                "provider": t.name,
                "from": t.from_state.value,
                "to": t.to_state.value,
                "reason": t.reason,
            }
            transitions.append({**moved, "replica": replica} if several else moved)

        return record

    for r, router in enumerate(routers):
        router.add_listener(recorder(r))
    per_replica = scenario.requests
    total = per_replica * scenario.replicas
    gap = scenario.duration_seconds / per_replica
    latencies: list[list[float]] = [[] for _ in routers]
    failures: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []  # for the plots: who answered when, how fast
    served: list[dict[str, int]] = [{} for _ in routers]
    done = 0

    async def one(r: int, i: int, slots: asyncio.Semaphore) -> None:
        nonlocal done
        router, index = routers[r], r * per_replica + i
        await asyncio.sleep(max(0.0, start + i * gap - clock.now()))
        async with slots:
            begun = clock.now()
            current_request.set(index)  # this task's own context: its skips count as its own
            prompt, options = f"request {i}", dict[str, Any]()
            if mix is not None:
                prompt, max_tokens = mix.request(i, scenario.seed)
                if max_tokens is not None:
                    options["max_tokens"] = max_tokens
            name = None
            try:
                message = await router.ainvoke(prompt, model=scenario.model, **options)
            except Exception as exc:
                ended = clock.now() - start
                failed = failure(index, i * gap, ended, type(exc).__name__, reason(exc))
                failures.append({**failed, "replica": r} if several else failed)
            else:
                name = message.response_metadata["router"]["provider"]
                served[r][name] = served[r].get(name, 0) + 1
                latencies[r].append(clock.now() - begun)
            took, at = round(clock.now() - begun, 4), round(clock.now() - start, 3)
            entry = {"request": index, "at": at, "latency": took, "provider": name}
            timeline.append({**entry, "replica": r} if several else entry)
        done += 1
        if on_progress is not None:
            on_progress(done, total)

    # Each replica has its own callers: at most ``concurrency`` of its requests in flight.
    tasks = []
    for r in range(len(routers)):
        slots = asyncio.Semaphore(scenario.concurrency)
        tasks += [asyncio.ensure_future(one(r, i, slots)) for i in range(per_replica)]
    try:
        # A request outliving its arrival time plus the deadline is stuck: stop waiting.
        grace = (config.deadline_seconds or 60.0) + config.max_wait_seconds + 1.0
        await asyncio.wait(tasks, timeout=scenario.duration_seconds + grace)
        unfinished = f"no answer {grace:g}s after the last arrival, when the run stopped"
        for index, task in enumerate(tasks):
            if not task.done():
                r, i = divmod(index, per_replica)
                failed = failure(index, i * gap, None, "Unfinished", unfinished)
                failures.append({**failed, "replica": r} if several else failed)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        close_stores()
    failures.sort(key=lambda f: (f["sent_at"], f["request"]))
    snapshots = [router.metrics()["providers"] for router in routers]
    rows = _provider_rows(merged(snapshots, routers), providers, skips)
    replicas = [
        {
            "replica": r,
            "store": store_name(scenario),
            **_outcomes(
                per_replica,
                latencies[r],
                [f for f in failures if f.get("replica", 0) == r],
                served[r],
                providers,
            ),
            "cost": round(sum(p["cost"] for p in snapshot.values()), 6),
        }
        for r, snapshot in enumerate(snapshots)
    ]
    every = [x for lat in latencies for x in lat]
    totals = {n: sum(s.get(n, 0) for s in served) for n in providers}
    return SimulationReport(
        scenario=_describe(scenario),
        requests={
            **_outcomes(total, every, failures, totals, providers),
            "cost": round(sum(row["cost"] for row in rows.values()), 6),
            "simulated_seconds": round(clock.now() - start, 3),
        },
        providers=rows,
        transitions=sorted(transitions, key=lambda t: t["at"]) if several else transitions,
        wall_seconds=0.0,
        injected=_injected(scenario, providers),
        failures=failures,
        timeline=timeline,
        router=routers[0],
        replicas=replicas if several else [],
    )


def _outcomes(
    total: int,
    latencies: list[float],
    failures: list[dict[str, Any]],
    served: Mapping[str, int],
    providers: Mapping[str, SimulatedProvider],
) -> dict[str, Any]:
    errors: dict[str, int] = {}
    for f in failures:
        errors[f["error"]] = errors.get(f["error"], 0) + 1
    return {
        "total": total,
        "succeeded": len(latencies),
        "failed": total - len(latencies),
        "errors": dict(sorted(errors.items())),
        "served_by": {n: served.get(n, 0) for n in providers},
        "latency_p50": _round(percentile(latencies, 50)),
        "latency_p95": _round(percentile(latencies, 95)),
    }


def _injected(
    scenario: Scenario, providers: Mapping[str, SimulatedProvider]
) -> list[dict[str, Any]]:
    """The scenario's injections, each with the calls it hit."""
    found = injections(scenario)
    for i in found:
        fate = i["fate"]
        i["hits"] = None if fate is None else providers[i["provider"]].faults.get(fate, 0)
    return found


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _provider_rows(
    snapshot: Mapping[str, Mapping[str, Any]],
    providers: Mapping[str, SimulatedProvider],
    skips: SkipTally | None = None,
) -> dict[str, dict[str, Any]]:
    """Each provider's row from a ``router.metrics()["providers"]`` snapshot."""
    rows = {}
    for name, m in snapshot.items():
        sim = providers[name]
        peak, at = sim.peak_window
        rows[name] = {
            "requests": m["total_requests"],
            "successes": m["successful_requests"],
            "failures": m["failed_requests"],
            # A metrics snapshot from before the router counted them has no "throttled".
            "throttled": m.get("throttled", 0),
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
            "calls": sim.calls,
            "injected": dict(sorted(sim.faults.items())),
            "skipped_for": {} if skips is None else skips.counts(name),
            "tokens_per_minute": sim.tokens_per_minute,
            "peak_window_tokens": peak if sim.counts_tokens else None,
            "peak_window_at": None if at is None else round(at, 3),
        }
    return rows


def _describe(scenario: Scenario) -> dict[str, Any]:
    mix = scenario.prompt_mix
    return {
        "requests": scenario.requests,
        "concurrency": scenario.concurrency,
        "duration_seconds": scenario.duration_seconds,
        "seed": scenario.seed,
        "speed": None if math.isinf(scenario.speed) else scenario.speed,
        "model": scenario.model,
        "strategy": scenario.config.strategy,
        "currency": scenario.currency,
        "tokens_per_answer": None if mix else {"input": _USAGE[0], "output": _USAGE[1]},
        "prompts": None if mix is None else asdict(mix),
        "faults": {n: asdict(f) for n, f in scenario.faults.items()},
        "replicas": scenario.replicas,
        "state": store_name(scenario),
    }
