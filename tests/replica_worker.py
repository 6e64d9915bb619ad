"""One replica of a deployment, as its own OS process, for the shared-state tests.

Run as ``python -m tests.replica_worker SECONDS THREADS``: it builds a router from the
environment (``LLM_ROUTER_STATE__URL`` and the provider's ``LLM_ROUTER_PROVIDERS__P__*``),
sends requests from ``THREADS`` threads for ``SECONDS`` seconds, and prints a JSON summary.
The provider is a handler that measures what the provider side sees, in Redis keys outside
the router's prefix (``probe:*``): each call's start time, the calls in flight at its
start. ``PROBE_FAIL=1`` makes every call fail; ``PROBE_CALL_SECONDS`` is a call's length;
``PROBE_OFF=1`` measures nothing; ``CLOCK_SKEW`` shifts this replica's clock (seconds);
``PROBE_HOLD`` makes the first call sleep that long (a replica killed mid-call).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import Any

import redis
from redis.cluster import RedisCluster

from router_middleware import LLMRequest, LLMResponse, Observer, ResilientRouter, SystemClock

PROBE: redis.Redis = None  # type: ignore[assignment]  # connected by main()
CALL_SECONDS = float(os.environ.get("PROBE_CALL_SECONDS", "0"))
FAIL = os.environ.get("PROBE_FAIL") == "1"
HOLD = float(os.environ.get("PROBE_HOLD", "0"))
OFF = os.environ.get("PROBE_OFF") == "1"  # measure nothing (Redis is frozen on purpose)


class SkewedClock(SystemClock):
    """This replica's clock, ``skew`` seconds off every other's."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def now(self) -> float:  # type: ignore[override]
        return time.monotonic() + self.skew


def handler(request: LLMRequest) -> LLMResponse:
    if OFF:
        return LLMResponse(text="ok")
    in_flight = PROBE.incr("probe:inflight")
    try:
        PROBE.rpush("probe:calls", repr(time.time()))
        PROBE.rpush("probe:concurrency", in_flight)
        if HOLD:
            PROBE.set("probe:holding", "1")
            time.sleep(HOLD)
        if CALL_SECONDS:
            time.sleep(CALL_SECONDS)
        if FAIL:
            raise ConnectionError("the provider is down")
        return LLMResponse(text="ok")
    finally:
        PROBE.decr("probe:inflight")


class Events(Observer):
    def __init__(self) -> None:
        self.state: list[tuple[float, bool, str]] = []

    def state_changed(self, degraded: bool, reason: str) -> None:
        self.state.append((time.time(), degraded, reason))


def main() -> None:
    global PROBE
    # On a cluster (``LLM_ROUTER_STATE__CLUSTER=true``) the probe's keys are spread over its
    # nodes too: each is one key, so each command goes to the node of its slot.
    url = os.environ["LLM_ROUTER_STATE__URL"]
    cluster = os.environ.get("LLM_ROUTER_STATE__CLUSTER") == "true"
    PROBE = RedisCluster.from_url(url) if cluster else redis.Redis.from_url(url)
    seconds, threads = float(sys.argv[1]), int(sys.argv[2])
    events = Events()
    clock = SkewedClock(float(os.environ.get("CLOCK_SKEW", "0")))
    router = ResilientRouter.from_settings({"p": handler}, clock=clock, observers=[events])
    outcomes: dict[str, int] = {}
    slowest = [0.0]
    lock = threading.Lock()
    PROBE.rpush("probe:ready", os.getpid())
    start = float(PROBE.blpop(["probe:go"], timeout=30)[1])  # every replica starts at once
    PROBE.rpush("probe:go", repr(start))  # hand the start on to the next replica
    time.sleep(max(0.0, start - time.time()))
    end = start + seconds

    def work() -> None:
        while time.time() < end:
            t0 = time.monotonic()
            try:
                router.invoke("hi", model="m")
                what = "ok"
            except Exception as exc:
                what = type(exc).__name__
            took = time.monotonic() - t0
            with lock:
                outcomes[what] = outcomes.get(what, 0) + 1
                slowest[0] = max(slowest[0], took)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    summary: dict[str, Any] = {
        "outcomes": outcomes,
        "slowest": slowest[0],
        "state": events.state,
        "metrics": router.metrics()["totals"],
    }
    router.store.close()  # type: ignore[attr-defined]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
