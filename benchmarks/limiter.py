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

Token limits (``--section tokens``): one provider with ``tokens_per_minute`` ``--tpm``
(60,000) and ``max_concurrent`` ``--token-concurrency`` (8), each call taking 0.5-3 s, so
calls are in flight while others are admitted. Callers send prompts of 200-8,000
characters with a random ``max_tokens`` (64-2,048) for ``--token-seconds`` (60) of
*virtual* time: on a :class:`~router_middleware.testing.VirtualLoop` for asyncio, and on
:class:`ThreadedVirtualClock` for threads (real threads, real locks and slot queues; time
stands still while any of them runs and jumps to the next wake-up once all are blocked).
The provider is :class:`MeteredChatModel`: it counts tokens its own way
(``ceil(chars / 3.6) + 4`` a message, about 11% more than the router's estimate, so the
router's calibration matters), answers a uniform share of ``max_tokens`` with
``usage_metadata``, and enforces the limit as OpenAI does: prompt tokens + ``max_tokens``
charged at admission against a sliding 60 s window, corrected to the actual usage at
completion, HTTP 429 (with ``Retry-After``) for a call the window cannot take. Each mode
runs ``--token-runs`` (10) times with its own seeds. Checks, all from the provider's own
log:

* tokens admitted in the first 60 s, after reconciliation, within 2% of the limit, in
  every run;
* no 60 s interval (anchored at every call sent, a call refused with a 429 counted at
  prompt + ``max_tokens``) ever holds more than the limit;
* no provider-side 429; the concurrency cap never exceeded; every call completed.

``--provider-tpm`` gives the provider a limit of its own (a router allowed more than the
provider shows the checks failing).

Run: ``.venv/bin/python benchmarks/limiter.py`` (``--seconds 3`` for a quick run;
``--section tokens`` for the token limits alone, about a second of wall time).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import heapq
import itertools
import math
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from _common import median, table, verdict, write_results
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.messages.utils import count_tokens_approximately
from langchain_core.outputs import ChatGeneration, ChatResult

from router_middleware import (
    NoProviderAvailableError,
    ResilientRouter,
    RouterError,
    _waiting,  # its threading.Event, made virtual for threads
)
from router_middleware.testing import LoopClock, VirtualLoop, http_error


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


# -- token limits ------------------------------------------------------------------------

WINDOW = 60.0
"""Token limits are per minute, at the router and at the provider."""

_TEXT = (
    "The router weighs every request in tokens before a provider sees it, then settles "
    "the charge from the usage the provider reports. "
) * 80


def provider_tokens(messages: list[BaseMessage]) -> int:
    """The provider's own tokenizer: ``ceil(chars / 3.6) + 4`` per message (the router's
    default estimate is ``ceil((chars + len(role)) / 4) + 3``, about 11% fewer)."""
    return sum(math.ceil(len(m.text) / 3.6) + 4 for m in messages)


@dataclass
class MeteredCall:
    """One call the provider admitted: when, its prompt tokens, its ``max_tokens``, and
    (once it completed) its output tokens."""

    start: float
    prompt: int
    max_tokens: int
    answer: int
    """The output tokens it will report (uniform in ``[1, max_tokens]``)."""
    output: int | None = None
    """``answer`` once the call completed; ``None`` while in flight."""
    end: float | None = None

    @property
    def charge(self) -> int:
        """What the provider's window holds for it: ``max_tokens`` until it completes."""
        return self.prompt + (self.max_tokens if self.output is None else self.output)


class ProviderMeter:
    """The provider's side of a token limit, as OpenAI enforces it.

    Admission charges prompt tokens + ``max_tokens`` against a sliding window of
    ``window`` seconds (the calls admitted in ``(now - window, now]``); a call the window
    cannot take fails with HTTP 429 and ``Retry-After`` (the seconds until enough of the
    oldest charges have left). On completion the charge is corrected to the actual usage.
    The log (every admitted call, every 429) is what the checks read.
    """

    def __init__(
        self,
        clock: Any,
        limit: int,
        latency: tuple[float, float] = (0.5, 3.0),
        seed: int = 0,
        window: float = WINDOW,
    ) -> None:
        self.clock, self.limit, self.latency, self.window = clock, limit, latency, window
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.calls: list[MeteredCall] = []
        self.throttled: list[tuple[float, int, int]] = []  # (time, cost asked, window held)
        self._oldest = 0  # index of the oldest call that may still be in the window
        self.in_flight = 0
        self.max_in_flight = 0

    def admit(self, messages: list[BaseMessage], max_tokens: int) -> tuple[MeteredCall, float]:
        """Admit a call (or raise a 429): the call, and the seconds it will take."""
        prompt = provider_tokens(messages)
        cost = prompt + max_tokens
        with self.lock:
            now = self.clock.now()
            calls = self.calls
            while self._oldest < len(calls) and calls[self._oldest].start <= now - self.window:
                self._oldest += 1
            live = calls[self._oldest :]
            held = sum(c.charge for c in live)
            if held + cost > self.limit:
                excess, freed, retry = held + cost - self.limit, 0, self.window
                for c in live:
                    freed += c.charge
                    if freed >= excess:
                        retry = c.start + self.window - now
                        break
                self.throttled.append((now, cost, held))
                raise http_error(429, retry_after=max(retry, 0.001))
            call = MeteredCall(now, prompt, max_tokens, self.rng.randint(1, max_tokens))
            calls.append(call)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            return call, self.rng.uniform(*self.latency)

    def complete(self, call: MeteredCall) -> None:
        """The call answered: its charge becomes its actual usage."""
        with self.lock:
            call.output = call.answer
            call.end = self.clock.now()
            self.in_flight -= 1


class MeteredChatModel(BaseChatModel):
    """A chat model behind :class:`ProviderMeter`: it reports ``usage_metadata``, and it
    spends its latency on the meter's clock (``sleep`` on threads, the loop's time on
    asyncio)."""

    meter: Any

    @property
    def _llm_type(self) -> str:
        return "metered-benchmark"

    def _result(self, call: MeteredCall) -> ChatResult:
        self.meter.complete(call)
        message = AIMessage(
            "ok",
            usage_metadata={
                "input_tokens": call.prompt,
                "output_tokens": call.answer,
                "total_tokens": call.prompt + call.answer,
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, seconds = self.meter.admit(messages, kwargs["max_tokens"])
        self.meter.clock.sleep(seconds)
        return self._result(call)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, seconds = self.meter.admit(messages, kwargs["max_tokens"])
        await asyncio.sleep(seconds)
        return self._result(call)


class ThreadedVirtualClock:
    """Virtual time shared by worker threads, for the router's sync path.

    A ``FakeClock`` would not do: each thread's ``sleep`` would move the shared time by its
    own amount (32 threads sleeping 1 s each would move it 32 s), and nothing would make a
    thread wait for another's simulated second. Here, as on a virtual event loop, time
    stands still while any registered thread runs; once every one of them is blocked, time
    jumps to the earliest wake-up and wakes the threads due then. The workers are real
    threads running the router's unchanged code, with real locks; they block in two places
    only, both on this clock: ``clock.sleep`` (backoff, waits for tokens, the provider's
    latency) and the slot queue's wait for a release (:meth:`events` swaps the
    ``threading.Event`` it waits on for a :class:`VirtualEvent`, whose timeout is virtual
    and whose ``set()`` counts the waiter as running at once, before its thread runs).
    """

    def __init__(self) -> None:
        self._now = 0.0
        self._lock = threading.Lock()
        self._timers: list[tuple[float, int, VirtualEvent]] = []
        self._seq = itertools.count()
        self._threads = 0
        self._blocked = 0
        self.jumps = 0

    def now(self) -> float:
        return self._now

    def sleep(self, seconds: float) -> None:
        VirtualEvent(self).wait(max(0.0, seconds))

    async def asleep(self, seconds: float) -> None:
        raise RuntimeError("ThreadedVirtualClock is for threads")

    @contextmanager
    def running(self, threads: int) -> Iterator[None]:
        """Count ``threads`` workers in (before any starts), each to :meth:`leave` at its
        end; the router's slot waits on this clock meanwhile."""
        with self._lock:
            self._threads += threads
        saved = _waiting.threading
        _waiting.threading = SimpleNamespace(  # type: ignore[assignment]
            Event=lambda: VirtualEvent(self), TIMEOUT_MAX=threading.TIMEOUT_MAX
        )
        try:
            yield
        finally:
            _waiting.threading = saved  # type: ignore[assignment]

    def leave(self) -> None:
        """A worker thread ends."""
        with self._lock:
            self._threads -= 1
            self._advance()

    def _advance(self) -> None:
        """With ``_lock`` held: while every worker is blocked, jump to the next wake-up."""
        timers = self._timers
        while self._blocked >= self._threads and timers:
            when, _, event = heapq.heappop(timers)
            if event._thread is None:  # set, or timed out, already
                continue
            if when > self._now:
                self._now = when
                self.jumps += 1
            event._release()

    def __repr__(self) -> str:
        return (
            f"ThreadedVirtualClock(now={self._now:.3f}, threads={self._threads}, "
            f"blocked={self._blocked})"
        )


class VirtualEvent:
    """A ``threading.Event`` whose waits are on a :class:`ThreadedVirtualClock`: a thread
    waiting on it counts as blocked, its timeout is virtual, and ``set()`` counts it as
    running again at once (under the clock's lock), so time cannot jump past a wake-up
    that a running thread has just given."""

    def __init__(self, clock: ThreadedVirtualClock) -> None:
        self._clock = clock
        self._flag = False
        self._thread: threading.Event | None = None  # the waiting thread's own event

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._clock._lock:
            self._flag = True
            self._release()

    def wait(self, timeout: float | None = None) -> bool:
        clock = self._clock
        with clock._lock:
            if self._flag:
                return True
            woken = self._thread = threading.Event()
            clock._blocked += 1
            if timeout is not None:
                heapq.heappush(clock._timers, (clock._now + timeout, next(clock._seq), self))
            clock._advance()  # may release this very wait (its timeout is the next due)
        woken.wait()
        return self._flag

    def _release(self) -> None:
        """With the clock's lock held: the waiting thread (if any) runs again."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._clock._blocked -= 1
            thread.set()


def token_router(args: argparse.Namespace, meter: ProviderMeter, clock: Any) -> ResilientRouter:
    return ResilientRouter(
        {"p": MeteredChatModel(meter=meter)},
        {
            "default_model": "m",
            # The first minute's waits last until its first second leaves the window.
            "max_wait_seconds": 2 * WINDOW,
            "deadline_seconds": None,
            "providers": [
                {
                    "name": "p",
                    "models": [{"name": "m"}],
                    "rate_limit": {
                        "tokens_per_minute": args.tpm,
                        "max_concurrent": args.token_concurrency,
                    },
                }
            ],
        },
        clock=clock,
        seed=1,
    )


class Demand:
    """One caller's requests: a prompt of 200-8,000 characters and a ``max_tokens`` of
    64-2,048, drawn from the caller's own seeded generator."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def next(self) -> tuple[str, int]:
        return _TEXT[: self.rng.randint(200, 8000)], self.rng.randint(64, 2048)


@dataclass
class TokenRun:
    meter: ProviderMeter
    router: ResilientRouter
    errors: dict[str, int]
    served: int
    wall: float
    end: float
    """Virtual time when the last caller finished."""
    idle: dict[str, Any]
    """What the router and the provider held late in the first minute (:func:`snapshot`)."""


SNAPSHOT_AT = 59.5
"""Late in the first minute, before its first second leaves the router's window (at 61 s)."""


def snapshot(
    router: ResilientRouter, meter: ProviderMeter, pending: dict[int, tuple[str, int]]
) -> dict[str, Any]:
    """Room in the window, calls in flight, and how many waiting requests would fit it."""
    provider = router.providers["p"]
    room = provider.tokens.headroom() if provider.tokens is not None else math.inf
    costs = sorted(
        provider.calibration.apply(count_tokens_approximately([HumanMessage(prompt)])) + out
        for prompt, out in pending.values()
    )
    with meter.lock:
        held = sum(c.charge for c in meter.calls if c.start > meter.clock.now() - WINDOW)
        in_flight = meter.in_flight
    return {
        "at": meter.clock.now(),
        "router_room": room,
        "provider_room": meter.limit - held,
        "in_flight": in_flight,
        "waiting": len(costs),
        "would_fit": sum(1 for c in costs if c <= room),
        "smallest_waiting": costs[0] if costs else None,
    }


def tokens_threaded(args: argparse.Namespace, seed: int = 0) -> TokenRun:
    clock = ThreadedVirtualClock()
    meter = ProviderMeter(clock, provider_limit(args), seed=seed)
    router = token_router(args, meter, clock)
    errors: dict[str, int] = {}
    served = 0
    lock = threading.Lock()
    pending: dict[int, tuple[str, int]] = {}
    idle: dict[str, Any] = {}

    def worker(seed: int) -> None:
        nonlocal served
        demand = Demand(seed)
        try:
            while clock.now() < args.token_seconds:
                prompt, max_tokens = pending[seed] = demand.next()
                try:
                    router.invoke(prompt, max_tokens=max_tokens)
                    with lock:
                        served += 1
                except RouterError as exc:
                    with lock:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                finally:
                    del pending[seed]
        finally:
            clock.leave()

    def probe() -> None:
        try:
            clock.sleep(SNAPSHOT_AT)
            idle.update(snapshot(router, meter, pending))
        finally:
            clock.leave()

    callers = range(seed * 1000, seed * 1000 + args.token_callers)
    threads = [threading.Thread(target=worker, args=(i,)) for i in callers]
    threads.append(threading.Thread(target=probe))
    started = time.perf_counter()
    with clock.running(len(threads)):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - started
    return TokenRun(meter, router, errors, served, wall, clock.now(), idle)


def tokens_asynchronous(args: argparse.Namespace, seed: int = 0) -> TokenRun:
    errors: dict[str, int] = {}
    served = 0
    holder: dict[str, Any] = {}
    pending: dict[int, tuple[str, int]] = {}
    idle: dict[str, Any] = {}

    async def main() -> float:
        nonlocal served
        loop = asyncio.get_running_loop()
        clock = LoopClock(loop)
        meter = holder["meter"] = ProviderMeter(clock, provider_limit(args), seed=seed)
        router = holder["router"] = token_router(args, meter, clock)

        async def worker(seed: int) -> None:
            nonlocal served
            demand = Demand(seed)
            while loop.time() < args.token_seconds:
                prompt, max_tokens = pending[seed] = demand.next()
                try:
                    await router.ainvoke(prompt, max_tokens=max_tokens)
                    served += 1
                except RouterError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                finally:
                    del pending[seed]

        async def probe() -> None:
            await asyncio.sleep(SNAPSHOT_AT)
            idle.update(snapshot(router, meter, pending))

        # Callers still waiting at the end are admitted later and finish: the calls that
        # began in the first minute all complete, so all are reconciled.
        callers = range(seed * 1000, seed * 1000 + args.token_callers)
        await asyncio.gather(probe(), *(worker(i) for i in callers))
        return loop.time()

    loop = VirtualLoop()
    started = time.perf_counter()
    try:
        end = loop.run_until_complete(main())
    finally:
        loop.close()
    wall = time.perf_counter() - started
    return TokenRun(holder["meter"], holder["router"], errors, served, wall, end, idle)


def analyse_tokens(args: argparse.Namespace, run: TokenRun) -> dict[str, Any]:
    """One run's figures, from the provider's log alone (the router's counters are not read)."""
    limit = provider_limit(args)
    calls = sorted(run.meter.calls, key=lambda c: c.start)
    # Everything the router sent: the calls admitted, at their actual usage, and those
    # refused with a 429, at prompt + max_tokens (the provider refuses what would not fit,
    # so a router that overruns shows as 429s, and with them as a window over the limit).
    refused = [(t, cost) for t, cost, _ in run.meter.throttled]
    sent = sorted([(c.start, c.charge) for c in calls] + refused)
    starts = [t for t, _ in sent]
    prefix = [0, *itertools.accumulate(c for _, c in sent)]
    # Every 60 s interval [s, s + 60) anchored at a call: the busiest one.
    worst, worst_at = 0, 0.0
    for i, s in enumerate(starts):
        held = prefix[bisect.bisect_left(starts, s + WINDOW, lo=i)] - prefix[i]
        if held > worst:
            worst, worst_at = held, s
    first = [c for c in calls if c.start < WINDOW]
    tokens = sum(c.charge for c in first)
    # Calls then in flight still held their max_tokens, of which they use only part.
    flying = [c for c in first if c.end is None or c.end > WINDOW]
    last = max((c.start for c in first), default=0.0)
    minutes = [
        sum(c.charge for c in calls if m * WINDOW <= c.start < (m + 1) * WINDOW)
        for m in range(max(1, int(args.token_seconds // WINDOW)))
    ]
    provider = run.router.providers["p"]
    return {
        "calls_first_minute": len(first),
        "tokens_first_minute": tokens,
        "error": tokens / limit - 1,
        "last_admission_first_minute": last,
        "per_minute": minutes,
        "worst_60s_window": worst,
        "worst_window_starts_at": worst_at,
        "provider_429s": len(run.meter.throttled),
        "throttled": run.meter.throttled,
        "max_in_flight": run.meter.max_in_flight,
        "in_flight_at_60s": len(flying),
        "unused_reservation_at_60s": sum(c.max_tokens - c.answer for c in flying),
        "unfinished_calls": sum(1 for c in calls if c.output is None),
        "slots_in_use_at_end": provider.limiter.in_flight,
        "calibration": provider.calibration.ratio,
        "served": run.served,
        "router_errors": run.errors,
        "virtual_seconds": run.end,
        "wall_seconds": run.wall,
        "idle": run.idle,
    }


def provider_limit(args: argparse.Namespace) -> int:
    """The provider's own limit: the router's unless ``--provider-tpm`` says otherwise."""
    return int(args.provider_tpm or args.tpm)


def true_ratios() -> tuple[float, float]:
    """The provider's count over the router's estimate, over the prompts callers send."""
    ratios = [
        provider_tokens([AIMessage(_TEXT[:n])]) / (math.ceil((n + len("user")) / 4) + 3)
        for n in range(200, 8001)
    ]
    return min(ratios), max(ratios)


def summarise_tokens(args: argparse.Namespace, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A mode's runs (one per seed): medians, extremes and the checks over all of them."""
    errors = [r["error"] for r in runs]
    within = sum(1 for e in errors if abs(e) <= 0.02)
    worst = max(r["worst_60s_window"] for r in runs)
    throttled = sum(r["provider_429s"] for r in runs)
    in_flight = max(r["max_in_flight"] for r in runs)
    clean = all(r["unfinished_calls"] == 0 and r["slots_in_use_at_end"] == 0 for r in runs)
    return {
        "runs": len(runs),
        "median_error": median(errors),
        "min_error": min(errors),
        "max_error": max(errors),
        "median_tokens_first_minute": median(r["tokens_first_minute"] for r in runs),
        "median_calls_first_minute": median(r["calls_first_minute"] for r in runs),
        "median_last_admission_first_minute": median(
            r["last_admission_first_minute"] for r in runs
        ),
        "runs_within_2pct": within,
        "worst_60s_window": worst,
        "provider_429s": throttled,
        "max_in_flight": in_flight,
        "median_in_flight_at_60s": median(r["in_flight_at_60s"] for r in runs),
        "median_calibration": median(r["calibration"] for r in runs),
        "median_room_at_59_5s": median(r["idle"]["router_room"] for r in runs),
        "median_waiting_that_fit": median(r["idle"]["would_fit"] for r in runs),
        "median_waiting": median(r["idle"]["waiting"] for r in runs),
        "median_in_flight_at_59_5s": median(r["idle"]["in_flight"] for r in runs),
        "router_errors": {
            name: sum(r["router_errors"].get(name, 0) for r in runs)
            for name in sorted({n for r in runs for n in r["router_errors"]})
        },
        "wall_seconds": sum(r["wall_seconds"] for r in runs),
        "per_run": runs,
        "checks": {
            "first minute within 2% of the limit (every run)": within == len(runs),
            "no 60 s window over the limit": worst <= provider_limit(args),
            "no provider 429": throttled == 0,
            "concurrency cap never exceeded": in_flight <= args.token_concurrency,
            "every call completed, all slots free": clean,
        },
    }


def report_tokens(args: argparse.Namespace, modes: dict[str, Any]) -> str:
    limit = provider_limit(args)
    rows = []
    for mode, m in modes.items():
        rows.append(
            [
                mode,
                m["runs"],
                f"{m['median_tokens_first_minute']:,.0f} / {limit:,}",
                f"{m['median_error']:+.2%}",
                f"{m['min_error']:+.2%} .. {m['max_error']:+.2%}",
                f"{m['runs_within_2pct']} / {m['runs']}",
                f"{m['worst_60s_window']:,} (<= {limit:,})",
                m["provider_429s"],
                f"{m['max_in_flight']} (<= {args.token_concurrency})",
                f"{m['median_calibration']:.4f}",
                f"{m['wall_seconds']:.1f}s",
            ]
        )
    headers = [
        "callers",
        "runs",
        "tokens < 60 s (median)",
        "error",
        "range",
        "within 2%",
        "worst 60 s window (all runs)",
        "429s",
        "max in flight",
        "calibration",
        "wall",
    ]
    lo, hi = true_ratios()
    lines = [table(headers, rows), ""]
    lines.append(
        f"provider tokens / router estimate on these prompts: {lo:.4f}-{hi:.4f}; "
        "calibration: the router's learnt ratio at the end (median)"
    )
    for mode, m in modes.items():
        lines.append(
            f"{mode}: median {m['median_calls_first_minute']:g} calls in the first minute, "
            f"the last admitted at {m['median_last_admission_first_minute']:.1f} s; "
            f"router errors over all runs: {m['router_errors'] or 'none'}"
        )
        lines.append(
            f"{mode}: at {SNAPSHOT_AT:g} s (medians): {m['median_in_flight_at_59_5s']:g} calls "
            f"in flight, {m['median_room_at_59_5s']:,.0f} tokens of room in the router's "
            f"window, {m['median_waiting_that_fit']:g} of {m['median_waiting']:g} waiting "
            "requests would fit it"
        )
        if args.token_seconds >= 2 * WINDOW:
            per = "; ".join(", ".join(f"{t:,}" for t in r["per_minute"]) for r in m["per_run"][:3])
            lines.append(f"{mode}: reconciled tokens per minute (first 3 runs): {per}")
    checks = [
        [mode, check, verdict(ok)] for mode, m in modes.items() for check, ok in m["checks"].items()
    ]
    return "\n".join(lines) + "\n\n" + table(["callers", "check", ""], checks)


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
    parser.add_argument(
        "--section", choices=["requests", "tokens"], help="run one section only (default both)"
    )
    parser.add_argument("--tpm", type=int, default=60_000, help="tokens_per_minute")
    parser.add_argument(
        "--provider-tpm",
        type=int,
        help="the provider's own limit, if not --tpm (a larger --tpm shows the checks fail)",
    )
    parser.add_argument(
        "--token-seconds", type=float, default=60.0, help="virtual seconds of token demand"
    )
    parser.add_argument("--token-concurrency", type=int, default=8, help="max_concurrent")
    parser.add_argument(
        "--token-callers", type=int, default=32, help="threads, then tasks, sending token demand"
    )
    parser.add_argument(
        "--token-runs", type=int, default=10, help="token runs per mode, each with its own seed"
    )
    args = parser.parse_args()
    results: dict[str, Any] = {}
    if args.section in (None, "requests"):
        runs = {}
        if args.only in (None, "threads"):
            runs[f"{args.threads} threads"] = analyse(args, *threaded(args))
        if args.only in (None, "asyncio"):
            runs[f"{args.tasks} tasks"] = analyse(args, *asynchronous(args))
        results["runs"] = runs
        print(report(args, results))
    if args.section in (None, "tokens"):
        token_runs = {}
        callers, seeds = args.token_callers, range(1, args.token_runs + 1)
        if args.only in (None, "threads"):
            token_runs[f"{callers} threads"] = summarise_tokens(
                args, [analyse_tokens(args, tokens_threaded(args, seed)) for seed in seeds]
            )
        if args.only in (None, "asyncio"):
            token_runs[f"{callers} tasks"] = summarise_tokens(
                args, [analyse_tokens(args, tokens_asynchronous(args, seed)) for seed in seeds]
            )
        results["token_runs"] = token_runs
        if "runs" in results:
            print()
        print(
            f"token limits: tokens_per_minute {args.tpm:,} (provider {provider_limit(args):,}), "
            f"{args.token_seconds:g} s of virtual time, max_concurrent {args.token_concurrency}"
        )
        print(report_tokens(args, token_runs))
    name = "limiter" if args.section is None else f"limiter_{args.section}"
    path = write_results(name, args, results, script="limiter")
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    main()
