"""Where the router's time goes, against the inline floor wrapper.

Three views of one request through the router with zero-latency providers:

1. **Above the floor, end to end** (interleaved rounds, p50 minus the inline floor's):
   the router with one feature switched off in its config, and the router with one
   component replaced by a no-op stub, so each line's saving is that part's full cost.
2. **Components**: the router's own per-request steps timed in isolation (median ns per
   call over several repeats), next to what the floor wrapper pays for the same step.
3. **cProfile**: the functions of ``router_middleware`` by own time per request, sync
   and async (cProfile inflates small functions: read it for shares, not absolutes).
4. **pyinstrument** (``--pyinstrument``, if installed): a call tree of the router's sync
   path, written to ``benchmarks/results/profile_router_tree.txt``.

It reaches into private modules to time the steps; a step whose internals changed is
reported as ``n/a``, not an error. Run: ``.venv/bin/python benchmarks/profile_router.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import pstats
import statistics
import time
import timeit
from collections.abc import Callable
from functools import partial
from typing import Any

from _common import RESULTS, ConstantChatModel, table, write_results
from langchain_core.messages import AIMessage
from langchain_core.runnables.config import (
    ensure_config,
    get_callback_manager_for_config,
)
from overhead import INPUT, InlineFloor, Variant, _router, time_async, time_sync

from router_middleware import _execute, _pipeline
from router_middleware import _router as router_module
from router_middleware._types import check_input

try:  # the drivers moved out of _router.py at some point; look in both places
    from router_middleware import _drive
except ImportError:  # pragma: no cover - older layout
    _drive = router_module  # type: ignore[assignment]

_DRIVERS = (_drive, router_module)


def _private(*names: str) -> Any:
    """The first of ``names`` found in the driver modules (private helpers move around)."""
    for module in _DRIVERS:
        for name in names:
            if hasattr(module, name):
                return getattr(module, name)
    raise AttributeError(f"none of {names} in {[m.__name__ for m in _DRIVERS]}")


def _patch_attempt_config(fn: Any) -> None:
    for module in _DRIVERS:
        if hasattr(module, "attempt_config"):
            module.attempt_config = fn


def _ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the mean ns per call of ``fn``."""
    runs = timeit.repeat(fn, number=number, repeat=repeat, timer=time.perf_counter_ns)
    return statistics.median(runs) / number


def components(number: int, repeat: int) -> list[dict[str, Any]]:
    router = _router(ConstantChatModel(), ConstantChatModel())
    pipeline = router.pipeline
    provider = pipeline.providers["primary"]
    config = ensure_config(None)
    run = get_callback_manager_for_config(config).on_chain_start(None, INPUT, name="r")
    message = AIMessage("ok")
    rows: list[dict[str, Any]] = []

    def step(name: str, fn: Callable[[], Any], note: str = "") -> None:
        try:
            fn()
            rows.append({"step": name, "ns": _ns(fn, number, repeat), "note": note})
        except Exception as exc:  # private API moved: report, do not fail
            rows.append({"step": name, "ns": None, "note": f"n/a ({type(exc).__name__})"})

    step("check_input", lambda: check_input(INPUT))
    step("_requested_model", lambda: router._requested_model(None, config))

    def floor_child() -> Any:
        child = {**config, "callbacks": run.get_child()}
        child.pop("run_name", None)
        return child

    step("floor: child config (get_child + dict)", floor_child, "paid by the floor too")
    step(
        "attempt_config (get_child + tags + metadata)",
        lambda: _execute.attempt_config(config, run, "primary", "m", 1),
    )
    step("attempt_input", lambda: _execute.attempt_input(provider, INPUT, "m"))

    def route() -> None:
        plan = pipeline.run("m")
        next(plan)
        served = _private("_finish")(plan)
        pipeline.succeed(served, message)

    step("routing total: run() to succeed()", route, "sum of the next group, roughly")
    step("  candidates() (LRUCache hit)", lambda: pipeline.candidates("m"))
    candidates = pipeline.candidates("m")
    step("  strategy.order -> first", lambda: next(iter(pipeline.strategy.order(candidates, "m"))))

    def breaker() -> None:
        permit = provider.breaker.try_acquire()
        provider.breaker.on_success(permit)

    step("  breaker try_acquire + on_success", breaker)

    def limiter() -> None:
        provider.limiter.try_acquire()
        provider.limiter.release()

    step("  limiter try_acquire + release", limiter)
    step("    limiter.wait_time (peek)", provider.limiter.wait_time)
    step("    slots.notify (in release)", provider.slots.notify)
    step(
        "  metrics.record_success",
        lambda: provider.metrics.record_success(1e-4, input_tokens=0, output_tokens=0, cost=0.0),
    )
    step("  usage_from_message", lambda: _pipeline.usage_from_message(message))
    step("  clock.now()", pipeline.clock.now, "called ~6 times per request")

    def generator_only() -> None:
        def gen() -> Any:
            yield 1
            return 2

        g = gen()
        next(g)
        with contextlib.suppress(StopIteration):
            g.send(None)

    step("  a bare generator round trip", generator_only, "floor for the step protocol")
    served = _pipeline.Served(provider, "m", None, 0.0, 1, [])
    step(
        "_annotate (response_metadata['router'])",
        lambda: _private("annotate", "_annotate")(message, served),
    )

    async def timeouts(n: int, on: bool) -> int:
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(n):
            if on:
                async with asyncio.timeout(100.0):  # noqa: ASYNC100 - its own cost is measured
                    pass
        return clock() - start

    async def attempts(n: int, how: str) -> int:
        model = provider.runnable("m")
        child = _execute.attempt_config(config, run, "primary", "m", 1)
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(n):
            if how == "direct":
                await model.ainvoke(INPUT, child)
            elif how == "call_async":
                await _execute.call_async(provider, "m", INPUT, child, {}, None)
            else:
                await _execute.call_async(provider, "m", INPUT, child, {}, 100.0)
        return clock() - start

    loop = asyncio.new_event_loop()
    try:
        # Interleaved chunks, paired differences: the provider call dwarfs what is measured.
        hows = ("direct", "call_async", "call_async_deadline")
        diffs: dict[str, list[float]] = {"call_async": [], "call_async_deadline": []}
        chunk = 100
        for i in range(max(10, number // chunk // 4)):
            per = {}
            for how in hows[i % 3 :] + hows[: i % 3]:
                per[how] = loop.run_until_complete(attempts(chunk, how)) / chunk
            for how in diffs:
                diffs[how].append(per[how] - per["direct"])
        rows.append(
            {
                "step": "async: call_async(timeout=None) - provider.ainvoke",
                "ns": statistics.median(diffs["call_async"]),
                "note": "contextvar + one coroutine layer",
            }
        )
        rows.append(
            {
                "step": "async: call_async(timeout=100) - provider.ainvoke",
                "ns": statistics.median(diffs["call_async_deadline"]),
                "note": "+ _within + asyncio.timeout (the deadline)",
            }
        )
    except Exception as exc:
        rows.append({"step": "async: call_async", "ns": None, "note": f"n/a ({exc!r})"})
    finally:
        loop.close()

    loop = asyncio.new_event_loop()
    try:
        with_ns = statistics.median(
            loop.run_until_complete(timeouts(number, True)) for _ in range(repeat)
        )
        bare_ns = statistics.median(
            loop.run_until_complete(timeouts(number, False)) for _ in range(repeat)
        )
        rows.append(
            {
                "step": "async: asyncio.timeout() per attempt",
                "ns": (with_ns - bare_ns) / number,
                "note": "deadline_seconds makes every async attempt set one",
            }
        )
    finally:
        loop.close()
    return rows


def cprofile(calls: int, top: int) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    router = _router(ConstantChatModel(), ConstantChatModel())
    variant = Variant("router", lambda: router.invoke(INPUT), lambda: router.ainvoke(INPUT))
    loop = asyncio.new_event_loop()
    for mode in ("sync", "async"):
        if mode == "sync":
            time_sync(variant, 500)
        else:
            loop.run_until_complete(time_async(variant, 500))
        profile = cProfile.Profile()
        profile.enable()
        if mode == "sync":
            time_sync(variant, calls)
        else:
            loop.run_until_complete(time_async(variant, calls))
        profile.disable()
        stats = pstats.Stats(profile)
        rows = []
        for (file, line, func), (_, ncalls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
            if "router_middleware" not in file:
                continue
            rows.append(
                {
                    "function": f"{file.split('router_middleware/')[-1]}:{line}({func})",
                    "calls_per_request": ncalls / calls,
                    "own_us_per_request": tottime / calls * 1e6,
                    "cum_us_per_request": cumtime / calls * 1e6,
                }
            )
        rows.sort(key=lambda r: r["own_us_per_request"], reverse=True)
        out[mode] = rows[:top]
    loop.close()
    return out


def pyinstrument_tree(calls: int) -> str | None:
    try:
        from pyinstrument import Profiler
    except ImportError:
        return None
    router = _router(ConstantChatModel(), ConstantChatModel())
    for _ in range(500):
        router.invoke(INPUT)
    profiler = Profiler(interval=0.0001)
    profiler.start()
    for _ in range(calls):
        router.invoke(INPUT)
    profiler.stop()
    text: str = profiler.output_text(unicode=False, color=False, show_all=False)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "profile_router_tree.txt"
    path.write_text(text)
    return str(path)


ABLATIONS: dict[str, dict[str, Any]] = {
    "full (as overhead.py)": {},
    "round_robin strategy": {"strategy": "round_robin"},
    "no rate limits": {"rate_limit": None},
    "breaker disabled": {"circuit_breaker": {"enabled": False}},
    "deadline_seconds None": {"deadline_seconds": None},
    "all four off": {
        "strategy": "round_robin",
        "rate_limit": None,
        "circuit_breaker": {"enabled": False},
        "deadline_seconds": None,
    },
}


def _ablated_router(change: dict[str, Any]) -> Any:
    from router_middleware import ResilientRouter

    base = _router(ConstantChatModel(), ConstantChatModel())
    cfg = base.router_config.model_dump()
    for provider in cfg["providers"]:
        if "rate_limit" in change and change["rate_limit"] is None:
            provider["rate_limit"] = {}
    cfg.update({k: v for k, v in change.items() if k != "rate_limit"})
    return ResilientRouter({"primary": ConstantChatModel(), "secondary": ConstantChatModel()}, cfg)


def end_to_end(rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """p50 above the inline floor, per router configuration, interleaved rounds."""
    floor = InlineFloor(ConstantChatModel())
    variants = [Variant("floor", lambda: floor.invoke(INPUT), lambda: floor.ainvoke(INPUT))]
    for name, change in ABLATIONS.items():
        r = _ablated_router(change)
        variants.append(Variant(name, partial(r.invoke, INPUT), partial(r.ainvoke, INPUT)))
    loop = asyncio.new_event_loop()
    for v in variants:
        time_sync(v, 200)
        loop.run_until_complete(time_async(v, 200))
    gaps: dict[str, dict[str, list[float]]] = {
        mode: {v.name: [] for v in variants[1:]} for mode in ("sync", "async")
    }
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for mode in ("sync", "async"):
            p50 = {}
            for v in order:
                if mode == "sync":
                    samples = time_sync(v, calls)
                else:
                    samples = loop.run_until_complete(time_async(v, calls))
                p50[v.name] = statistics.median(samples) / 1000
            for v in variants[1:]:
                gaps[mode][v.name].append(p50[v.name] - p50["floor"])
    loop.close()
    return {
        mode: {name: statistics.median(g) for name, g in per.items()} for mode, per in gaps.items()
    }


class _StubBreaker:
    """Admits everything and records nothing: what the breaker costs, by its absence."""

    def __init__(self, real: Any) -> None:
        self._permit = real.try_acquire()
        self.state = real.state

    def try_acquire(self) -> Any:
        return self._permit

    def on_success(self, permit: Any) -> None:
        pass

    on_failure = on_ignore = on_success

    def retry_after(self) -> float:
        return 0.0


class _StubLimiter:
    in_flight = 0

    def try_acquire(self) -> float:
        return 0.0

    def release(self) -> None:
        pass


class _StubMetrics:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class _FirstStrategy:
    name = "first"

    def order(self, candidates: Any, model: Any) -> Any:
        return iter(candidates)


def _floor_child(config: Any, run: Any, *args: Any) -> Any:
    child = {**config, "callbacks": run.get_child()}
    child.pop("run_name", None)
    return child


STUBS = ("strategy", "attempt_config", "breaker", "limiter", "metrics")


def _stubbed_router(stubs: tuple[str, ...]) -> Any:
    router = _router(ConstantChatModel(), ConstantChatModel())
    pipeline = router.pipeline
    if "strategy" in stubs:
        pipeline.strategy = _FirstStrategy()
    for provider in pipeline.providers.values():
        if "breaker" in stubs:
            provider.breaker = _StubBreaker(provider.breaker)
        if "limiter" in stubs:
            provider.limiter = _StubLimiter()
        if "metrics" in stubs:
            provider.metrics = _StubMetrics()
    return router


def stubbed(rounds: int, calls: int) -> dict[str, dict[str, float]]:
    """End-to-end saving of replacing one component with a no-op (interleaved rounds).

    Unlike the isolated timings this counts everything a component causes: garbage,
    cache misses, the extra work it makes the provider's own run do.
    """
    real_attempt_config = _execute.attempt_config
    floor = InlineFloor(ConstantChatModel())
    cases: dict[str, tuple[str, ...]] = {"full router": ()}
    cases.update({f"without {stub}": (stub,) for stub in STUBS})
    cases["without all five"] = STUBS
    variants = [Variant("floor", lambda: floor.invoke(INPUT), lambda: floor.ainvoke(INPUT))]
    for name, stubs in cases.items():
        router = _stubbed_router(stubs)
        child = _floor_child if "attempt_config" in stubs else real_attempt_config

        def call(r: Any = router, c: Any = child) -> Any:
            _patch_attempt_config(c)
            return r.invoke(INPUT)

        async def acall(r: Any = router, c: Any = child) -> Any:
            _patch_attempt_config(c)
            return await r.ainvoke(INPUT)

        variants.append(Variant(name, call, acall))
    loop = asyncio.new_event_loop()
    try:
        for v in variants:
            time_sync(v, 200)
            loop.run_until_complete(time_async(v, 200))
        gaps: dict[str, dict[str, list[float]]] = {
            mode: {v.name: [] for v in variants[1:]} for mode in ("sync", "async")
        }
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for mode in ("sync", "async"):
                p50 = {}
                for v in order:
                    if mode == "sync":
                        samples = time_sync(v, calls)
                    else:
                        samples = loop.run_until_complete(time_async(v, calls))
                    p50[v.name] = statistics.median(samples) / 1000
                for v in variants[1:]:
                    gaps[mode][v.name].append(p50[v.name] - p50["floor"])
    finally:
        _patch_attempt_config(real_attempt_config)
        loop.close()
    return {
        mode: {name: statistics.median(g) for name, g in per.items()} for mode, per in gaps.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--number", type=int, default=20000, help="calls per timing")
    parser.add_argument("--repeat", type=int, default=7, help="timings per component")
    parser.add_argument("--profile-calls", type=int, default=20000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--pyinstrument", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.number, args.repeat, args.profile_calls = 2000, 3, 2000

    gap = end_to_end(rounds=5 if args.quick else 15, calls=200)
    stubs = stubbed(rounds=5 if args.quick else 15, calls=200)
    rows = components(args.number, args.repeat)
    profiles = cprofile(args.profile_calls, args.top)
    tree = pyinstrument_tree(args.profile_calls) if args.pyinstrument else None

    print(
        table(
            ["router configuration", "sync us above floor", "async us above floor"],
            [[name, gap["sync"][name], gap["async"][name]] for name in gap["sync"]],
        )
    )
    print()
    print(
        table(
            ["component replaced by a no-op", "sync us above floor", "async us above floor"],
            [[name, stubs["sync"][name], stubs["async"][name]] for name in stubs["sync"]],
        )
    )
    print()
    print(
        table(
            ["component (isolated)", "us/request", "note"],
            [
                [r["step"], r["ns"] / 1000 if r["ns"] is not None else "n/a", r["note"]]
                for r in rows
            ],
        )
    )
    for mode, prof in profiles.items():
        print(f"\ncProfile, {mode}: router_middleware functions by own time")
        print(
            table(
                ["function", "calls/req", "own us/req", "cum us/req"],
                [
                    [
                        p["function"],
                        p["calls_per_request"],
                        p["own_us_per_request"],
                        p["cum_us_per_request"],
                    ]
                    for p in prof
                ],
            )
        )
    if tree:
        print(f"\npyinstrument call tree written to {tree}")
    path = write_results(
        "profile_router",
        args,
        {
            "router_minus_floor_us": gap,
            "stubbed_minus_floor_us": stubs,
            "components": rows,
            "cprofile": profiles,
        },
    )
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    main()
