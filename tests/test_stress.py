"""Stress: thousands of concurrent requests over flaky providers end cleanly, within the caps.

Real time on purpose: waits for free slots are real, and every provider call takes 1 ms.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from router_middleware import ResilientRouter, RouterError, SystemClock
from router_middleware.testing import ScriptedChatModel, http_error

CAPS = {"p1": 8, "p2": 4, "p3": 16, "p4": 2}


def build(clock: SystemClock) -> tuple[ResilientRouter, dict[str, ScriptedChatModel]]:
    errors = [lambda: http_error(503), lambda: http_error(429, retry_after=0.05), ConnectionError]
    models = {
        name: ScriptedChatModel(
            text=name,
            failure_rate=0.1,
            failure=errors[i % len(errors)],
            latency=0.001,
            seed=i,
            clock=clock,
        )
        for i, name in enumerate(CAPS)
    }
    config = {
        "strategy": "round_robin",
        "providers": [
            {
                "name": name,
                "models": [{"name": "m"}],
                "rate_limit": {"max_concurrent": cap, "requests_per_second": 500, "burst": 50},
            }
            for name, cap in CAPS.items()
        ],
        "retry": {"attempts": 2, "initial_backoff_seconds": 0.001, "max_backoff_seconds": 0.01},
        "circuit_breaker": {
            "threshold": 50,
            "sampling_duration_seconds": 1,
            "reset_timeout_seconds": 0.5,
        },
        # Long enough that a slow or busy machine changes how long requests wait, never
        # whether they are served: only the providers' faults and the breakers fail them.
        "max_wait_seconds": 30,
    }
    return ResilientRouter(models, config, clock=clock), models


def check(
    router: ResilientRouter, models: dict[str, ScriptedChatModel], outcomes: list[Any]
) -> None:
    for outcome in outcomes:
        assert isinstance(outcome, RouterError) or outcome.content in CAPS, outcome
    # Breakers trip under this load; most requests must still be served.
    assert sum(not isinstance(o, BaseException) for o in outcomes) > len(outcomes) * 0.5
    for name, cap in CAPS.items():
        provider = router.providers[name]
        assert provider.limiter.in_flight == 0, name  # no slot leaks
        assert provider.limiter.high_water <= cap, name
        assert models[name].max_in_flight <= cap, name  # as the provider itself saw it
        m = provider.metrics
        assert (
            m.successful_requests
            + m.failed_requests
            + m.throttled
            + m.rate_limited_requests
            + m.cancelled
            == m.total_requests
        )
    served = sum(not isinstance(o, BaseException) for o in outcomes)
    assert sum(p.metrics.successful_requests for p in router.providers.values()) == served


async def test_two_thousand_async_requests() -> None:
    router, models = build(SystemClock())
    outcomes = await asyncio.gather(
        *(router.ainvoke(f"q{i}") for i in range(2000)), return_exceptions=True
    )
    check(router, models, list(outcomes))


def test_two_hundred_threaded_requests() -> None:
    router, models = build(SystemClock())

    def one(i: int) -> Any:
        try:
            return router.invoke(f"q{i}")
        except RouterError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=32) as pool:
        outcomes = list(pool.map(one, range(200)))
    check(router, models, outcomes)


def test_threads_and_asyncio_share_one_router() -> None:
    router, models = build(SystemClock())

    def one(i: int) -> Any:
        try:
            return router.invoke(f"t{i}")
        except RouterError as exc:
            return exc

    async def many() -> list[Any]:
        return list(
            await asyncio.gather(
                *(router.ainvoke(f"a{i}") for i in range(400)), return_exceptions=True
            )
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = [pool.submit(one, i) for i in range(100)]
        outcomes = asyncio.run(many())
        outcomes += [f.result() for f in threaded]
    check(router, models, outcomes)
