"""Per-call overhead of the router against what a user would write instead.

Every variant wraps zero-latency chat models (native sync and async generation), so what
is measured is the wrapper's own cost. All variants run in one process, in interleaved
rounds (the order rotates each round); each round times ``--calls`` calls of each variant
one by one and takes their p50 and p99. Ratios are taken within a round, then the median
over rounds is reported, which cancels most of the machine's drift.

Variants:

* ``direct``: the provider's ``invoke`` / ``ainvoke``.
* ``floor_inline``: a wrapper that opens its own chain run inline (callback manager,
  child config, config context) and calls the provider: no routing logic. The least any
  wrapper whose attempts nest in traces can cost.
* ``floor_call_with_config``: the same wrapper through ``Runnable._call_with_config``.
* ``lc_retry_fallback``: ``primary.with_retry(stop_after_attempt=3)
  .with_fallbacks([secondary.with_retry(stop_after_attempt=3)])``.
* ``lc_retry_fallback_rl``: the same, each model with an ``InMemoryRateLimiter``.
* ``litellm_router``: LiteLLM's ``Router``, two deployments, ``mock_response``.
* ``router``: ``ResilientRouter`` over two providers, rate limits, breakers, retries and
  metrics all enabled.
* ``router_prometheus``: the same router with a ``PrometheusExporter`` attached (its own
  registry); its ratio to ``router`` is the exporter's cost per call.
* ``router_otel``: the same router with an ``OpenTelemetryExporter`` on the SDK's
  ``TracerProvider`` and ``MeterProvider`` (every span sampled and ended; no span processor,
  no metric reader: the export is the application's cost, not the router's).
* ``floor_inline_tools`` / ``router_tools``: the same floor and router with a tool bound
  (the model's own ``bind_tools``; ``router.bind_tools``), as agents call them.
* ``lc_fail`` / ``router_fail``: the primary always fails (HTTP 503), three attempts,
  then the fallback answers; no backoff sleeps in either. ``direct_fail`` makes the same
  four provider calls by hand (three caught failures, one answer): the providers' own
  share of that path.
* ``router_4k`` / ``router_tpm_4k``: the router as above on a ~1,000-token prompt
  (4,000 characters), its providers reporting ``usage_metadata``; ``router_tpm_4k`` adds
  ``tokens_per_minute`` (too large ever to refuse), so each request is estimated, charged
  its input and output reserve at admission, and settled from the usage (calibrating the
  estimate) afterwards. Their ratio is the token limits' own cost.
* ``router_cached``: the router as ``router``, with the response cache on; every timed call
  is a hit (the warm-up made the one miss): the cost of a hit, no provider called.

Run: ``.venv/bin/python benchmarks/overhead.py`` (``--quick`` for a smoke run;
``--variants router_4k,router_tpm_4k`` to time only those, with ``direct``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from _common import (
    ConstantChatModel,
    ServiceUnavailable,
    block_network,
    median,
    p50_p99,
    router_provider,
    table,
    verdict,
    write_results,
)
from langchain_core.outputs import ChatResult
from langchain_core.rate_limiters import InMemoryRateLimiter
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
    var_child_runnable_config,
)

from router_middleware import ResilientRouter

INPUT = "hi"

# ~1,000 tokens by the router's estimate (count_tokens_approximately: 4 characters a token).
PROMPT_4K = (
    "Summarise the following support ticket in two sentences, then list the actions. "
    "The customer reports that the router skipped a provider during the peak hour. "
) * 26
PROMPT_4K = PROMPT_4K[:4000]

# Never refuses in a benchmark (MAX_COUNT), yet every request is estimated and charged.
HUGE_TOKENS_PER_MINUTE = 10**9

# (numerator, denominator, max ratio of p50): the targets, checked on the sync and
# the async path alike; None: for information.
TARGETS = [
    ("router", "lc_retry_fallback", 0.5),
    ("router", "floor_inline", 1.15),
    ("router_tools", "floor_inline_tools", 1.15),
    ("router", "litellm_router", 0.05),
    ("router_tpm_4k", "router_4k", 1.1),
    ("router_prometheus", "router", 1.1),
    ("router_otel", "router", 1.1),
    ("router_cached", "router", 0.5),
    ("router_fail", "lc_fail", 0.55),
    ("floor_inline", "litellm_router", None),
    ("router_fail", "direct_fail", None),
    ("lc_fail", "direct_fail", None),
]

# Measured on this machine before the router existed (sync p50, ratio to direct).
REFERENCE = {
    "floor_inline": 1.4,
    "floor_call_with_config": 1.95,
    "lc_retry_fallback": 3.1,
    "litellm_router": 27.0,
}


class InlineFloor(Runnable[Any, Any]):
    """Opens a chain run inline and calls the provider as its child: no routing at all."""

    def __init__(self, bound: Runnable[Any, Any]) -> None:
        self.bound = bound

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        run = get_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            child: RunnableConfig = {**config, "callbacks": run.get_child()}
            child.pop("run_name", None)
            token = var_child_runnable_config.set(child)
            try:
                output = self.bound.invoke(input, child, **kwargs)
            finally:
                var_child_runnable_config.reset(token)
        except BaseException as exc:
            run.on_chain_error(exc)
            raise
        run.on_chain_end(output)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        run = await get_async_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            child: RunnableConfig = {**config, "callbacks": run.get_child()}
            child.pop("run_name", None)
            token = var_child_runnable_config.set(child)
            try:
                output = await self.bound.ainvoke(input, child, **kwargs)
            finally:
                var_child_runnable_config.reset(token)
        except BaseException as exc:
            await run.on_chain_error(exc)
            raise
        await run.on_chain_end(output)
        return output


class CallWithConfigFloor(Runnable[Any, Any]):
    """The same wrapper, written the documented way: through ``_call_with_config``."""

    def __init__(self, bound: Runnable[Any, Any]) -> None:
        self.bound = bound

    def _call(self, input: Any, run_manager: Any, config: RunnableConfig) -> Any:
        return self.bound.invoke(input, patch_config(config, callbacks=run_manager.get_child()))

    async def _acall(self, input: Any, run_manager: Any, config: RunnableConfig) -> Any:
        child = patch_config(config, callbacks=run_manager.get_child())
        return await self.bound.ainvoke(input, child)

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._call_with_config(self._call, input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._acall_with_config(self._acall, input, config, **kwargs)


@dataclass
class Variant:
    name: str
    call: Callable[[], Any]
    acall: Callable[[], Awaitable[Any]]
    after: Callable[[], None] | None = None  # run between timed calls, untimed
    calls_share: float = 1.0  # fraction of --calls (slow variants take fewer samples)


def _rate_limiter() -> InMemoryRateLimiter:
    # Never blocks once warm: a huge rate and bucket. It starts empty, so the warm-up's
    # first call waits one check interval.
    return InMemoryRateLimiter(
        requests_per_second=1e9, check_every_n_seconds=0.001, max_bucket_size=1e9
    )


def _lc_composition(primary: Runnable[Any, Any], secondary: Runnable[Any, Any]) -> Any:
    return primary.with_retry(stop_after_attempt=3, wait_exponential_jitter=False).with_fallbacks(
        [secondary.with_retry(stop_after_attempt=3, wait_exponential_jitter=False)]
    )


class UsageChatModel(ConstantChatModel):
    """``ConstantChatModel`` whose answers report ``usage_metadata``, as real providers'
    do (which is what a router with token limits settles its charges from)."""

    input_tokens: int = 1_100
    output_tokens: int = 1

    def _result(self) -> ChatResult:
        result = super()._result()
        result.generations[0].message.usage_metadata = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        return result


def _router(
    primary: Runnable[Any, Any],
    secondary: Runnable[Any, Any],
    tokens_per_minute: int | None = None,
    cache: bool = False,
) -> ResilientRouter:
    providers = [router_provider("primary", 1), router_provider("secondary", 2)]
    if tokens_per_minute is not None:
        for provider in providers:
            provider["rate_limit"]["tokens_per_minute"] = tokens_per_minute
    return ResilientRouter(
        {"primary": primary, "secondary": secondary},
        {
            # Priorities make the primary the first choice on every request, like the
            # LangChain composition (round robin would alternate).
            "strategy": "cost_priority_round_robin",
            "default_model": "m",
            "providers": providers,
            "retry": {"attempts": 3, "initial_backoff_seconds": 0.0, "max_backoff_seconds": 0.0},
            "circuit_breaker": {"threshold": 5, "sampling_duration_seconds": 60},
            "cache": {"enabled": cache},
        },
    )


def _litellm_variant() -> tuple[Variant | None, str | None]:
    # Before the import: LiteLLM fetches its model cost map over the network otherwise.
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    os.environ.setdefault("LITELLM_LOG", "ERROR")
    os.environ.setdefault("LITELLM_TELEMETRY", "False")
    try:
        import litellm
    except ImportError:
        return None, "litellm is not installed (pip install -e '.[bench]'): variant skipped"
    litellm.suppress_debug_info = True
    litellm.telemetry = False
    deployment = {"api_key": "sk-benchmark", "mock_response": "ok"}
    router = litellm.Router(
        model_list=[
            {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o-mini", **deployment}},
            {"model_name": "m", "litellm_params": {"model": "openai/gpt-4o", **deployment}},
        ],
        num_retries=2,
    )
    messages = [{"role": "user", "content": INPUT}]
    from importlib.metadata import version as dist_version

    version = dist_version("litellm")

    def call() -> Any:
        return router.completion(model="m", messages=messages)

    def acall() -> Awaitable[Any]:
        return router.acompletion(model="m", messages=messages)

    note = f"litellm {version}"
    return Variant("litellm_router", call, acall, calls_share=0.1), note


def _add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def build_variants(with_litellm: bool) -> tuple[list[Variant], list[str]]:
    notes: list[str] = []

    def model(**kwargs: Any) -> ConstantChatModel:
        return ConstantChatModel(**kwargs)

    direct = model()
    variants = [
        Variant("direct", lambda: direct.invoke(INPUT), lambda: direct.ainvoke(INPUT)),
    ]
    floor = InlineFloor(model())
    variants.append(
        Variant("floor_inline", lambda: floor.invoke(INPUT), lambda: floor.ainvoke(INPUT))
    )
    cwc = CallWithConfigFloor(model())
    variants.append(
        Variant("floor_call_with_config", lambda: cwc.invoke(INPUT), lambda: cwc.ainvoke(INPUT))
    )
    lc = _lc_composition(model(), model())
    variants.append(
        Variant("lc_retry_fallback", lambda: lc.invoke(INPUT), lambda: lc.ainvoke(INPUT))
    )
    lc_rl = _lc_composition(
        model(rate_limiter=_rate_limiter()), model(rate_limiter=_rate_limiter())
    )
    variants.append(
        Variant("lc_retry_fallback_rl", lambda: lc_rl.invoke(INPUT), lambda: lc_rl.ainvoke(INPUT))
    )
    if with_litellm:
        litellm_variant, note = _litellm_variant()
        if litellm_variant is not None:
            variants.append(litellm_variant)
        if note:
            notes.append(note)
    else:
        notes.append("litellm variant disabled (--no-litellm)")
    router = _router(model(), model())
    variants.append(Variant("router", lambda: router.invoke(INPUT), lambda: router.ainvoke(INPUT)))
    # Imported here: prometheus_client is an extra, and only this variant needs it.
    try:
        from router_middleware.exporters import instrument

        router_prom = _router(model(), model())
        instrument(router_prom)
        variants.append(
            Variant(
                "router_prometheus",
                lambda: router_prom.invoke(INPUT),
                lambda: router_prom.ainvoke(INPUT),
            )
        )
    except ImportError:
        notes.append("prometheus-client is not installed: router_prometheus skipped")
    # Imported here: the OpenTelemetry SDK is a dev dependency, only this variant needs it.
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.trace import TracerProvider

        from router_middleware.exporters import OpenTelemetryExporter

        router_otel = _router(model(), model())
        OpenTelemetryExporter.attach(
            router_otel, tracer_provider=TracerProvider(), meter_provider=MeterProvider()
        )
        variants.append(
            Variant(
                "router_otel", lambda: router_otel.invoke(INPUT), lambda: router_otel.ainvoke(INPUT)
            )
        )
    except ImportError:
        notes.append("opentelemetry-sdk is not installed: router_otel skipped")
    cached = _router(model(), model(), cache=True)
    variants.append(
        Variant("router_cached", lambda: cached.invoke(INPUT), lambda: cached.ainvoke(INPUT))
    )
    floor_tools = InlineFloor(model().bind_tools([_add]))
    variants.append(
        Variant(
            "floor_inline_tools",
            lambda: floor_tools.invoke(INPUT),
            lambda: floor_tools.ainvoke(INPUT),
        )
    )
    router_tools = _router(model(), model()).bind_tools([_add])
    variants.append(
        Variant(
            "router_tools", lambda: router_tools.invoke(INPUT), lambda: router_tools.ainvoke(INPUT)
        )
    )
    # The same prompt of ~1,000 tokens, without and with token limits.
    router_4k = _router(UsageChatModel(), UsageChatModel())
    variants.append(
        Variant(
            "router_4k", lambda: router_4k.invoke(PROMPT_4K), lambda: router_4k.ainvoke(PROMPT_4K)
        )
    )
    router_tpm = _router(UsageChatModel(), UsageChatModel(), HUGE_TOKENS_PER_MINUTE)
    variants.append(
        Variant(
            "router_tpm_4k",
            lambda: router_tpm.invoke(PROMPT_4K),
            lambda: router_tpm.ainvoke(PROMPT_4K),
        )
    )

    failing, answering = model(fail=True), model()

    def direct_fail() -> Any:
        for _ in range(3):
            with contextlib.suppress(ServiceUnavailable):
                failing.invoke(INPUT)
        return answering.invoke(INPUT)

    async def adirect_fail() -> Any:
        for _ in range(3):
            with contextlib.suppress(ServiceUnavailable):
                await failing.ainvoke(INPUT)
        return await answering.ainvoke(INPUT)

    variants.append(Variant("direct_fail", direct_fail, adirect_fail, calls_share=0.5))
    lc_fail = _lc_composition(model(fail=True), model())
    variants.append(
        Variant(
            "lc_fail",
            lambda: lc_fail.invoke(INPUT),
            lambda: lc_fail.ainvoke(INPUT),
            calls_share=0.5,
        )
    )
    router_fail = _router(model(fail=True), model())

    def close_breaker() -> None:
        # Three counted failures per request would open the breaker (threshold 5) on the
        # second request, and the path measured would become "skip the primary". Reset it
        # between calls, outside the timed region.
        router_fail.reset_breaker("primary")

    variants.append(
        Variant(
            "router_fail",
            lambda: router_fail.invoke(INPUT),
            lambda: router_fail.ainvoke(INPUT),
            after=close_breaker,
            calls_share=0.5,
        )
    )
    return variants, notes


def _check(output: Any) -> None:
    text = getattr(output, "content", None)
    if text is None:  # LiteLLM's ModelResponse
        text = output.choices[0].message.content
    if text != "ok":
        raise AssertionError(f"unexpected answer {text!r}")


def time_sync(variant: Variant, n: int) -> list[float]:
    clock = time.perf_counter_ns
    call, after = variant.call, variant.after
    samples = []
    for _ in range(n):
        start = clock()
        call()
        samples.append(clock() - start)
        if after is not None:
            after()
    return samples


async def time_async(variant: Variant, n: int) -> list[float]:
    clock = time.perf_counter_ns
    acall, after = variant.acall, variant.after
    samples = []
    for _ in range(n):
        start = clock()
        await acall()
        samples.append(clock() - start)
        if after is not None:
            after()
    return samples


def run(args: argparse.Namespace) -> dict[str, Any]:
    block_network()
    variants, notes = build_variants(not args.no_litellm and _wanted(args, "litellm_router"))
    if not _wanted(args, "litellm_router"):
        notes = [n for n in notes if "--no-litellm" not in n]
    if args.variants:
        wanted = {"direct", *args.variants.split(",")}
        unknown = wanted - {v.name for v in variants} - {"litellm_router"}
        if unknown:
            raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
        variants = [v for v in variants if v.name in wanted]
    names = [v.name for v in variants]
    loop = asyncio.new_event_loop()
    # Warm-up, and a check that every variant really answers "ok" on both paths.
    for v in variants:
        _check(v.call())
        _check(loop.run_until_complete(v.acall()))
        if v.after:
            v.after()
        time_sync(v, max(1, int(args.warmup * v.calls_share)))
        loop.run_until_complete(time_async(v, max(1, int(args.warmup * v.calls_share))))
    # What is alive now lives as long as a server would: keep it out of the collections
    # (the per-block collections stay cheap, and timings see only the calls' own garbage).
    gc.collect()
    gc.freeze()

    # per mode -> variant -> list of per-round (p50, p99) in microseconds
    per_round: dict[str, dict[str, list[tuple[float, float]]]] = {
        "sync": {n: [] for n in names},
        "async": {n: [] for n in names},
    }
    started = time.perf_counter()
    for r in range(args.rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for mode in ("sync", "async"):
            for v in order:
                n = max(5, int(args.calls * v.calls_share))
                gc.collect()
                if mode == "sync":
                    samples = time_sync(v, n)
                else:
                    samples = loop.run_until_complete(time_async(v, n))
                p50, p99 = p50_p99(samples)
                per_round[mode][v.name].append((p50 / 1000, p99 / 1000))
        if args.verbose:
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    elapsed = time.perf_counter() - started
    loop.close()

    results: dict[str, Any] = {"variants": {}, "targets": [], "notes": notes}
    for mode in ("sync", "async"):
        rounds = per_round[mode]
        base = rounds["direct"]
        mode_out = {}
        for name in names:
            vals = rounds[name]
            mode_out[name] = {
                "p50_us": median(p for p, _ in vals),
                "p99_us": median(q for _, q in vals),
                "p50_ratio_vs_direct": median(
                    p / b[0] for (p, _), b in zip(vals, base, strict=True)
                ),
                "p99_ratio_vs_direct": median(
                    q / b[1] for (_, q), b in zip(vals, base, strict=True)
                ),
            }
        results["variants"][mode] = mode_out
        for num, den, limit in TARGETS:
            if num not in rounds or den not in rounds:
                if args.variants:
                    continue  # not asked for
                results["targets"].append(
                    {"mode": mode, "ratio": f"{num} / {den}", "target": limit, "skipped": True}
                )
                continue
            pairs = list(zip(rounds[num], rounds[den], strict=True))
            p50_ratio = median(a[0] / b[0] for a, b in pairs)
            p99_ratio = median(a[1] / b[1] for a, b in pairs)
            results["targets"].append(
                {
                    "mode": mode,
                    "ratio": f"{num} / {den}",
                    "p50_ratio": p50_ratio,
                    "p99_ratio": p99_ratio,
                    "target": limit,
                    "pass": None if limit is None else p50_ratio <= limit,
                }
            )
    results["elapsed_seconds"] = elapsed
    return results


def report(results: dict[str, Any]) -> str:
    lines = []
    for mode, variants in results["variants"].items():
        rows = []
        for name, fig in variants.items():
            ref = REFERENCE.get(name)
            rows.append(
                [
                    name,
                    fig["p50_us"],
                    fig["p99_us"],
                    fig["p50_ratio_vs_direct"],
                    fig["p99_ratio_vs_direct"],
                    f"{ref:g}x" if ref and mode == "sync" else "",
                ]
            )
        headers = [f"{mode} variant", "p50 us", "p99 us", "p50/direct", "p99/direct", "before"]
        lines += [table(headers, rows), ""]
    rows = []
    for t in results["targets"]:
        target = "(info)" if t["target"] is None else f"<= {t['target']}"
        if t.get("skipped"):
            rows.append([t["mode"], t["ratio"], "-", "-", target, "SKIPPED"])
            continue
        mark = "" if t["pass"] is None else verdict(t["pass"])
        rows.append([t["mode"], t["ratio"], t["p50_ratio"], t["p99_ratio"], target, mark])
    lines.append(table(["mode", "ratio (median of per-round)", "p50", "p99", "target", ""], rows))
    lines += [f"note: {n}" for n in results["notes"]]
    return "\n".join(lines)


def _wanted(args: argparse.Namespace, name: str) -> bool:
    return not args.variants or name in args.variants.split(",")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per variant per round")
    parser.add_argument("--warmup", type=int, default=100, help="untimed calls per variant")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM variant")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 60 calls")
    parser.add_argument("--verbose", action="store_true", help="report progress on stderr")
    parser.add_argument(
        "--variants",
        help="comma-separated variants to time (with direct); writes overhead_partial.json",
    )
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.calls, args.warmup = 3, 60, 20
    results = run(args)
    print(report(results))
    name = "overhead_partial" if args.variants else "overhead"
    path = write_results(name, args, results, script="overhead")
    print(f"\nwrote {path.name} ({results['elapsed_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
