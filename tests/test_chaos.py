"""Chaos: a seeded storm of every fault over five providers, in virtual time.

5,000 async requests (a fifth of them streams) arrive over 60 simulated seconds on a
virtual-time loop, so the run takes seconds; then a threaded run on the real clock. The
invariants are the router's promises, checked on everything that happened.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.exceptions import ModelRefusalError
from pydantic import PrivateAttr

from router_middleware import (
    BreakerTransition,
    ResilientRouter,
    RouterError,
    SystemClock,
)
from router_middleware.testing import (
    Behaviour,
    LoopClock,
    SimulatedProvider,
    StreamBreak,
    VirtualLoop,
    http_error,
)

TEXT = "alpha beta gamma delta"
DEADLINE = 8.0
CAPS = {"steady": 6, "flaky": 4, "spiky": 6, "limited": 3, "outage": 5}
RATE, BURST = 25.0, 5


def error_mix(seed: int) -> Callable[[], BaseException]:
    """Every error class the classifier knows, drawn at random, but a context window
    exceeded: the router learns from that one that the input does not fit the provider
    and stops sending it inputs that long (``test_token_gates``), which for the one size
    of input here would take the provider out of the run."""
    rng = random.Random(seed)
    makers: list[Callable[[], BaseException]] = [
        lambda: http_error(500),
        lambda: http_error(503),
        lambda: ConnectionResetError("reset by peer"),
        lambda: http_error(401),
        lambda: http_error(400),
        lambda: ModelRefusalError("refused"),
        lambda: http_error(429),
    ]
    return lambda: rng.choice(makers)()


class ChaosProvider(SimulatedProvider):
    """A simulated provider whose streams also break, before or after their first chunk,
    and that records when it was called (to check rates)."""

    stream_break_rate: float = 0.0
    _times: list[float] = PrivateAttr(default_factory=list)

    def _draw(self) -> tuple[str, Behaviour]:
        self._times.append(self.clock.now())
        fate, step = super()._draw()
        if fate == "ok" and self._rng.random() < self.stream_break_rate:
            return "stream_break", StreamBreak(self._rng.choice([0, 2]), http_error(502))
        return fate, step


def providers(clock: Any) -> dict[str, ChaosProvider]:
    common: dict[str, Any] = {"text": TEXT, "clock": clock, "epoch": 0.0}
    return {
        "steady": ChaosProvider(latency=0.05, failure_rate=0.02, seed=1, **common),
        "flaky": ChaosProvider(
            latency=0.08, failure_rate=0.3, failure=error_mix(2), seed=2, **common
        ),
        "spiky": ChaosProvider(
            latency=0.05, latency_p95=1.5, hang_rate=0.03, stream_break_rate=0.2, seed=3, **common
        ),
        "limited": ChaosProvider(
            latency=0.05, rate_limit_bursts=[(5, 15), (40, 45)], retry_after=2.0, seed=4, **common
        ),
        "outage": ChaosProvider(latency=0.05, outages=[(15, 30)], seed=5, **common),
    }


def router_over(
    models: dict[str, ChaosProvider], clock: Any, timeout: float = 1.0
) -> ResilientRouter:
    config = {
        "strategy": "round_robin",
        "providers": [
            {
                "name": name,
                "models": [{"name": "m"}],
                "rate_limit": {"requests_per_second": RATE, "burst": BURST, "max_concurrent": cap},
            }
            for name, cap in CAPS.items()
        ],
        "retry": {"attempts": 2, "initial_backoff_seconds": 0.05, "max_backoff_seconds": 0.5},
        "circuit_breaker": {
            "threshold": 50,
            "failure_rate_threshold": 0.5,
            "minimum_calls": 10,
            "sampling_duration_seconds": 5,
            "reset_timeout_seconds": 3,
        },
        "timeouts": {
            "attempt_seconds": timeout,
            "first_token_seconds": timeout,
            "idle_seconds": timeout,
        },
        "deadline_seconds": DEADLINE,
        "max_wait_seconds": 2.0,
    }
    return ResilientRouter(models, config, clock=clock, seed=7)


def allowed(exc: BaseException, streamed_chunks: int) -> bool:
    """What may end a request other than a response: a typed router error, a refusal
    (content policy propagates by design), or a stream error after its first chunk."""
    if isinstance(exc, (RouterError, ModelRefusalError)):
        return True
    return streamed_chunks > 0


def check_common(router: ResilientRouter, models: dict[str, ChaosProvider]) -> None:
    totals = 0
    for name, cap in CAPS.items():
        provider = router.providers[name]
        assert provider.limiter.in_flight == 0, name  # every slot freed
        assert provider.limiter.high_water <= cap, name
        assert models[name].max_in_flight <= cap, name
        m = provider.metrics
        assert (
            m.successful_requests
            + m.failed_requests
            + m.throttled
            + m.rate_limited_requests
            + m.cancelled
            == m.total_requests
        ), name
        totals += m.total_requests
    assert router.metrics()["totals"]["total_requests"] == totals


def check_rate(times: list[float], name: str) -> None:
    """Calls in any window of w seconds never exceed burst + rate * w."""
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - start
            if window > 3:
                break
            assert j - i + 1 <= BURST + RATE * window + 1e-6, (name, start, window)


def test_async_chaos_in_virtual_time() -> None:
    loop = VirtualLoop()
    clock = LoopClock(loop)
    models = providers(clock)
    router = router_over(models, clock)
    transitions: list[BreakerTransition] = []
    router.add_listener(transitions.append)
    rng = random.Random(42)
    plan = sorted((rng.uniform(0, 60), rng.random() < 0.2) for _ in range(5000))
    results: list[tuple[str, Any, int, float]] = []

    async def one(at: float, stream: bool) -> None:
        await asyncio.sleep(at - loop.time())
        started = loop.time()
        chunks: list[Any] = []
        try:
            if stream:
                async for chunk in router.astream("q"):
                    if not chunks:
                        results.append(("first", None, 0, loop.time() - started))
                    chunks.append(chunk)
                outcome: Any = "".join(str(c.content) for c in chunks)
            else:
                outcome = (await router.ainvoke("q")).content
        except Exception as exc:
            outcome = exc
        results.append(
            ("stream" if stream else "invoke", outcome, len(chunks), loop.time() - started)
        )

    async def main() -> None:
        await asyncio.gather(*(one(at, stream) for at, stream in plan))

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()

    ended = [r for r in results if r[0] != "first"]
    assert len(ended) == 5000  # every request ended
    for kind, outcome, streamed, took in ended:
        if isinstance(outcome, BaseException):
            assert allowed(outcome, streamed), repr(outcome)
            if kind == "invoke" or streamed == 0:
                assert took <= DEADLINE + 1e-6, (kind, repr(outcome), took)
        else:
            assert outcome == TEXT  # no truncated stream reported as success
            if kind == "invoke":
                assert took <= DEADLINE + 1e-6
    for _, _, _, first in (r for r in results if r[0] == "first"):
        assert first <= DEADLINE + 1e-6
    served = sum(not isinstance(r[1], BaseException) for r in ended)
    assert served > 4000, served

    check_common(router, models)
    for name, model in models.items():
        check_rate(model._times, name)
    # The outage provider's breaker opened during its outage and closed after it.
    outage = [t for t in transitions if t.name == "outage"]
    assert any(t.to_state.value == "open" and 15 <= t.at <= 30 for t in outage)
    assert any(t.to_state.value == "closed" and t.at > 30 for t in outage)
    assert router.providers["outage"].circuit_breaker_state == "closed"
    # Every kind of fault actually happened.
    faults: dict[str, int] = {}
    for model in models.values():
        for fate, n in model.faults.items():
            faults[fate] = faults.get(fate, 0) + n
    assert {"ok", "failure", "hang", "outage", "rate_limited", "stream_break"} <= set(faults)


def test_threaded_chaos_on_the_real_clock() -> None:
    clock = SystemClock()
    models = providers(clock)
    for model in models.values():
        # Real time: keep it short, with hangs that the attempt timeout cuts.
        model.latency, model.latency_p95, model.hang_seconds = 0.002, None, 0.3
        model.outages, model.rate_limit_bursts = [], []
    router = router_over(models, clock, timeout=0.1)

    def one(i: int) -> Any:
        try:
            if i % 5 == 0:
                return "".join(str(c.content) for c in router.stream("q"))
            return router.invoke("q").content
        except Exception as exc:
            return exc

    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(one, range(300)))
    finally:
        for model in models.values():
            model.release_hangs()
    # A released hang returns on its abandoned worker thread, which then frees the slot.
    deadline = time.monotonic() + 5
    while any(m.in_flight for m in models.values()) and time.monotonic() < deadline:
        time.sleep(0.01)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, (RouterError, ModelRefusalError)) or "502" in str(outcome)
        else:
            assert outcome == TEXT
    assert sum(not isinstance(o, BaseException) for o in outcomes) > 200
    check_common(router, models)


class Poison(Exception):
    """A provider error the (buggy) custom classifier below cannot handle."""


class ClassifierBug(Exception):
    pass


def buggy_classifier(exc: BaseException) -> None:
    if isinstance(exc, Poison):
        raise ClassifierBug("the classifier itself failed")
    return None


def poisoned(seed: int) -> Callable[[], BaseException]:
    mix = error_mix(seed)
    rng = random.Random(seed)
    return lambda: Poison("poison") if rng.random() < 0.05 else mix()


def check_endings(router: ResilientRouter, models: dict[str, ChaosProvider]) -> None:
    """No slot, permit or provider call outlives its request; the accounting adds up."""
    check_common(router, models)
    for name in CAPS:
        assert models[name].in_flight == 0, name  # every provider call, stream included, ended
        record = router.store.breaker_record(router.store.key(f"{name}:breaker"))
        assert record is None or record.in_flight == 0, name  # no half-open trial left taken


def test_async_chaos_with_every_ending_in_virtual_time() -> None:
    """Hung calls cut by timeouts, streams closed by their consumer after one chunk,
    requests cancelled at random (in backoffs, waits and calls), a classifier that raises,
    and a reload every 20 ms, all at once."""
    loop = VirtualLoop()
    clock = LoopClock(loop)
    models = providers(clock)
    models["flaky"].failure = poisoned(2)
    router = router_over(models, clock)
    router.classifier = buggy_classifier
    config = router.router_config
    router.apply_config(config)  # the classifier reaches the pipeline through a reload
    rng = random.Random(7)
    plan = sorted((rng.uniform(0, 30), rng.random()) for _ in range(3000))
    ended: list[tuple[str, Any]] = []

    async def one(at: float, fate: float) -> None:
        await asyncio.sleep(at - loop.time())
        if fate < 0.1:  # a consumer that stops after the first chunk
            chunks = router.astream("q")
            try:
                await chunks.__anext__()
            except (Exception, StopAsyncIteration) as exc:
                ended.append(("closed", exc))
                return
            await chunks.aclose()
            ended.append(("closed", None))
        elif fate < 0.3:
            outcome: Any = "".join([str(c.content) async for c in router.astream("q")])
            ended.append(("stream", outcome))
        else:
            ended.append(("invoke", (await router.ainvoke("q")).content))

    async def reloads() -> None:
        while True:
            await asyncio.sleep(0.02)
            router.apply_config(config)

    async def main() -> list[Any]:
        reloader = asyncio.create_task(reloads())
        tasks = [asyncio.create_task(one(at, fate)) for at, fate in plan]
        for task in rng.sample(tasks, 300):  # cancelled at a random moment of their life
            loop.call_later(rng.uniform(0, 31), task.cancel)
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        reloader.cancel()
        return outcomes

    try:
        outcomes = loop.run_until_complete(main())
    finally:
        loop.close()

    cancelled = sum(isinstance(o, asyncio.CancelledError) for o in outcomes)
    bugs = sum(isinstance(o, ClassifierBug) for o in outcomes)
    for o in outcomes:
        if isinstance(o, BaseException) and not isinstance(
            o, (asyncio.CancelledError, ClassifierBug)
        ):
            assert isinstance(o, (RouterError, ModelRefusalError)) or "502" in str(o), repr(o)
    assert cancelled > 100, cancelled
    assert bugs > 0
    assert sum(kind == "closed" for kind, _ in ended) > 100
    assert sum(o is None for o in outcomes) > 2000
    check_endings(router, models)
    assert sum(p.metrics.cancelled for p in router.providers.values()) > 0


def test_threaded_chaos_with_every_ending_on_the_real_clock() -> None:
    clock = SystemClock()
    models = providers(clock)
    for model in models.values():
        model.latency, model.latency_p95, model.hang_seconds = 0.002, None, 0.3
        model.outages, model.rate_limit_bursts = [], []
        model.hang_rate = 0.05
    models["flaky"].failure = poisoned(2)
    router = router_over(models, clock, timeout=0.05)
    router.classifier = buggy_classifier
    config = router.router_config
    router.apply_config(config)
    stop = threading.Event()

    def reloads() -> None:
        while not stop.wait(0.005):
            router.apply_config(config)

    def one(i: int) -> Any:
        try:
            if i % 4 == 0:  # a consumer that stops after the first chunk
                chunks = router.stream("q")
                next(chunks, None)
                chunks.close()
                return "closed"
            if i % 4 == 1:
                return "".join(str(c.content) for c in router.stream("q"))
            return router.invoke("q").content
        except Exception as exc:
            return exc

    reloader = threading.Thread(target=reloads)
    reloader.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            outcomes = list(pool.map(one, range(400)))
    finally:
        stop.set()
        reloader.join()
        for model in models.values():
            model.release_hangs()
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, (RouterError, ModelRefusalError, ClassifierBug)) or (
                "502" in str(outcome)
            ), repr(outcome)
    assert sum(not isinstance(o, BaseException) for o in outcomes) > 250
    # Hung calls hold their slots until they return; once released, nothing is left.
    deadline = time.monotonic() + 5
    for thread in threading.enumerate():
        if thread.name.startswith(("router-attempt-", "router-stream-")):
            thread.join(max(0.0, deadline - time.monotonic()))
    assert not [t for t in threading.enumerate() if t.name.startswith("router-")]
    check_endings(router, models)
