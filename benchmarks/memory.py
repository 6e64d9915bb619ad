"""Memory growth of a long-running router: RSS, tracemalloc and per-provider state.

A router over two zero-latency providers (rate limits, breakers, retries and metrics on;
the primary fails one call in ``--fail-every`` with a 503, so retries, failovers, breaker
trips and half-open trials are exercised too) is warmed up, then serves ``--requests``
sync requests and ``--requests`` async requests. Measured after warm-up and after each
phase (after a full collection):

* RSS (``/proc/self/statm``), over the full request counts;
* tracemalloc's traced memory, over ``--traced-requests`` more of each (tracing makes
  every call ~5x slower, so it runs on fewer requests), with the top growing sites;
* each provider's own state (metrics, latency rings, breaker record, token bucket,
  slot queue), deep-sized: it must not change;
* the number of live objects the garbage collector tracks.

Target: growth < 5 MB; per-provider state constant.

Run: ``.venv/bin/python benchmarks/memory.py`` (``--requests 100000`` for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import gc
import os
import sys
import time
import tracemalloc
import types
from typing import Any

from _common import (
    ConstantChatModel,
    ServiceUnavailable,
    router_provider,
    table,
    verdict,
    write_results,
)
from langchain_core.outputs import ChatResult

from router_middleware import ResilientRouter

MB = 1024 * 1024
LIMIT_MB = 5.0


class SometimesFailing(ConstantChatModel):
    """Fails one call in ``fail_every`` (deterministically), answers the others."""

    fail_every: int = 100
    calls: int = 0

    def _result(self) -> ChatResult:
        self.calls += 1
        if self.fail_every and self.calls % self.fail_every == 0:
            raise ServiceUnavailable("HTTP 503")
        return super()._result()


def make_router(fail_every: int) -> ResilientRouter:
    return ResilientRouter(
        {"primary": SometimesFailing(fail_every=fail_every), "secondary": ConstantChatModel()},
        {
            "strategy": "cost_priority_round_robin",
            "default_model": "m",
            "providers": [router_provider("primary", 1), router_provider("secondary", 2)],
            "retry": {"attempts": 3, "initial_backoff_seconds": 0.0, "max_backoff_seconds": 0.0},
            # Short enough that the breaker opens, half-opens and closes many times.
            "circuit_breaker": {
                "threshold": 5,
                "sampling_duration_seconds": 1.0,
                "reset_timeout_seconds": 0.05,
            },
        },
    )


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# Enum members are shared singletons: a breaker's state is one of three.
_OPAQUE = (
    type,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.ModuleType,
    enum.Enum,
)


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of ``obj`` and everything it owns: containers, ``__dict__`` and slots.

    Stops at shared or opaque things that are not per-provider state: types, functions,
    modules, locks, enum members, pydantic config models, clocks and stores.
    """
    if seen is None:
        seen = set()
    if isinstance(obj, (int, float, str, bytes)) or obj is None:
        # By value, not identity: CPython shares small ints, so a counter that leaves the
        # cache (passes 256) would otherwise look like new state.
        return sys.getsizeof(obj)
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, _OPAQUE):
        return 0
    module = type(obj).__module__
    if module.startswith(("pydantic", "threading", "_thread", "enum", "random")):
        return 0
    name = type(obj).__name__
    if name in {"lock", "RLock", "Condition", "SystemClock", "InMemoryStore"} or _is_config(obj):
        return 0
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(deep_size(k, seen) + deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        size += sum(deep_size(v, seen) for v in obj)
    else:
        if hasattr(obj, "__dict__"):
            size += deep_size(vars(obj), seen)
        for cls in type(obj).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(obj, slot):
                    size += deep_size(getattr(obj, slot), seen)
    return size


def _is_config(obj: Any) -> bool:
    from pydantic import BaseModel

    return isinstance(obj, BaseModel)


def provider_state(router: ResilientRouter) -> dict[str, tuple[int, int]]:
    """Per provider: deep size of its live state, and the breaker's failure-window length.

    The breaker keeps up to ``threshold`` recent failure times, so its record's size moves
    within a fixed range: it is sized with that window empty and the window's length is
    reported on its own (it must stay below the threshold).
    """
    store = router.store
    out = {}
    for name, p in router.providers.items():
        record = store.breaker_record(store.key(f"{name}:breaker"))
        window = len(getattr(record, "failures", ()))
        if hasattr(record, "_replace"):
            record = record._replace(failures=(), buckets=())
        parts: list[Any] = [
            p.metrics,
            p.slots,
            p.limiter.concurrency,
            p.backoff,
            p.gates,
            p.last_selected,
            record,
            # The bucket's and the slot count's stored values (plain tuples and ints).
            {k: v for k, v in store._data.items() if k.startswith(store.key(f"{name}:"))},
        ]
        out[name] = (deep_size(parts), window)
    return out


def drive_sync(router: ResilientRouter, n: int) -> None:
    invoke = router.invoke
    for _ in range(n):
        invoke("hi")


def drive_async(router: ResilientRouter, n: int) -> None:
    async def main() -> None:
        ainvoke = router.ainvoke
        for _ in range(n):
            await ainvoke("hi")

    _LOOP.run_until_complete(main())


# One loop for the whole run: a loop per slice would measure the loops, not the router.
_LOOP = asyncio.new_event_loop()


def settle() -> None:
    gc.collect()
    gc.collect()


def drive(
    router: ResilientRouter, mode: str, n: int, samples: int, sizes: dict[str, list[int]]
) -> None:
    """Serve ``n`` requests in ``samples`` slices, deep-sizing provider state after each."""
    step = max(1, n // samples)
    done = 0
    while done < n:
        chunk = min(step, n - done)
        (drive_sync if mode == "sync" else drive_async)(router, chunk)
        done += chunk
        for name, (size, window) in provider_state(router).items():
            sizes.setdefault(name, []).append(size)
            sizes.setdefault(f"{name} breaker window", []).append(window)


def run(args: argparse.Namespace) -> dict[str, Any]:
    router = make_router(args.fail_every)
    warm_sizes: dict[str, list[int]] = {}
    drive(router, "sync", args.warmup, args.samples, warm_sizes)
    drive(router, "async", args.warmup, args.samples, warm_sizes)
    settle()
    rss0, objects0 = rss(), len(gc.get_objects())
    phases: dict[str, Any] = {}
    for phase in ("sync", "async"):
        sizes: dict[str, list[int]] = {}
        started = time.perf_counter()
        drive(router, phase, args.requests, args.samples, sizes)
        seconds = time.perf_counter() - started
        settle()
        phases[phase] = {
            "requests": args.requests,
            "seconds": seconds,
            "rss_growth_mb": (rss() - rss0) / MB,
            "live_objects_growth": len(gc.get_objects()) - objects0,
            "provider_state_bytes": {n: [min(v), max(v)] for n, v in sizes.items()},
        }

    traced: dict[str, Any] = {"requests_each": args.traced_requests}
    if args.traced_requests:
        tracemalloc.start(args.frames)
        settle()
        base_current = tracemalloc.get_traced_memory()[0]
        before = tracemalloc.take_snapshot()
        drive_sync(router, args.traced_requests)
        drive_async(router, args.traced_requests)
        settle()
        current, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        top = after.compare_to(before, "lineno")[:5]
        traced.update(
            growth_mb=(current - base_current) / MB,
            peak_above_start_mb=(peak - base_current) / MB,
            top_growth=[
                {"site": str(stat.traceback[0]), "bytes": stat.size_diff, "count": stat.count_diff}
                for stat in top
            ],
        )
    metrics = router.metrics()
    warm = {n: [min(v), max(v)] for n, v in warm_sizes.items()}
    # Sized with the breaker's failure window empty, the state must not outgrow what it
    # was after warm-up; the window itself must stay below the breaker's threshold.
    threshold = router.router_config.circuit_breaker.threshold
    state_constant = all(
        phases[p]["provider_state_bytes"][n][1] <= warm[n][1]
        for p in phases
        for n in warm
        if not n.endswith("window")
    )
    window_bounded = all(
        phases[p]["provider_state_bytes"][n][1] < threshold
        for p in phases
        for n in warm
        if n.endswith("window")
    )
    checks = {
        f"RSS growth < {LIMIT_MB:g} MB": phases["async"]["rss_growth_mb"] < LIMIT_MB,
        "per-provider state no larger than after warm-up": state_constant,
        "breaker failure window below its threshold": window_bounded,
    }
    if "growth_mb" in traced:
        checks[f"tracemalloc growth < {LIMIT_MB:g} MB"] = traced["growth_mb"] < LIMIT_MB
    return {
        "provider_state_bytes_warmup": warm,
        "phases": phases,
        "tracemalloc": traced,
        "router_totals": metrics["totals"],
        "breaker_trips": {n: p["circuit_breaker_trips"] for n, p in metrics["providers"].items()},
        "checks": checks,
    }


def report(results: dict[str, Any]) -> str:
    def sizes(per: dict[str, list[int]]) -> str:
        return ", ".join(
            f"{k} {lo}-{hi}" if k.endswith("window") else f"{k} {lo}-{hi} B"
            for k, (lo, hi) in per.items()
        )

    rows = [["warm-up", "-", "0", "0", sizes(results["provider_state_bytes_warmup"])]]
    for phase, p in results["phases"].items():
        rows.append(
            [
                f"{p['requests']:,} {phase}",
                f"{p['seconds']:.0f}s",
                f"{p['rss_growth_mb']:+.2f} MB",
                f"{p['live_objects_growth']:+d}",
                sizes(p["provider_state_bytes"]),
            ]
        )
    headers = ["after", "took", "RSS growth", "live objects", "per-provider state (min-max)"]
    lines = [table(headers, rows)]
    t = results["tracemalloc"]
    if "growth_mb" in t:
        lines.append(
            f"\ntracemalloc over {t['requests_each']:,} sync + {t['requests_each']:,} async more: "
            f"growth {t['growth_mb'] * 1024:+.1f} KB, peak {t['peak_above_start_mb'] * 1024:.1f} KB"
            " above the start"
        )
        for s in t["top_growth"]:
            lines.append(f"  {s['bytes']:+8d} B {s['count']:+6d} blocks  {s['site']}")
    totals = results["router_totals"]
    lines.append(f"\nrouter totals: {totals}; breaker trips: {results['breaker_trips']}")
    lines.append("")
    lines.append(table(["check", ""], [[k, verdict(v)] for k, v in results["checks"].items()]))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1_000_000, help="per phase (sync, async)")
    parser.add_argument("--traced-requests", type=int, default=100_000, help="per phase, traced")
    parser.add_argument("--warmup", type=int, default=20_000, help="per phase")
    parser.add_argument("--fail-every", type=int, default=100, help="primary fails 1 call in N")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames")
    parser.add_argument("--samples", type=int, default=20, help="state sizings per phase")
    args = parser.parse_args()
    results = run(args)
    print(report(results))
    path = write_results("memory", args, results)
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    main()
