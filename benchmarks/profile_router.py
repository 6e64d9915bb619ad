"""Where the router's time goes, against the inline floor wrapper.

Three views of one request through the router with zero-latency providers:

1. **Above the floor, end to end** (interleaved rounds, p50 minus the inline floor's):
   the router with one feature switched off in its config, and the router with one
   component replaced by a no-op stub (a gate left out of ``provider.gates`` or all of
   them, an empty ``Observers()`` instead of the metrics observer, a lean
   ``attempt_config``, a minimal plan, ...), so each line's saving is that part's full
   cost.
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
import gc
import importlib
import inspect
import math
import pstats
import statistics
import time
import timeit
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

from _common import RESULTS, ConstantChatModel, table, write_results
from langchain_core.messages import AIMessage
from langchain_core.runnables.config import (
    ensure_config,
    get_callback_manager_for_config,
)
from overhead import INPUT, InlineFloor, Variant, _router, time_async, time_sync

from router_middleware._types import check_input


def _module(name: str) -> ModuleType | None:
    """``router_middleware.<name>``, or ``None`` once it is gone (its steps say n/a)."""
    try:
        return importlib.import_module(f"router_middleware.{name}")
    except ImportError:
        return None


_context = _module("_context")
_drive = _module("_drive")
_execute = _module("_execute")
_gates = _module("_gates")
_lease = _module("_lease")
_metrics = _module("_metrics")
_observe = _module("_observe")
_pipeline = _module("_pipeline")
_request = _module("_request")
_run = _module("_run")
_steps = _module("_steps")


def _get(module: ModuleType | None, name: str) -> Any:
    if module is None:
        raise AttributeError(f"no module for {name!r}")
    return getattr(module, name)


def _patch(module: ModuleType | None, name: str, value: Any) -> dict[tuple[ModuleType, str], Any]:
    """Replace ``module.name`` with ``value`` (checked to exist) while a variant runs."""
    _get(module, name)
    assert module is not None
    return {(module, name): value}


def _ns(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the mean ns per call of ``fn``."""
    runs = timeit.repeat(fn, number=number, repeat=repeat, timer=time.perf_counter_ns)
    return statistics.median(runs) / number


def _floor_child(config: Any, run: Any, *args: Any) -> Any:
    """The floor's child config: what ``attempt_config`` costs beyond it is tags/metadata."""
    child = {**config, "callbacks": run.get_child()}
    child.pop("run_name", None)
    return child


# -- 2. components in isolation ------------------------------------------------------------


def components(number: int, repeat: int) -> list[dict[str, Any]]:
    router = _router(ConstantChatModel(), ConstantChatModel())
    floor = InlineFloor(ConstantChatModel())
    pipeline = router.pipeline
    provider = pipeline.providers["primary"]
    binding = router.bindings["primary"]
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

    def group(name: str) -> None:
        rows.append({"step": name, "ns": None, "note": ""})

    group("before routing (_run)")
    step("check_input", lambda: check_input(INPUT))
    step(
        "RequestContext(...)",
        lambda: _get(_context, "RequestContext")("m", INPUT, {}, config, stream=False),
    )
    step(
        "_run._context (check_input, ensure_config, model, ctx)",
        lambda: _get(_run, "_context")(router, INPUT, None, None, {}, stream=False),
    )
    step("router.get_name()", router.get_name, "run name, per request")
    step("floor: floor.get_name()", floor.get_name, "paid by the floor too")

    group("the attempt's call (_drive, _execute)")
    step("floor: child config (get_child + dict)", partial(_floor_child, config, run), "floor")
    step(
        "attempt_config (get_child + tags + metadata)",
        lambda: _get(_execute, "attempt_config")(config, run, "primary", "m", 1),
    )
    step("binding.arguments", lambda: binding.arguments(INPUT, "m", {}))
    step("binding.runnable", lambda: binding.runnable("m"))
    try:
        ctx = _get(_context, "RequestContext")("m", INPUT, {}, config, stream=False)
        lease0 = _get(_lease, "Lease")(provider, "m", 1, 0.0)
        arguments = _get(_drive, "_arguments")
        step(
            "_drive._arguments (binding, arguments, attempt_config)",
            lambda: arguments(lease0, router.bindings, ctx, run),
        )
    except Exception as exc:
        rows.append({"step": "_drive._arguments", "ns": None, "note": f"n/a ({exc!r})"})

    group("routing (_pipeline, _lease, _gates, _observe)")

    def plan_alone() -> None:
        plan = pipeline.run(ctx)
        step_ = next(plan)
        step_ = plan.send(message)
        step_.lease.message = message
        with contextlib.suppress(StopIteration):
            plan.send(None)

    step(
        "the plan alone: run(ctx) to StopIteration",
        plan_alone,
        "no provider call, no run; ~ the next group",
    )
    step("  pipeline.candidates (cache hit)", lambda: pipeline.candidates("m"))
    candidates = pipeline.candidates("m")
    step(
        "  strategy.order -> first",
        lambda: next(iter(pipeline.strategy.order(candidates, "m"))),
        pipeline.strategy.name,
    )
    step(
        "  RequestState + Skipped",
        lambda: (
            _get(_request, "RequestState")(ctx, candidates, math.inf),
            _get(_request, "Skipped")(),
        ),
    )

    def admit_succeed() -> None:
        lease, refusal = _get(_lease, "admit")(provider, "m", 1, pipeline.clock.now())
        if refusal is not None:
            raise RuntimeError(f"refused: {refusal!r}")
        lease.succeed(message)

    step(
        "  admit() + lease.succeed()",
        admit_succeed,
        f"{len(provider.gates)} gates: enter, then exit",
    )
    step("    Lease(...) alone", lambda: _get(_lease, "Lease")(provider, "m", 1, 0.0))
    try:
        lease = _get(_lease, "Lease")(provider, "m", 1, 0.0)
        for gate in provider.gates:

            def gate_round(gate: Any = gate) -> None:
                lease.outcome, lease.verdict, lease.permit = None, None, None
                refusal = gate.enter(lease)
                if refusal is not None:
                    raise RuntimeError(f"refused: {refusal!r}")
                lease.outcome = "succeeded"
                gate.exit(lease)

            step(f"    {type(gate).__name__} enter + exit", gate_round)
    except Exception as exc:
        rows.append({"step": "    gates", "ns": None, "note": f"n/a ({exc!r})"})
    step(
        "  Call(...) + Deliver(...)",
        lambda: (
            _get(_steps, "Call")(lease0, 120.0, math.inf),
            _get(_steps, "Deliver")(lease0, message, math.inf, []),
        ),
    )
    step("  usage_from_message", lambda: _get(_metrics, "usage_from_message")(message))
    step("  clock.now()", pipeline.clock.now, "~5 per request")
    AttemptEnd = _get(_observe, "AttemptEnd")
    step(
        "  AttemptEnd(...) (success)",
        lambda: AttemptEnd("primary", "m", 1, "succeeded", latency=1e-4, first_chunk=None),
    )
    end = AttemptEnd("primary", "m", 1, "succeeded", latency=1e-4)
    step(
        "  observers.attempt_ended(end)",
        lambda: pipeline.observer.attempt_ended(end),
        "Observers -> MetricsObserver",
    )
    step(
        "    metrics.record_success",
        lambda: provider.metrics.record_success(1e-4, input_tokens=0, output_tokens=0, cost=0.0),
    )
    step(
        "  observers.attempt_started",
        lambda: pipeline.observer.attempt_started("primary", "m", 1),
        "no observer overrides it",
    )

    def generator_only() -> None:
        def gen() -> Any:
            yield 1
            yield 2
            return 3

        g = gen()
        next(g)
        g.send(None)
        with contextlib.suppress(StopIteration):
            g.send(None)

    step("  a bare generator, two yields", generator_only, "floor for the step protocol")

    group("after routing")
    try:
        deliver = _get(_steps, "Deliver")(lease0, message, math.inf, [{"provider": "primary"}])
        step(
            "annotate (response_metadata['router'])",
            lambda: _get(_drive, "annotate")(message, deliver),
        )
    except Exception as exc:
        rows.append({"step": "annotate", "ns": None, "note": f"n/a ({exc!r})"})

    rows += _call_layers(router, provider, config, run, number)
    rows += _bare_timeout(number, repeat)
    return rows


def _call_layers(
    router: Any, provider: Any, config: Any, run: Any, number: int
) -> list[dict[str, Any]]:
    """``call_sync``/``call_async`` minus the provider's own call, paired and interleaved:
    the provider call dwarfs what is measured."""
    rows: list[dict[str, Any]] = []
    try:
        model = router.bindings["primary"].runnable("m")
        lease = _get(_lease, "Lease")(provider, "m", 1, 0.0)
        child = _get(_execute, "attempt_config")(config, run, "primary", "m", 1)
        call_sync = _get(_execute, "call_sync")
        call_async = _get(_execute, "call_async")
    except Exception as exc:
        return [{"step": "call_sync / call_async", "ns": None, "note": f"n/a ({exc!r})"}]

    def sync_chunk(n: int, how: str) -> int:
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(n):
            if how == "direct":
                model.invoke(INPUT, child)
            else:
                call_sync(lease, model, INPUT, child, {}, None)
        return clock() - start

    async def async_chunk(n: int, how: str) -> int:
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(n):
            if how == "direct":
                await model.ainvoke(INPUT, child)
            elif how == "none":
                await call_async(lease, model, INPUT, child, {}, None)
            else:
                await call_async(lease, model, INPUT, child, {}, 100.0)
        return clock() - start

    chunk = 100
    chunks = max(10, number // chunk // 4)
    try:
        diffs: list[float] = []
        for i in range(chunks):
            hows = ("direct", "call") if i % 2 else ("call", "direct")
            per = {how: sync_chunk(chunk, how) / chunk for how in hows}
            diffs.append(per["call"] - per["direct"])
        rows.append(
            {
                "step": "sync: call_sync(timeout=None) - provider.invoke",
                "ns": statistics.median(diffs),
                "note": "contextvar (the provider's config then merges it; the floor sets it too)",
            }
        )
    except Exception as exc:
        rows.append({"step": "sync: call_sync", "ns": None, "note": f"n/a ({exc!r})"})

    loop = asyncio.new_event_loop()
    try:
        hows = ("direct", "none", "deadline")
        adiffs: dict[str, list[float]] = {"none": [], "deadline": []}
        for i in range(chunks):
            per = {}
            for how in hows[i % 3 :] + hows[: i % 3]:
                per[how] = loop.run_until_complete(async_chunk(chunk, how)) / chunk
            for how in adiffs:
                adiffs[how].append(per[how] - per["direct"])
        rows.append(
            {
                "step": "async: call_async(timeout=None) - provider.ainvoke",
                "ns": statistics.median(adiffs["none"]),
                "note": "contextvar + one coroutine layer",
            }
        )
        rows.append(
            {
                "step": "async: call_async(timeout=100) - provider.ainvoke",
                "ns": statistics.median(adiffs["deadline"]),
                "note": "+ within() + asyncio.timeout (the deadline)",
            }
        )
    except Exception as exc:
        rows.append({"step": "async: call_async", "ns": None, "note": f"n/a ({exc!r})"})
    finally:
        loop.close()
    return rows


def _bare_timeout(number: int, repeat: int) -> list[dict[str, Any]]:
    async def timeouts(n: int, on: bool) -> int:
        clock = time.perf_counter_ns
        start = clock()
        for _ in range(n):
            if on:
                async with asyncio.timeout(100.0):  # noqa: ASYNC100 - its own cost is measured
                    pass
        return clock() - start

    loop = asyncio.new_event_loop()
    try:
        with_ns = statistics.median(
            loop.run_until_complete(timeouts(number, True)) for _ in range(repeat)
        )
        bare_ns = statistics.median(
            loop.run_until_complete(timeouts(number, False)) for _ in range(repeat)
        )
        return [
            {
                "step": "async: a bare asyncio.timeout() block",
                "ns": (with_ns - bare_ns) / number,
                "note": "deadline_seconds makes every async attempt set one",
            }
        ]
    finally:
        loop.close()


# -- 3. cProfile, 4. pyinstrument ----------------------------------------------------------


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


# -- 1. above the floor, end to end --------------------------------------------------------

Patches = dict[tuple[ModuleType, str], Any]

FLOOR = "(the floor itself: its p50, not above it)"


def _gaps(
    variants: list[Variant],
    patches: dict[str, Patches],
    rounds: int,
    calls: int,
    failed: dict[str, str],
) -> dict[str, dict[str, float]]:
    """p50 minus the floor's (the first variant), per variant, median over interleaved rounds.

    Module-level stubs (``patches``) are set before each variant's batch of calls and
    the real functions put back before every other's, so no call pays for switching. A
    variant that fails its warm-up (a stub that no longer fits) is left out, its reason
    in ``failed``.
    """
    originals: Patches = {}
    for per in patches.values():
        for key in per:
            originals.setdefault(key, getattr(*key))

    def apply(name: str) -> None:
        own = patches.get(name, {})
        for (module, attr), real in originals.items():
            setattr(module, attr, own.get((module, attr), real))

    loop = asyncio.new_event_loop()
    try:
        for v in list(variants):
            apply(v.name)
            try:
                time_sync(v, 200)
                loop.run_until_complete(time_async(v, 200))
            except Exception as exc:  # private API moved: report, do not fail
                failed[v.name] = f"n/a ({type(exc).__name__}: {exc})"
                variants.remove(v)
        gaps: dict[str, dict[str, list[float]]] = {
            mode: {FLOOR: [], **{v.name: [] for v in variants[1:]}} for mode in ("sync", "async")
        }
        for r in range(rounds):
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for mode in ("sync", "async"):
                p50 = {}
                for v in order:
                    apply(v.name)
                    gc.collect()
                    if mode == "sync":
                        samples = time_sync(v, calls)
                    else:
                        samples = loop.run_until_complete(time_async(v, calls))
                    p50[v.name] = statistics.median(samples) / 1000
                gaps[mode][FLOOR].append(p50[variants[0].name])
                for v in variants[1:]:
                    gaps[mode][v.name].append(p50[v.name] - p50[variants[0].name])
    finally:
        for (module, attr), real in originals.items():
            setattr(module, attr, real)
        loop.close()
    return {
        mode: {name: statistics.median(g) for name, g in per.items()} for mode, per in gaps.items()
    }


def _floor_variant() -> Variant:
    floor = InlineFloor(ConstantChatModel())
    return Variant("floor", lambda: floor.invoke(INPUT), lambda: floor.ainvoke(INPUT))


def _router_variant(name: str, router: Any) -> Variant:
    return Variant(name, partial(router.invoke, INPUT), partial(router.ainvoke, INPUT))


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
    variants = [_floor_variant()]
    variants += [_router_variant(n, _ablated_router(c)) for n, c in ABLATIONS.items()]
    failed: dict[str, str] = {}
    gaps = _gaps(variants, {}, rounds, calls, failed)
    for name, why in failed.items():
        print(f"{name}: {why}")
    return gaps


class _FirstStrategy:
    name = "first"

    def order(self, candidates: Any, model: Any) -> Any:
        return iter(candidates)


def _keep_gates(router: Any, keep: Callable[[Any], bool]) -> None:
    for provider in router.pipeline.providers.values():
        provider.gates = tuple(g for g in provider.gates if keep(g))


def _noop_gates(router: Any) -> None:
    gate = _get(_gates, "Gate")
    for provider in router.pipeline.providers.values():
        provider.gates = tuple(gate() for _ in provider.gates)


def _without_gate(class_name: str) -> Callable[[Any], Patches]:
    def stub(router: Any) -> Patches:
        cls = _get(_gates, class_name)
        before = len(router.pipeline.providers["primary"].gates)
        _keep_gates(router, lambda g: not isinstance(g, cls))
        if len(router.pipeline.providers["primary"].gates) == before:
            raise LookupError(f"no {class_name} among the gates")
        return {}

    return stub


def _recycled_lease(router: Any) -> Patches:
    """``admit`` that runs the gates on one reused lease per provider: no Lease built."""
    lease_type = _get(_lease, "Lease")
    leases: dict[str, Any] = {}

    def admit(provider: Any, model: str, attempt: int, now: float, *rest: Any) -> Any:
        lease = leases.get(provider.name)
        if lease is None:
            lease = leases[provider.name] = lease_type(provider, model, attempt, now, *rest)
        lease.model, lease.attempt, lease.started = model, attempt, now
        if rest:
            lease.context = rest[0]
        lease.outcome = lease.verdict = lease.permit = lease.message = None
        lease.first_chunk = lease.cooldown = lease._lock = None
        lease._running = False
        gates = provider.gates
        for gate in gates:
            refusal = gate.enter(lease)
            if refusal is not None:  # never in this benchmark
                raise RuntimeError(f"refused: {refusal!r}")
        lease._held = len(gates)
        return lease, None

    return _patch(_pipeline, "admit", admit)


def _empty_observers(router: Any) -> Patches:
    router.pipeline.observer = _get(_observe, "Observers")()
    return {}


def _first_strategy(router: Any) -> Patches:
    router.pipeline.strategy = _FirstStrategy()
    return {}


def _bare_record(router: Any) -> Patches:
    """The plan's success record (usage, cost, clock, AttemptEnd, observer) -> a settle."""
    if not hasattr(router.pipeline, "_succeeded"):
        raise AttributeError("Pipeline._succeeded")
    router.pipeline._succeeded = lambda lease: lease.succeed(lease.message)
    return {}


def _minimal_plan(router: Any) -> Patches:
    """A plan that admits the first candidate and delivers what it answers: the same
    steps, gates and timeout, none of the selection, retry or record logic."""
    pipeline = router.pipeline
    admit, call, deliver = _get(_lease, "admit"), _get(_steps, "Call"), _get(_steps, "Deliver")
    first = pipeline.candidates(pipeline.config.default_model)[0]
    timeout = pipeline.config.deadline_seconds
    trail = [{"provider": first.name, "model": first.models[0], "error": None}]
    with_context = len(inspect.signature(admit).parameters) > 4

    def run(ctx: Any) -> Any:
        model = ctx.model if ctx.model is not None else first.models[0]
        if with_context:
            lease, refusal = admit(first, model, 1, 0.0, ctx)
        else:
            lease, refusal = admit(first, model, 1, 0.0)
        if refusal is not None:
            raise RuntimeError(f"refused: {refusal!r}")
        result = yield call(lease, timeout, math.inf)
        if isinstance(result, BaseException):
            lease.ignore()
            raise result
        yield deliver(lease, result, math.inf, trail)
        lease.succeed(lease.message)
        return lease

    pipeline.run = run
    return {}


def _lean_attempt_config(router: Any) -> Patches:
    return _patch(_drive, "attempt_config", _floor_child)


def _no_annotate(router: Any) -> Patches:
    return _patch(_run, "annotate", lambda output, deliver: output)


def _lean_finish(router: Any) -> Patches:
    """``finish``/``afinish`` that resume the plan once and expect it to end."""

    def finish(plan: Any, outcome: Any, clock: Any, run: Any) -> None:
        with contextlib.suppress(StopIteration):
            plan.send(outcome)

    async def afinish(plan: Any, outcome: Any, clock: Any, run: Any) -> None:
        with contextlib.suppress(StopIteration):
            plan.send(outcome)

    return {**_patch(_run, "finish", finish), **_patch(_run, "afinish", afinish)}


def _no_gates(router: Any) -> Patches:
    _keep_gates(router, lambda g: False)
    return {}


def _no_op_gates(router: Any) -> Patches:
    _noop_gates(router)
    return {}


Stub = Callable[[Any], Patches]

STUBS: dict[str, Stub] = {
    "gates (provider.gates = ())": _no_gates,
    "gates -> no-op Gate()s": _no_op_gates,
    "  cooldown gate": _without_gate("CooldownGate"),
    "  breaker gate": _without_gate("BreakerGate"),
    "  limiter gate (bucket and slots)": _without_gate("LimiterGate"),
    "lease (admit reuses one)": _recycled_lease,
    "observer (Observers() empty)": _empty_observers,
    "strategy (candidates in order)": _first_strategy,
    "record (_succeeded -> settle only)": _bare_record,
    "plan (minimal: admit, Call, Deliver)": _minimal_plan,
    "attempt_config (floor's child)": _lean_attempt_config,
    "annotate (identity)": _no_annotate,
    "finish (one send)": _lean_finish,
}
ALL = (
    "gates (provider.gates = ())",
    "observer (Observers() empty)",
    "plan (minimal: admit, Call, Deliver)",
    "attempt_config (floor's child)",
    "annotate (identity)",
    "finish (one send)",
)


def stubbed(rounds: int, calls: int) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    """End-to-end saving of replacing one component with a no-op (interleaved rounds).

    Unlike the isolated timings this counts everything a component causes: garbage,
    cache misses, the extra work it makes the provider's own run do. Returns the gaps and,
    for a stub that no longer applies, why.
    """
    cases: dict[str, tuple[str, ...]] = {"full router": ()}
    cases.update({f"without {name}": (name,) for name in STUBS})
    cases["without all of: gates, observer, plan, attempt_config, annotate, finish"] = ALL
    variants = [_floor_variant()]
    patches: dict[str, Patches] = {}
    skipped: dict[str, str] = {}
    for case, names in cases.items():
        router = _router(ConstantChatModel(), ConstantChatModel())
        own: Patches = {}
        try:
            for name in names:
                own.update(STUBS[name](router))
        except Exception as exc:  # private API moved: report, do not fail
            skipped[case] = f"n/a ({type(exc).__name__}: {exc})"
            continue
        variants.append(_router_variant(case, router))
        patches[case] = own
    return _gaps(variants, patches, rounds, calls, skipped), skipped


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
    stubs, skipped = stubbed(rounds=5 if args.quick else 15, calls=200)
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
    stub_rows: list[list[Any]] = [
        [name, stubs["sync"][name], stubs["async"][name]] for name in stubs["sync"]
    ]
    stub_rows += [[name, why, ""] for name, why in skipped.items()]
    headers = ["component replaced by a no-op", "sync us above floor", "async us above floor"]
    print(table(headers, stub_rows))
    print()
    print(
        table(
            ["component (isolated)", "ns/call", "note"],
            [
                [
                    r["step"],
                    float(r["ns"]) if r["ns"] is not None else ("" if not r["note"] else "n/a"),
                    r["note"],
                ]
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
    elif args.pyinstrument:
        print("\npyinstrument is not installed: no call tree")
    path = write_results(
        "profile_router",
        args,
        {
            "router_minus_floor_us": gap,
            "stubbed_minus_floor_us": stubs,
            "stubs_not_applied": skipped,
            "components": [r for r in rows if r["ns"] is not None or r["note"]],
            "cprofile": profiles,
        },
    )
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    main()
