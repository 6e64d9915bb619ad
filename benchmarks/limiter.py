"""Rate-limit precision under saturating demand, from threads and from asyncio.

One provider limited to ``--rate`` requests/s with ``--burst`` and ``--max-concurrent``
calls in flight, each call taking ``--latency`` seconds (so the concurrency cap binds now
and then: at 200 ms, 12 slots carry 60 calls/s against a rate of 50). Far more callers
than that (``--threads`` threads, or ``--tasks`` tasks) loop on the router for
``--seconds``; the provider stamps each call's start on the monotonic clock and tracks
the calls in flight. Checks, with ``t`` seconds since demand started:

* admitted in ``[0, T]`` within 2% of ``burst + rate x T``;
* no 1 s window (sliding, anchored at every admission) holds more than ``burst + rate``;
* the burst: admitted by any time ``t`` never exceeds ``burst + rate x t``, and so never
  more than ``burst`` before the first refill;
* the provider never has more than ``max_concurrent`` calls in flight, and none is held
  once the run is over.

Run: ``.venv/bin/python benchmarks/limiter.py`` (``--seconds 3`` for a quick run).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import threading
import time
from typing import Any

from _common import table, verdict, write_results
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from router_middleware import NoProviderAvailableError, ResilientRouter


class Recorder:
    """Call start times and the most calls ever in flight at the provider."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.starts: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def enter(self) -> None:
        with self.lock:
            self.starts.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1


class RecordingChatModel(BaseChatModel):
    latency: float
    recorder: Any

    @property
    def _llm_type(self) -> str:
        return "recording-benchmark"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.recorder.enter()
        try:
            time.sleep(self.latency)
        finally:
            self.recorder.leave()
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.recorder.enter()
        try:
            await asyncio.sleep(self.latency)
        finally:
            self.recorder.leave()
        return ChatResult(generations=[ChatGeneration(message=AIMessage("ok"))])


def make_router(args: argparse.Namespace, recorder: Recorder) -> ResilientRouter:
    return ResilientRouter(
        {"p": RecordingChatModel(latency=args.latency, recorder=recorder)},
        {
            "default_model": "m",
            "max_wait_seconds": 60,
            "deadline_seconds": None,
            "providers": [
                {
                    "name": "p",
                    "models": [{"name": "m"}],
                    "rate_limit": {
                        "requests_per_second": args.rate,
                        "burst": args.burst,
                        "max_concurrent": args.max_concurrent,
                    },
                }
            ],
        },
    )


def threaded(args: argparse.Namespace) -> tuple[Recorder, float, ResilientRouter, int]:
    recorder = Recorder()
    router = make_router(args, recorder)
    refused = 0
    lock = threading.Lock()
    start = time.monotonic()
    end = start + args.seconds

    def worker() -> None:
        nonlocal refused
        while time.monotonic() < end:
            try:
                router.invoke("hi")
            except NoProviderAvailableError:
                with lock:
                    refused += 1

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    start = time.monotonic()
    end = start + args.seconds
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return recorder, start, router, refused


def asynchronous(args: argparse.Namespace) -> tuple[Recorder, float, ResilientRouter, int]:
    recorder = Recorder()
    router = make_router(args, recorder)
    refused = 0

    async def main() -> float:
        nonlocal refused
        start = time.monotonic()
        end = start + args.seconds

        async def worker() -> None:
            nonlocal refused
            while time.monotonic() < end:
                try:
                    await router.ainvoke("hi")
                except NoProviderAvailableError:
                    refused += 1

        tasks = [asyncio.create_task(worker()) for _ in range(args.tasks)]
        await asyncio.sleep(args.seconds)
        # Callers still waiting for a token are past the measured interval: cancel them,
        # which also checks that cancellation hands every slot back.
        await asyncio.sleep(args.latency * 2)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return start

    start = asyncio.run(main())
    return recorder, start, router, refused


def analyse(
    args: argparse.Namespace,
    recorder: Recorder,
    start: float,
    router: ResilientRouter,
    refused: int,
) -> dict[str, Any]:
    times = sorted(t - start for t in recorder.starts)
    horizon = args.seconds
    admitted = bisect.bisect_right(times, horizon)
    expected = args.burst + args.rate * horizon
    within = [t for t in times if t <= horizon]
    worst_window = 0
    worst_at = 0.0
    for i, t in enumerate(within):
        n = bisect.bisect_left(within, t + 1.0, lo=i) - i
        if n > worst_window:
            worst_window, worst_at = n, t
    # Peak of "admitted so far - rate x elapsed": the bucket's burst in use.
    peak_burst = max((k + 1 - args.rate * t for k, t in enumerate(within)), default=0.0)
    first_refill = bisect.bisect_left(within, 1.0 / args.rate)
    first_second = bisect.bisect_left(within, 1.0)
    provider = router.providers["p"]
    error = (admitted - expected) / expected
    return {
        "admitted": admitted,
        "expected": expected,
        "error": error,
        "achieved_rate": (admitted - args.burst) / horizon,
        "worst_1s_window": worst_window,
        "worst_window_starts_at": worst_at,
        "window_limit": args.burst + args.rate,
        "admitted_before_first_refill": first_refill,
        "admitted_first_second": first_second,
        "peak_burst": peak_burst,
        "max_in_flight": recorder.max_in_flight,
        "in_flight_at_end": provider.limiter.in_flight,
        "refused_requests": refused,
        "checks": {
            "admitted within 2%": abs(error) <= 0.02,
            "1 s windows <= burst + rate": worst_window <= args.burst + args.rate,
            "burst never exceeded": peak_burst <= args.burst + 1e-6,
            "<= burst admitted before the first refill": first_refill <= args.burst,
            "concurrency cap never exceeded": recorder.max_in_flight <= args.max_concurrent,
            "all slots free at the end": provider.limiter.in_flight == 0,
        },
    }


def report(args: argparse.Namespace, results: dict[str, Any]) -> str:
    rows = []
    for mode, r in results["runs"].items():
        rows.append(
            [
                mode,
                f"{r['admitted']} / {r['expected']:g}",
                f"{r['error']:+.2%}",
                f"{r['achieved_rate']:.2f}/s",
                f"{r['worst_1s_window']} (<= {r['window_limit']})",
                f"{r['peak_burst']:.2f} (<= {args.burst})",
                r["admitted_before_first_refill"],
                f"{r['max_in_flight']} (<= {args.max_concurrent})",
                r["in_flight_at_end"],
            ]
        )
    headers = [
        "callers",
        "admitted / expected",
        "error",
        "steady rate",
        "worst 1 s window",
        "peak burst",
        "in first 1/rate s",
        "max in flight",
        "held at end",
    ]
    checks = []
    for mode, r in results["runs"].items():
        for check, ok in r["checks"].items():
            checks.append([mode, check, verdict(ok)])
    return table(headers, rows) + "\n\n" + table(["callers", "check", ""], checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="demand per run")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--max-concurrent", type=int, default=12)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per provider call")
    parser.add_argument("--threads", type=int, default=32)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--only", choices=["threads", "asyncio"], help="run one mode only")
    args = parser.parse_args()
    runs = {}
    if args.only in (None, "threads"):
        runs[f"{args.threads} threads"] = analyse(args, *threaded(args))
    if args.only in (None, "asyncio"):
        runs[f"{args.tasks} tasks"] = analyse(args, *asynchronous(args))
    results = {"runs": runs}
    print(report(args, results))
    path = write_results("limiter", args, results)
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    main()
