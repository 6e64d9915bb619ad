"""Async throughput through the router against calling the provider directly.

``C`` worker tasks share a budget of requests and each awaits one request at a time, so
``C`` requests are in flight. Providers answer at once, or after an ``asyncio.sleep`` of
20 ms. The router has two such providers with rate limits (never refusing), breakers,
retries and metrics enabled; the direct variant awaits one provider's ``ainvoke``, and
the floor variant awaits it through ``overhead.InlineFloor`` (the least a wrapper whose
attempts nest in traces costs), as a reference.
Variants alternate within each round; the median of per-round ratios is reported.

Targets (at C = 100 and 1,000): router >= 0.8x the direct throughput; with 20 ms
providers, router >= 90% of ``C / latency`` wherever the direct call reaches it. On two
shared cores the direct call is CPU-bound below ``C / latency`` at C = 100 and 1,000, so
C = 10 is run as well: the concurrency at which that target can be judged here.

Run: ``.venv/bin/python benchmarks/throughput.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _common import ConstantChatModel, median, router_provider, table, verdict, write_results
from overhead import InlineFloor

from router_middleware import ResilientRouter

INPUT = "hi"


def provider(latency: float) -> ConstantChatModel:
    # A zero-latency provider still suspends once per call, as any network call does:
    # otherwise the first worker would run every request and concurrency would be moot.
    return ConstantChatModel(latency=latency, yield_to_loop=True)


def make_router(latency: float) -> ResilientRouter:
    return ResilientRouter(
        {"primary": provider(latency), "secondary": provider(latency)},
        {
            "strategy": "round_robin",
            "default_model": "m",
            "providers": [router_provider("primary", 1), router_provider("secondary", 1)],
        },
    )


async def drive(call: Callable[[], Awaitable[Any]], concurrency: int, total: int) -> float:
    """Requests per second for ``total`` requests with ``concurrency`` in flight."""
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    gc.collect()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    cases = []
    loop = asyncio.new_event_loop()
    for latency in args.latencies:
        direct_model = provider(latency)
        floor = InlineFloor(provider(latency))
        router = make_router(latency)
        variants: dict[str, Callable[[], Awaitable[Any]]] = {
            "direct": lambda m=direct_model: m.ainvoke(INPUT),
            "floor_inline": lambda f=floor: f.ainvoke(INPUT),
            "router": lambda r=router: r.ainvoke(INPUT),
        }
        for concurrency in args.concurrency:
            total = max(args.min_requests, args.per_slot * concurrency)
            for call in variants.values():  # warm-up
                loop.run_until_complete(drive(call, concurrency, min(total, 500)))
            rates: dict[str, list[float]] = {name: [] for name in variants}
            for r in range(args.rounds):
                names = list(variants)
                for name in names[r % len(names) :] + names[: r % len(names)]:
                    rates[name].append(
                        loop.run_until_complete(drive(variants[name], concurrency, total))
                    )
            ratio = median(a / b for a, b in zip(rates["router"], rates["direct"], strict=True))
            floor_ratio = median(
                a / b for a, b in zip(rates["floor_inline"], rates["direct"], strict=True)
            )
            ideal = concurrency / latency if latency else None
            case: dict[str, Any] = {
                "latency_ms": latency * 1000,
                "concurrency": concurrency,
                "requests_per_run": total,
                "direct_rps": median(rates["direct"]),
                "floor_rps": median(rates["floor_inline"]),
                "router_rps": median(rates["router"]),
                "floor_over_direct": floor_ratio,
                "router_over_direct": ratio,
                "ratio_pass": ratio >= 0.8,
            }
            if ideal is not None:
                direct_share = case["direct_rps"] / ideal
                router_share = case["router_rps"] / ideal
                case.update(
                    ideal_rps=ideal,
                    direct_share_of_ideal=direct_share,
                    router_share_of_ideal=router_share,
                    ideal_applies=direct_share >= 0.9,
                    ideal_pass=router_share >= 0.9 if direct_share >= 0.9 else None,
                )
            cases.append(case)
    loop.close()
    return {"cases": cases}


def report(results: dict[str, Any]) -> str:
    rows = []
    for c in results["cases"]:
        ideal = c.get("ideal_rps")
        if ideal is None:
            ideal_txt, ideal_verdict = "-", ""
        elif c["ideal_applies"]:
            ideal_txt = f"{c['router_share_of_ideal']:.0%} of {ideal:,.0f}"
            ideal_verdict = verdict(c["ideal_pass"])
        else:
            ideal_txt = f"direct {c['direct_share_of_ideal']:.0%} of {ideal:,.0f}"
            ideal_verdict = "n/a"
        rows.append(
            [
                f"{c['latency_ms']:g} ms",
                c["concurrency"],
                c["direct_rps"],
                c["floor_over_direct"],
                c["router_rps"],
                c["router_over_direct"],
                verdict(c["ratio_pass"]),
                ideal_txt,
                ideal_verdict,
            ]
        )
    headers = [
        "latency",
        "C",
        "direct req/s",
        "floor/direct",
        "router req/s",
        "router/direct",
        ">=0.8",
        "router vs C/latency",
        ">=90%",
    ]
    return table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--latencies", type=float, nargs="+", default=[0.0, 0.02])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--per-slot", type=int, default=5, help="requests per run = this x C")
    parser.add_argument("--min-requests", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="2 rounds, fewer requests")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.per_slot, args.min_requests = 2, 2, 500
    started = time.perf_counter()
    results = run(args)
    results["elapsed_seconds"] = time.perf_counter() - started
    print(report(results))
    path = write_results("throughput", args, results)
    print(f"\nwrote {path.name} ({results['elapsed_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
