"""Per-call router overhead as the number of providers serving the model grows.

Routers with 2, 10, 100 and 1,000 providers (all serving model ``m``, rate limits,
breakers, retries and metrics enabled, zero-latency providers) for each built-in
strategy, timed in interleaved rounds with the provider called directly. The overhead
of a router is its p50 minus the direct p50 of the same round; the target compares
overheads within a round (median over rounds): 100 providers <= 1.5x the cost of 2.

Every provider has the same priority and price, so for ``cost_priority_round_robin``
all of them tie and rotate: its worst case.

Run: ``.venv/bin/python benchmarks/scaling.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from typing import Any

from _common import (
    ConstantChatModel,
    median,
    p50_p99,
    router_provider,
    table,
    verdict,
    write_results,
)
from overhead import Variant, time_async, time_sync

from router_middleware import ResilientRouter

INPUT = "hi"
STRATEGIES = ("round_robin", "cost_priority_round_robin")


def make_router(n: int, strategy: str) -> ResilientRouter:
    model = ConstantChatModel()
    return ResilientRouter(
        {f"p{i}": model for i in range(n)},
        {
            "strategy": strategy,
            "default_model": "m",
            "providers": [router_provider(f"p{i}", 1) for i in range(n)],
        },
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    direct = ConstantChatModel()
    variants = [Variant("direct", lambda: direct.invoke(INPUT), lambda: direct.ainvoke(INPUT))]
    for strategy in STRATEGIES:
        for n in args.providers:
            router = make_router(n, strategy)
            variants.append(
                Variant(
                    f"{strategy}:{n}",
                    lambda r=router: r.invoke(INPUT),
                    lambda r=router: r.ainvoke(INPUT),
                )
            )
    loop = asyncio.new_event_loop()
    for v in variants:
        time_sync(v, args.warmup)
        loop.run_until_complete(time_async(v, args.warmup))
    gc.collect()
    gc.freeze()  # as in overhead.py: long-lived objects stay out of the timed collections
    p50s: dict[str, dict[str, list[float]]] = {
        mode: {v.name: [] for v in variants} for mode in ("sync", "async")
    }
    for r in range(args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for mode in ("sync", "async"):
            for v in order:
                gc.collect()
                if mode == "sync":
                    samples = time_sync(v, args.calls)
                else:
                    samples = loop.run_until_complete(time_async(v, args.calls))
                p50s[mode][v.name].append(p50_p99(samples)[0] / 1000)
    loop.close()

    out: dict[str, Any] = {"modes": {}}
    smallest, target_n = min(args.providers), 100
    for mode, per in p50s.items():
        base = per["direct"]
        rows: dict[str, Any] = {"direct_p50_us": median(base)}
        for strategy in STRATEGIES:
            entries = {}
            ref = per[f"{strategy}:{smallest}"]
            for n in args.providers:
                vals = per[f"{strategy}:{n}"]
                entries[str(n)] = {
                    "p50_us": median(vals),
                    "overhead_us": median(v - b for v, b in zip(vals, base, strict=True)),
                    "overhead_vs_smallest": median(
                        (v - b) / (s - b) for v, s, b in zip(vals, ref, base, strict=True)
                    ),
                    "latency_vs_smallest": median(v / s for v, s in zip(vals, ref, strict=True)),
                }
            if str(target_n) in entries and smallest == 2:
                ratio = entries[str(target_n)]["overhead_vs_smallest"]
                entries["target"] = {"ratio": ratio, "limit": 1.5, "pass": ratio <= 1.5}
            rows[strategy] = entries
        out["modes"][mode] = rows
    return out


def report(results: dict[str, Any], providers: list[int]) -> str:
    lines = []
    for mode, rows in results["modes"].items():
        table_rows = []
        for strategy in STRATEGIES:
            entries = rows[strategy]
            for n in providers:
                e = entries[str(n)]
                mark = ""
                if n == 100 and "target" in entries:
                    mark = f"<= 1.5  {verdict(entries['target']['pass'])}"
                table_rows.append(
                    [
                        strategy if n == providers[0] else "",
                        n,
                        e["p50_us"],
                        e["overhead_us"],
                        e["overhead_vs_smallest"],
                        e["latency_vs_smallest"],
                        mark,
                    ]
                )
        headers = [
            f"{mode} (direct p50 {rows['direct_p50_us']:.0f} us)",
            "providers",
            "p50 us",
            "overhead us",
            "overhead / 2",
            "p50 / 2",
            "target",
        ]
        lines += [table(headers, table_rows), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--providers", type=int, nargs="+", default=[2, 10, 100, 1000])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--calls", type=int, default=200, help="timed calls per variant per round")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="3 rounds of 50 calls")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.warmup = 3, 50, 20
    started = time.perf_counter()
    results = run(args)
    results["elapsed_seconds"] = time.perf_counter() - started
    print(report(results, args.providers))
    path = write_results("scaling", args, results)
    print(f"wrote {path.name} ({results['elapsed_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
