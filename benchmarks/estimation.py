"""Event-loop lag while the router estimates a very large input's tokens.

A router with token limits must count a request's input tokens before admitting it. On the
async path, inputs over ``LARGE_INPUT`` (100,000) characters are counted off the event loop
(the pipeline's ``Estimate`` step, ``asyncio.to_thread``), so other tasks on the loop do not
wait for the count. This measures what that leaves on the loop: a ticker task resumes
itself (``await asyncio.sleep(0)``) as fast as it can while one request of 400,000
characters is routed, and every gap between two of its steps is a time the loop was busy
elsewhere or could not run (its thread waiting for the GIL). The router's counter is
wrapped to note when the count ran, so the lag attributable to estimation is the longest
part of a gap that falls inside the count (target <= 1 ms). Scenarios, in interleaved
rounds, medians:

* ``no limits``: the router without token limits, the same input: no estimate at all.
  Its worst gap is what routing this input costs the loop anyway.
* ``limits``: ``tokens_per_minute`` set (never refusing): the estimate runs off the loop.
* ``limits, on loop``: the same with the offload disabled (``_pipeline.LARGE_INPUT``
  raised for the run), so the count runs inside admission, on the loop: the control, to
  show that the measurement catches blocking when there is some.
* ``count called on the loop``: the counter called synchronously in a task while the
  ticker runs: the second control (and the count's cost, seen from the loop).

Counters: the default (LangChain's ``count_tokens_approximately``) and ``TiktokenCounter``
over a local byte-level encoding (built here: no download; tiktoken encodes in Rust and
releases the GIL, as an exact counter would). Inputs: one message of 400,000 characters
(``message``), and the same characters as a conversation of 2,000 messages of 200
(``conversation``). Each counter is also timed on its own on each input.

Run: ``.venv/bin/python benchmarks/estimation.py`` (``--rounds 5`` for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from _common import ConstantChatModel, block_network, median, table, verdict, write_results
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from router_middleware import (
    ResilientRouter,
    TiktokenCounter,
    _pipeline,  # the offload threshold, raised for the controls
    approximate_tokens,
)

CHARACTERS = 400_000
TARGET_MS = 1.0
# Never refuses, yet every request is estimated and charged (MAX_COUNT).
HUGE_TOKENS_PER_MINUTE = 10**9

_SENTENCE = "The router weighs every request in tokens before a provider sees it. "


def message_input() -> str:
    """One message of 400,000 characters."""
    return (_SENTENCE * (CHARACTERS // len(_SENTENCE) + 1))[:CHARACTERS]


def conversation_input() -> list[BaseMessage]:
    """400,000 characters as 2,000 messages of 200, alternating user and assistant."""
    text = (_SENTENCE * 3)[:200]
    return [HumanMessage(text) if i % 2 == 0 else AIMessage(text) for i in range(2_000)]


def local_tiktoken() -> Any:
    """A byte-level tiktoken encoding built here (no merges, GPT-2's split pattern): the
    cost of an exact count, O(characters) in Rust, without downloading a vocabulary."""
    import tiktoken

    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return tiktoken.Encoding(
        name="benchmark-bytes",
        pat_str=pattern,
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={},
    )


class TimedCounter:
    """A token counter that notes when each count ran (``perf_counter`` start and end)."""

    def __init__(self, count: Callable[..., int]) -> None:
        self.count = count
        self.spans: list[tuple[float, float]] = []

    def __call__(self, messages: Sequence[BaseMessage], tools: Any = None) -> int:
        start = time.perf_counter()
        try:
            return self.count(messages, tools)
        finally:
            self.spans.append((start, time.perf_counter()))


def make_router(limits: bool, counter: Any = None) -> ResilientRouter:
    rate_limit = {"tokens_per_minute": HUGE_TOKENS_PER_MINUTE} if limits else {}
    return ResilientRouter(
        # The provider suspends once, as a call over a network does.
        {"p": ConstantChatModel(yield_to_loop=True)},
        {
            "default_model": "m",
            "providers": [{"name": "p", "models": [{"name": "m"}], "rate_limit": rate_limit}],
        },
        token_counter=counter,
    )


@contextmanager
def offload_disabled() -> Iterator[None]:
    """Count every input on the loop, as the router would without its ``Estimate`` step."""
    saved = _pipeline.LARGE_INPUT
    _pipeline.LARGE_INPUT = 10**18
    try:
        yield
    finally:
        _pipeline.LARGE_INPUT = saved


async def ticker_gaps(work: Callable[[], Any]) -> list[tuple[float, float]]:
    """Every gap ``(start, end)`` between two steps of a ticker task that resumes itself
    as fast as it can while ``work()`` (a coroutine function, or a plain function called
    in a task) runs."""
    done = False

    async def ticker() -> list[tuple[float, float]]:
        gaps, last = [], time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append((last, now))
            last = now
        return gaps

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)  # the ticker is running
    await asyncio.sleep(0)
    try:
        result = work()
        if asyncio.iscoroutine(result):
            await result
    finally:
        done = True
    return await task


def during(gaps: list[tuple[float, float]], spans: list[tuple[float, float]]) -> float:
    """Seconds of the longest stretch *of a count* in which the loop made no step: the
    part of each gap inside a count's span (the rest of a gap is the router's own work
    around the count, which the ``no limits`` baseline shows)."""
    return max(
        (min(e, b) - max(s, a) for s, e in gaps for a, b in spans if s < b and e > a),
        default=0.0,
    )


@dataclass
class Scenario:
    name: str
    input: str  # "message" or "conversation"
    counter: str  # "approximate", "tiktoken", or "-" for the baseline
    kind: str  # "baseline", "offloaded", "on loop", "direct"
    run: Callable[[], Any]
    timed: TimedCounter | None = None
    """The counter whose spans mark the estimate (none for the baseline)."""
    on_loop: bool = False
    """Run with the offload disabled."""


def build(inputs: dict[str, Any], counters: dict[str, Any]) -> list[Scenario]:
    scenarios = []
    for input_name, value in inputs.items():
        plain = make_router(limits=False)
        scenarios.append(
            Scenario(
                "no limits", input_name, "-", "baseline", lambda r=plain, v=value: r.ainvoke(v)
            )
        )
        messages = [HumanMessage(value)] if isinstance(value, str) else value
        for counter_name, counter in counters.items():
            timed = TimedCounter(counter)
            router = make_router(limits=True, counter=timed)
            call = (lambda r, v: lambda: r.ainvoke(v))(router, value)
            scenarios += [
                Scenario("limits", input_name, counter_name, "offloaded", call, timed),
                Scenario("limits, on loop", input_name, counter_name, "on loop", call, timed, True),
            ]
            direct = TimedCounter(counter)
            scenarios.append(
                Scenario(
                    "count called on the loop",
                    input_name,
                    counter_name,
                    "direct",
                    (lambda c, m: lambda: c(m))(direct, messages),
                    direct,
                )
            )
    return scenarios


def direct_times(inputs: dict[str, Any], counters: dict[str, Any], repeat: int) -> dict[str, Any]:
    """Each counter on each input, timed on its own (median of ``repeat``), in ms."""
    out: dict[str, Any] = {}
    for input_name, value in inputs.items():
        messages = [HumanMessage(value)] if isinstance(value, str) else value
        for counter_name, count in counters.items():
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                tokens = count(messages)
                samples.append((time.perf_counter() - start) * 1e3)
            out[f"{counter_name} / {input_name}"] = {
                "ms": statistics.median(samples),
                "tokens": tokens,
            }
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    block_network()
    inputs: dict[str, Any] = {"message": message_input()}
    if not args.message_only:
        inputs["conversation"] = conversation_input()
    notes = []
    counters: dict[str, Any] = {"approximate": approximate_tokens}
    try:
        counters["tiktoken"] = TiktokenCounter(local_tiktoken())
    except ImportError:
        notes.append("tiktoken is not installed: its scenarios are skipped")
    scenarios = build(inputs, counters)
    loop = asyncio.new_event_loop()
    load_before = os.getloadavg()[0]

    def measure(s: Scenario) -> tuple[float, float]:
        """The worst gap of the whole run, and the worst gap during the count (ms)."""
        gc.collect()
        if s.timed is not None:
            s.timed.spans.clear()
        if s.on_loop:
            with offload_disabled():
                gaps = loop.run_until_complete(ticker_gaps(s.run))
        else:
            gaps = loop.run_until_complete(ticker_gaps(s.run))
        worst = max(end - start for start, end in gaps)
        if s.timed is None:
            return worst * 1e3, float("nan")
        if len(s.timed.spans) != 1:
            raise AssertionError(f"{s.name}: {len(s.timed.spans)} counts, expected one")
        return worst * 1e3, during(gaps, s.timed.spans) * 1e3

    for s in scenarios:  # warm-up: the executor's threads, imports, caches
        for _ in range(3):
            measure(s)
    worst: dict[int, list[float]] = {i: [] for i in range(len(scenarios))}
    counting: dict[int, list[float]] = {i: [] for i in range(len(scenarios))}
    started = time.perf_counter()
    for r in range(args.rounds):
        order = list(range(len(scenarios)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            gap, in_count = measure(scenarios[i])
            worst[i].append(gap)
            counting[i].append(in_count)
    elapsed = time.perf_counter() - started
    loop.close()

    baseline = {s.input: median(worst[i]) for i, s in enumerate(scenarios) if s.kind == "baseline"}
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(scenarios):
        row: dict[str, Any] = {
            "scenario": s.name,
            "input": s.input,
            "counter": s.counter,
            "kind": s.kind,
            "median_worst_gap_ms": median(worst[i]),
            "max_worst_gap_ms": max(worst[i]),
        }
        if s.kind != "baseline":
            row["over_no_limits_ms"] = median(worst[i]) - baseline[s.input]
            row["median_during_count_ms"] = median(counting[i])
            row["max_during_count_ms"] = max(counting[i])
        rows.append(row)
    # The ticker keeps one core busy by design: with the other core taken (a shared
    # machine), the counting thread and the loop's also share a core in time slices.
    notes.append(
        f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
        f"({os.cpu_count()} CPUs; the ticker keeps one busy)"
    )
    return {
        "scenarios": rows,
        "direct": direct_times(inputs, counters, max(5, args.rounds)),
        "baseline_ms": baseline,
        "notes": notes,
        "elapsed_seconds": elapsed,
    }


def report(results: dict[str, Any]) -> str:
    direct_rows = [
        [name, f"{d['ms']:.3f}", f"{d['tokens']:,}"] for name, d in results["direct"].items()
    ]
    lines = [
        table(["count on its own (counter / input)", "ms (median)", "tokens"], direct_rows),
        "",
    ]
    rows, checks = [], []
    for r in results["scenarios"]:
        in_count = r.get("median_during_count_ms")
        mark = ""
        if r["kind"] == "offloaded":
            mark = verdict(in_count <= TARGET_MS)
            checks.append(
                [
                    f"{r['counter']} / {r['input']}",
                    f"estimate off the loop blocks it <= {TARGET_MS:g} ms",
                    f"{in_count:.3f} ms (max {r['max_during_count_ms']:.3f})",
                    mark,
                ]
            )
        elif r["kind"] in ("on loop", "direct"):
            mark = verdict(in_count <= TARGET_MS) + " (control)"
        over = r.get("over_no_limits_ms")
        rows.append(
            [
                r["scenario"],
                r["input"],
                r["counter"],
                r["median_worst_gap_ms"],
                "" if over is None or r["kind"] == "direct" else f"{over:+.3f}",
                "" if in_count is None else f"{in_count:.3f}",
                mark,
            ]
        )
    headers = [
        "scenario",
        "input",
        "counter",
        "worst lag",
        "over no limits",
        "loop blocked during the count",
        f"<= {TARGET_MS:g} ms",
    ]
    lines += [table(headers, rows), "(ms, medians over rounds)", ""]
    # A control whose count is long must fail: else the ticker could not see blocking.
    for r in results["scenarios"]:
        if r["kind"] != "on loop":
            continue
        long = results["direct"][f"{r['counter']} / {r['input']}"]["ms"]
        if long > 2 * TARGET_MS:
            checks.append(
                [
                    f"{r['counter']} / {r['input']}",
                    f"control: the count ({long:.1f} ms) run on the loop is caught",
                    f"{r['median_during_count_ms']:.3f} ms",
                    verdict(r["median_during_count_ms"] > TARGET_MS),
                ]
            )
    lines.append(table(["counter / input", "check", "measured (median)", ""], checks))
    lines += [f"note: {n}" for n in results["notes"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds")
    parser.add_argument(
        "--message-only", action="store_true", help="skip the 2,000-message conversation"
    )
    args = parser.parse_args()
    results = run(args)
    print(report(results))
    path = write_results("estimation", args, results)
    print(f"\nwrote {path.name} ({results['elapsed_seconds']:.0f}s)")


if __name__ == "__main__":
    main()
