"""What shared state on Redis costs a routed request: round trips, latency, throughput.

Starts its own ``redis-server`` on a free loopback port (``tests/redis_server.py``) and
measures, with a provider that answers at once (a plain ``def handler(request) ->
LLMResponse``):

1. **Round trips per request.** The commands this process sends to Redis per
   ``router.invoke``, counted on the client (every command it sends is one round trip:
   the store pipelines nothing), split into *admission* (sent before the provider is
   called) and *settle* (after), with the Lua scripts they ran; and, from ``INFO
   commandstats`` around the same requests, every command Redis executed (the scripts'
   own calls included). Configurations: ``none`` (no limit: breaker and cool-down only),
   ``rate`` (requests per second and ``max_concurrent``) and ``rate+tokens+budget``
   (plus ``tokens_per_minute`` and a budget, the provider reporting usage). The issue's
   target is one round trip to admit and one to settle.
2. **Added latency.** p50 and p99 of ``invoke`` and ``ainvoke`` with the state on Redis
   (``state.url``: the router's own ``FallbackStore`` over a ``RedisStore``) against the
   in-memory store, in interleaved rounds on loopback; the figures are medians of the
   per-round percentiles, the difference is Redis minus memory within each round.
3. **Throughput across processes.** ``--processes`` (4) OS processes, each a router
   with ``state.url`` on the same Redis and ``--threads`` threads calling it, against one
   such process, for ``--seconds`` each, counting the provider calls that start within
   that window (all processes start at one wall-clock time): with limits that never bind
   (the cost of sharing; an in-memory process for reference) and with a shared rate
   limit of ``--shared-rate`` requests/s (which should hold for the deployment whatever
   the number of processes: burst + rate x seconds).

Run: ``.venv/bin/python benchmarks/redis.py`` (about a minute; ``--quick`` for a smoke
run). Needs ``redis-server`` on the PATH and redis-py (the ``redis`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

# This file's name shadows redis-py for every script run from this directory: take the
# directory off the path while redis-py is imported, and if a script here imported this
# file as ``redis``, hand it redis-py instead (what the import then returns).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if __name__ == "redis":
    del sys.modules["redis"]
import redis  # noqa: E402

sys.path.append(_HERE)

from _common import ROOT, median, p50_p99, table, write_results  # noqa: E402

sys.path.insert(0, str(ROOT))

from router_middleware import LLMRequest, LLMResponse, ResilientRouter  # noqa: E402
from router_middleware._memory import InMemoryStore  # noqa: E402
from router_middleware.redis import FallbackStore, RedisStore  # noqa: E402

NEVER = {"requests_per_second": 1e9, "burst": 1_000_000_000, "max_concurrent": 100_000}

CASES: dict[str, dict[str, Any]] = {
    "none": {},
    "rate": {"rate_limit": dict(NEVER)},
    "rate+tokens+budget": {
        "rate_limit": {**NEVER, "tokens_per_minute": 1_000_000_000},
        "budget": {"max_cost": 1e9},
        "models": [
            {"name": "m", "cost_per_1k_input_tokens": 0.01, "cost_per_1k_output_tokens": 0.03}
        ],
    },
}


def handler(request: LLMRequest) -> LLMResponse:
    """The provider: answers at once, reporting usage (what token limits settle from)."""
    return LLMResponse(text="ok", input_tokens=5, output_tokens=3)


def router_config(case: str, url: str | None = None, **extra: Any) -> dict[str, Any]:
    provider = {"name": "p", "models": [{"name": "m"}], **CASES[case]}
    cfg: dict[str, Any] = {
        "providers": [provider],
        "default_model": "m",
        "retry": {"attempts": 1},
        **extra,
    }
    if url is not None:
        # As tests/test_redis_replicas.py: two shared cores, a thread may wait its turn
        # for longer than the 0.1 s default, and a run that degraded would measure memory.
        cfg["state"] = {"url": url, "timeout_seconds": 1.0}
    return cfg


@contextmanager
def server() -> Iterator[str]:
    from tests.redis_server import redis_server

    with redis_server() as (_, url):
        yield url


def commandstats(client: redis.Redis) -> Counter[str]:
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


# -- 1. round trips --------------------------------------------------------------------------


class _Tally:
    """What the router sent to Redis, by phase: before the provider's call or after."""

    def __init__(self) -> None:
        self.phase = "admission"
        self.commands: dict[str, Counter[str]] = {"admission": Counter(), "settle": Counter()}
        self.scripts: dict[str, Counter[str]] = {"admission": Counter(), "settle": Counter()}


def _counting_store(client: redis.Redis, tally: _Tally) -> FallbackStore:
    """The store ``shared_store`` builds, with every command and script counted."""
    send = client.execute_command

    def execute_command(*args: Any, **options: Any) -> Any:
        tally.commands[tally.phase][str(args[0]).lower()] += 1
        return send(*args, **options)

    client.execute_command = execute_command  # type: ignore[method-assign]

    class CountingStore(RedisStore):
        def _run(self, name: str, keys: Any, now: float | None, *args: Any) -> list[Any]:
            tally.scripts[tally.phase][name] += 1
            return super()._run(name, keys, now, *args)

    return FallbackStore(CountingStore(client))


def round_trips(url: str, requests: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for case in CASES:
        tally = _Tally()
        client = redis.Redis.from_url(url)
        store = _counting_store(client, tally)

        def provider(request: LLMRequest, tally: _Tally = tally) -> LLMResponse:
            tally.phase = "settle"
            return handler(request)

        router = ResilientRouter({"p": provider}, router_config(case), store=store)
        for _ in range(5):  # scripts loaded, calibration started
            tally.phase = "admission"
            router.invoke("hi")
        admin = redis.Redis.from_url(url)
        for counter in (*tally.commands.values(), *tally.scripts.values()):
            counter.clear()
        admin.config_resetstat()
        for _ in range(requests):
            tally.phase = "admission"
            router.invoke("hi")
        executed = commandstats(admin)
        executed.pop("config|resetstat", None)
        executed.pop("info", None)
        assert not store.degraded, "the store degraded: the counts would be of memory"
        sent = {phase: sum(c.values()) / requests for phase, c in tally.commands.items()}
        out[case] = {
            "round_trips": sum(sent.values()),
            "admission": sent["admission"],
            "settle": sent["settle"],
            "evalsha": sum(c["evalsha"] for c in tally.commands.values()) / requests,
            "scripts": {
                phase: {k: v / requests for k, v in c.items()} for phase, c in tally.scripts.items()
            },
            "sent": {
                phase: {k: v / requests for k, v in c.items()}
                for phase, c in tally.commands.items()
            },
            "executed_by_redis": sum(executed.values()) / requests,
            "executed": {k: v / requests for k, v in sorted(executed.items())},
        }
        store.close()
        client.close()
        admin.close()
    return out


# -- 2. latency ------------------------------------------------------------------------------


def _time_sync(call: Callable[[], Any], n: int) -> list[float]:
    clock, samples = time.perf_counter_ns, []
    for _ in range(n):
        start = clock()
        call()
        samples.append((clock() - start) / 1000)
    return samples


async def _time_async(call: Callable[[], Any], n: int) -> list[float]:
    clock, samples = time.perf_counter_ns, []
    for _ in range(n):
        start = clock()
        await call()
        samples.append((clock() - start) / 1000)
    return samples


def latency(url: str, rounds: int, calls: int) -> dict[str, Any]:
    routers: dict[str, ResilientRouter] = {}
    for case in ("rate", "rate+tokens+budget"):
        routers[f"{case}:memory"] = ResilientRouter(
            {"p": handler}, router_config(case), store=InMemoryStore()
        )
        routers[f"{case}:redis"] = ResilientRouter({"p": handler}, router_config(case, url))
    loop = asyncio.new_event_loop()
    for r in routers.values():  # warm-up
        _time_sync(lambda r=r: r.invoke("hi"), 200)
        loop.run_until_complete(_time_async(lambda r=r: r.ainvoke("hi"), 200))
    gc.collect()
    gc.freeze()
    per: dict[str, dict[str, list[tuple[float, float]]]] = {
        mode: {name: [] for name in routers} for mode in ("sync", "async")
    }
    names = list(routers)
    for i in range(rounds):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            r = routers[name]
            per["sync"][name].append(p50_p99(_time_sync(lambda r=r: r.invoke("hi"), calls)))
            samples = loop.run_until_complete(_time_async(lambda r=r: r.ainvoke("hi"), calls))
            per["async"][name].append(p50_p99(samples))
    loop.close()
    gc.unfreeze()
    out: dict[str, Any] = {}
    for mode, rows in per.items():
        for case in ("rate", "rate+tokens+budget"):
            mem, red = rows[f"{case}:memory"], rows[f"{case}:redis"]
            out[f"{mode}:{case}"] = {
                "memory_p50_us": median(p for p, _ in mem),
                "memory_p99_us": median(q for _, q in mem),
                "redis_p50_us": median(p for p, _ in red),
                "redis_p99_us": median(q for _, q in red),
                "added_p50_us": median(b[0] - a[0] for a, b in zip(mem, red, strict=True)),
                "added_p99_us": median(b[1] - a[1] for a, b in zip(mem, red, strict=True)),
                "ratio_p50": median(b[0] / a[0] for a, b in zip(mem, red, strict=True)),
            }
    for name, r in routers.items():
        if name.endswith(":redis"):
            store = r.store
            assert not getattr(store, "degraded", False), f"{name} degraded during the run"
            store.close()  # type: ignore[attr-defined]
    return out


# -- 3. throughput across processes ----------------------------------------------------------


def worker(args: argparse.Namespace) -> None:
    """One process of section 3: a router on the shared Redis, threads calling it."""
    cfg = json.loads(args.worker)
    probe = redis.Redis.from_url(cfg["state"]["url"]) if "state" in cfg else None
    control = redis.Redis.from_url(args.control)
    window = [math.inf, math.inf]  # calls the provider took within it are the figure
    started = [0]
    lock = threading.Lock()

    def provider(request: LLMRequest) -> LLMResponse:
        if window[0] <= time.time() < window[1]:
            with lock:
                started[0] += 1
        return handler(request)

    router = ResilientRouter({"p": provider}, cfg)
    for _ in range(50):
        router.invoke("hi")
    control.rpush("bench:ready", os.getpid())
    start = float(control.blpop(["bench:go"], timeout=60)[1])  # type: ignore[index]
    control.rpush("bench:go", repr(start))  # hand the start on to the next process
    time.sleep(max(0.0, start - time.time()))
    end = start + args.seconds
    window[:] = [start, end]
    outcomes: Counter[str] = Counter()

    def work() -> None:
        mine: Counter[str] = Counter()
        while time.time() < end:
            try:
                router.invoke("hi")
                mine["ok"] += 1
            except Exception as exc:
                mine[type(exc).__name__] += 1
        with lock:
            outcomes.update(mine)

    pool = [threading.Thread(target=work) for _ in range(args.threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    store = router.store
    summary = {
        "outcomes": dict(outcomes),
        "calls_in_window": started[0],
        "degradations": getattr(store, "degradations", 0),
        "errors": getattr(store, "errors", 0),
    }
    if probe is not None:
        store.close()  # type: ignore[attr-defined]
    print(json.dumps(summary))


def _processes(
    control_url: str, cfg: dict[str, Any], n: int, seconds: float, threads: int
) -> dict[str, Any]:
    control = redis.Redis.from_url(control_url)
    control.delete("bench:ready", "bench:go")
    if "state" in cfg:
        state = redis.Redis.from_url(cfg["state"]["url"])
        state.flushdb()
        state.close()
    command = [sys.executable, __file__, "--worker", json.dumps(cfg), "--control", control_url]
    command += ["--seconds", str(seconds), "--threads", str(threads)]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(n)
    ]
    try:
        deadline = time.time() + 60
        while control.llen("bench:ready") < n:
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError("a worker process did not start")
            time.sleep(0.02)
        control.rpush("bench:go", repr(time.time() + 0.3))
        summaries = []
        for p in procs:
            stdout, _ = p.communicate(timeout=seconds + 60)
            if p.returncode != 0:
                raise RuntimeError(f"a worker failed: {stdout}")
            summaries.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        control.close()
    ok = sum(s["calls_in_window"] for s in summaries)
    other = Counter[str]()
    for s in summaries:
        other.update({k: v for k, v in s["outcomes"].items() if k != "ok"})
    return {
        "processes": n,
        "ok": ok,
        "rps": ok / seconds,
        "per_process_rps": [s["calls_in_window"] / seconds for s in summaries],
        "other_outcomes": dict(other),
        "degradations": sum(s["degradations"] for s in summaries),
    }


def throughput(url: str, args: argparse.Namespace) -> dict[str, Any]:
    n, secs, threads = args.processes, args.seconds, args.threads
    shared = {"requests_per_second": args.shared_rate, "burst": max(1, int(args.shared_rate / 10))}
    limited = router_config("rate", url, max_wait_seconds=5.0)
    limited["providers"][0]["rate_limit"] = {**NEVER, **shared}
    runs = {
        "memory, 1 process": _processes(url, router_config("rate"), 1, secs, threads),
        "unbound, 1 process": _processes(url, router_config("rate", url), 1, secs, threads),
        f"unbound, {n} processes": _processes(url, router_config("rate", url), n, secs, threads),
        "shared rate, 1 process": _processes(url, limited, 1, secs, threads),
        f"shared rate, {n} processes": _processes(url, limited, n, secs, threads),
    }
    return {
        "runs": runs,
        "ratio_unbound": runs[f"unbound, {n} processes"]["rps"] / runs["unbound, 1 process"]["rps"],
        "ratio_shared_rate": runs[f"shared rate, {n} processes"]["rps"]
        / runs["shared rate, 1 process"]["rps"],
        "shared_rate_limit": args.shared_rate,
        "shared_rate_expected_rps": args.shared_rate + shared["burst"] / secs,
    }


# -- report ----------------------------------------------------------------------------------


def _scripts(counts: dict[str, float]) -> str:
    return ", ".join(f"{k}" if v == 1 else f"{k} x{v:g}" for k, v in counts.items()) or "-"


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    lines = []
    rt = results["round_trips"]
    lines.append("1. Round trips to Redis per router.invoke (client-side count; target 1 + 1)")
    rows = [
        [
            case,
            r["round_trips"],
            r["admission"],
            r["settle"],
            r["evalsha"],
            r["executed_by_redis"],
            "PASS" if r["admission"] <= 1 and r["settle"] <= 1 else "MISS",
        ]
        for case, r in rt.items()
    ]
    head = ["limits", "round trips", "admission", "settle", "EVALSHA", "executed", "1 + 1"]
    lines += [table(head, rows), ""]
    for case, r in rt.items():
        lines.append(f"  {case}: admission = {_scripts(r['scripts']['admission'])}")
        lines.append(f"  {' ' * len(case)}  settle    = {_scripts(r['scripts']['settle'])}")
    lines.append(
        "  (executed: the commands Redis ran per request, the scripts' own included: "
        "INFO commandstats)"
    )
    lines.append("")
    lines.append(
        f"2. Latency per request, handler answering at once, loopback "
        f"(median of {args.rounds} rounds x {args.calls} calls, us)"
    )
    rows = []
    for key, r in results["latency"].items():
        mode, case = key.split(":", 1)
        rows.append(
            [
                f"{mode}, {case}",
                r["memory_p50_us"],
                r["redis_p50_us"],
                r["added_p50_us"],
                r["ratio_p50"],
                r["memory_p99_us"],
                r["redis_p99_us"],
                r["added_p99_us"],
            ]
        )
    head = ["mode, limits", "memory p50", "redis p50", "added p50", "redis/memory"]
    head += ["memory p99", "redis p99", "added p99"]
    lines += [table(head, rows), ""]
    tp = results["throughput"]
    lines.append(
        f"3. Throughput, {args.threads} threads per process, {args.seconds:g} s per run "
        f"({os.cpu_count()} CPUs here, shared with redis-server)"
    )
    rows = []
    for name, r in tp["runs"].items():
        per = " / ".join(f"{x:,.0f}" for x in r["per_process_rps"])
        note = ", ".join(f"{k} {v}" for k, v in r["other_outcomes"].items())
        if r["degradations"]:
            note = f"{note}; DEGRADED {r['degradations']}x".lstrip("; ")
        rows.append([name, r["rps"], per, note or "-"])
    lines.append(table(["run", "req/s", "per process", "other outcomes"], rows))
    n = args.processes
    lines.append(f"  unbound: {n} processes / 1 = {tp['ratio_unbound']:.2f}x")
    lines.append(
        f"  shared rate {tp['shared_rate_limit']:g}/s (burst + rate x time: "
        f"{tp['shared_rate_expected_rps']:.0f}/s expected over the run): "
        f"{n} processes / 1 = {tp['ratio_shared_rate']:.2f}x"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=500, help="section 1: requests counted")
    parser.add_argument("--rounds", type=int, default=9, help="section 2: interleaved rounds")
    parser.add_argument("--calls", type=int, default=300, help="section 2: calls per round")
    parser.add_argument("--processes", type=int, default=4, help="section 3: processes")
    parser.add_argument("--threads", type=int, default=4, help="section 3: threads each")
    parser.add_argument("--seconds", type=float, default=4.0, help="section 3: seconds a run")
    parser.add_argument(
        "--shared-rate", type=float, default=200.0, help="section 3: the shared limit, req/s"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (~20 s)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--control", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.requests, args.rounds, args.calls, args.seconds = 100, 3, 100, 1.5
    started = time.perf_counter()
    with server() as url:
        results: dict[str, Any] = {
            "round_trips": round_trips(url, args.requests),
            "latency": latency(url, args.rounds, args.calls),
            "throughput": throughput(url, args),
        }
    results["elapsed_seconds"] = time.perf_counter() - started
    print(report(results, args))
    path = write_results("redis", args, results)
    print(f"\nwrote {path.name} ({results['elapsed_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
