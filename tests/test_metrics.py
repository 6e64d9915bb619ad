from __future__ import annotations

import json
import random
import sys
import threading
import tracemalloc
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage

from router_middleware._metrics import (
    LatencyWindow,
    ProviderMetrics,
    usage_from_message,
)

OUTCOMES = ("successful_requests", "failed_requests", "rate_limited_requests", "cancelled")


class Wall:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def identity_holds(snap: dict[str, object]) -> bool:
    return sum(snap[k] for k in OUTCOMES) == snap["total_requests"]  # type: ignore[misc]


# -- LatencyWindow -----------------------------------------------------------------------


def test_window_percentiles_on_known_data() -> None:
    w = LatencyWindow(size=200)
    data = [float(x) for x in range(1, 101)]
    random.Random(3).shuffle(data)
    for x in data:
        w.record(x)
    assert w.count == 100
    assert w.percentile(0) == 1.0
    assert w.percentile(100) == 100.0
    assert w.percentile(50) == pytest.approx(50.5)
    assert w.percentiles() == pytest.approx({50: 50.5, 95: 95.05, 99: 99.01})
    assert w.percentiles((25, 75)) == pytest.approx({25: 25.75, 75: 75.25})


def test_window_single_sample_and_empty() -> None:
    w = LatencyWindow(size=8)
    assert w.percentile(50) is None
    assert w.percentiles() == {50: None, 95: None, 99: None}
    w.record(0.3)
    assert w.percentiles() == {50: 0.3, 95: 0.3, 99: 0.3}


def test_window_keeps_only_the_last_size_samples() -> None:
    w = LatencyWindow(size=10)
    for x in range(1, 26):
        w.record(float(x))
    assert (w.size, w.count) == (10, 10)
    assert w.percentile(0) == 16.0
    assert w.percentile(100) == 25.0
    assert w.percentile(50) == pytest.approx(20.5)


def test_window_clear_and_copy_are_independent() -> None:
    w = LatencyWindow(size=4)
    for x in (1.0, 2.0, 3.0):
        w.record(x)
    c = w.copy()
    w.clear()
    assert w.count == 0
    assert w.percentile(50) is None
    assert c.count == 3
    assert c.percentile(50) == 2.0
    c.record(10.0)
    c.record(20.0)  # wraps the copy's ring, overwriting 1.0
    assert (c.count, c.percentile(0), c.percentile(100)) == (4, 2.0, 20.0)


def test_window_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="size"):
        LatencyWindow(size=0)
    w = LatencyWindow()
    w.record(1.0)
    for p in (-1, 100.5):
        with pytest.raises(ValueError, match="percentile"):
            w.percentile(p)


def test_window_repr_shows_state() -> None:
    w = LatencyWindow(size=4)
    w.record(0.25)
    assert repr(w) == "LatencyWindow(size=4, count=1, p50=0.250s)"


# -- ProviderMetrics ---------------------------------------------------------------------


def test_each_outcome_counts_once_and_stamps_wall_clock() -> None:
    wall = Wall()
    m = ProviderMetrics(wall=wall)
    assert m.snapshot()["last_request_time"] is None
    m.record_success(0.5)
    assert (m.total_requests, m.successful_requests, m.last_request_time) == (1, 1, wall.t)
    m.record_failure(None)
    assert (m.total_requests, m.failed_requests, m.last_request_time) == (2, 1, wall.t)
    m.record_rate_limited()
    assert (m.total_requests, m.rate_limited_requests, m.last_request_time) == (3, 1, wall.t)
    m.record_cancelled()
    assert (m.total_requests, m.cancelled, m.last_request_time) == (4, 1, wall.t)
    stamped = wall.t
    m.record_retry()
    m.record_trip()
    m.record_first_token(0.1)
    assert (m.total_requests, m.retries, m.circuit_breaker_trips) == (4, 1, 1)
    assert m.last_request_time == stamped == wall.t  # side tallies read no clock


def test_failure_flags() -> None:
    m = ProviderMetrics()
    m.record_failure(1.0, timeout=True)
    m.record_failure(2.0, fallback=True)
    m.record_failure(None, timeout=True, fallback=True)
    m.record_failure(3.0)
    assert (m.failed_requests, m.timeouts, m.fallbacks) == (4, 2, 2)
    assert type(m.timeouts) is int
    assert type(m.fallbacks) is int
    assert m.average_failure_time == pytest.approx(2.0)


def test_average_is_over_successes_only() -> None:
    m = ProviderMetrics()
    assert m.average_response_time == 0.0
    m.record_failure(100.0, timeout=True)
    m.record_rate_limited()
    assert m.average_response_time == 0.0
    m.record_success(1.0)
    m.record_success(3.0)
    m.record_failure(50.0)
    assert m.average_response_time == pytest.approx(2.0)
    assert m.average_failure_time == pytest.approx(75.0)
    # The latency window holds successes only, like the average.
    assert m.latency.count == 2
    assert m.latency.percentile(100) == 3.0


def test_tokens_cost_and_success_rate() -> None:
    m = ProviderMetrics()
    assert m.success_rate is None
    m.record_success(0.1, input_tokens=100, output_tokens=20, cost=0.25)
    m.record_success(0.1, input_tokens=50, output_tokens=5, cost=0.5)
    m.record_failure(0.1)
    m.record_cancelled()
    assert (m.input_tokens, m.output_tokens) == (150, 25)
    assert m.cost == pytest.approx(0.75)
    assert m.success_rate == pytest.approx(0.5)


def test_window_properties_are_copies() -> None:
    m = ProviderMetrics()
    m.record_success(0.2)
    m.record_first_token(0.05)
    lat = m.latency
    lat.record(99.0)
    assert m.latency.count == 1
    assert m.time_to_first_token.percentile(50) == 0.05


def test_snapshot_is_json_round_trippable() -> None:
    m = ProviderMetrics(wall=lambda: 1_700_000_123.5)
    empty = m.snapshot()
    assert json.loads(json.dumps(empty)) == empty
    assert empty["latency_p50"] is None
    assert empty["success_rate"] is None

    for i in range(1, 101):
        m.record_success(i / 100, input_tokens=10, output_tokens=2, cost=0.001)
        m.record_first_token(i / 1000)
    m.record_failure(5.0, timeout=True, fallback=True)
    m.record_rate_limited()
    m.record_cancelled()
    m.record_retry()
    m.record_trip()
    snap = m.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    for key, value in snap.items():
        assert type(value) in (int, float, type(None)), key
    expected = {
        "total_requests": 103,
        "successful_requests": 100,
        "failed_requests": 1,
        "rate_limited_requests": 1,
        "cancelled": 1,
        "circuit_breaker_trips": 1,
        "retries": 1,
        "fallbacks": 1,
        "timeouts": 1,
        "input_tokens": 1000,
        "output_tokens": 200,
        "last_request_time": 1_700_000_123.5,
    }
    assert {k: snap[k] for k in expected} == expected
    assert snap["cost"] == pytest.approx(0.1)
    assert snap["average_response_time"] == pytest.approx(0.505)
    assert snap["average_failure_time"] == pytest.approx(5.0)
    assert snap["success_rate"] == pytest.approx(100 / 103)
    assert snap["latency_p50"] == pytest.approx(0.505)
    assert snap["latency_p95"] == pytest.approx(0.9505)
    assert snap["latency_p99"] == pytest.approx(0.9901)
    assert snap["ttft_p50"] == pytest.approx(0.0505)
    assert snap["ttft_p99"] == pytest.approx(0.09901)
    assert identity_holds(snap)


def test_reset_zeroes_everything() -> None:
    m = ProviderMetrics()
    m.record_success(0.2, input_tokens=5, output_tokens=5, cost=1.0)
    m.record_first_token(0.1)
    m.record_failure(0.3, timeout=True, fallback=True)
    m.record_retry()
    m.record_trip()
    m.reset()
    assert m.snapshot() == ProviderMetrics().snapshot()
    m.record_success(0.4)
    assert m.total_requests == 1
    assert m.latency.percentiles() == {50: 0.4, 95: 0.4, 99: 0.4}


def test_repr_shows_live_counters() -> None:
    m = ProviderMetrics()
    m.record_success(0.5)
    m.record_failure(None)
    assert repr(m) == (
        "ProviderMetrics(total=2, ok=1, failed=1, throttled=0, rate_limited=0, cancelled=0, "
        "avg=0.500s)"
    )


@pytest.fixture
def tight_switching() -> Iterator[None]:
    # Switch threads often, so an unguarded read-modify-write would lose updates.
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.usefixtures("tight_switching")
def test_counters_are_exact_under_threads() -> None:
    threads, per_thread = 8, 5_000
    m = ProviderMetrics()
    start = threading.Barrier(threads + 1)
    done = threading.Event()
    broken: list[dict[str, object]] = []

    def work() -> None:
        start.wait()
        for i in range(per_thread):
            k = i % 7
            if k == 0:
                m.record_success(0.1, input_tokens=2, output_tokens=3, cost=0.5)
            elif k == 1:
                m.record_failure(0.2, timeout=True)
            elif k == 2:
                m.record_failure(None, fallback=True)
            elif k == 3:
                m.record_rate_limited()
            elif k == 4:
                m.record_cancelled()
            elif k == 5:
                m.record_retry()
            else:
                m.record_trip()
                m.record_first_token(0.05)

    def watch() -> None:
        start.wait()
        while not done.is_set():
            snap = m.snapshot()
            if not identity_holds(snap):
                broken.append(snap)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    watcher = threading.Thread(target=watch)
    for t in [*workers, watcher]:
        t.start()
    for t in workers:
        t.join()
    done.set()
    watcher.join()

    per_kind = [threads * len(range(k, per_thread, 7)) for k in range(7)]
    assert broken == []
    assert m.successful_requests == per_kind[0]
    assert m.failed_requests == per_kind[1] + per_kind[2]
    assert m.timeouts == per_kind[1]
    assert m.fallbacks == per_kind[2]
    assert m.rate_limited_requests == per_kind[3]
    assert m.cancelled == per_kind[4]
    assert m.retries == per_kind[5]
    assert m.circuit_breaker_trips == per_kind[6]
    assert m.total_requests == sum(per_kind[:5])
    assert (m.input_tokens, m.output_tokens) == (2 * per_kind[0], 3 * per_kind[0])
    assert m.cost == 0.5 * per_kind[0]
    assert m.average_response_time == pytest.approx(0.1)
    assert identity_holds(m.snapshot())


def test_memory_is_constant_however_many_requests() -> None:
    m = ProviderMetrics(window=512)
    for i in range(2_000):  # fill both rings and grow counters past small ints
        m.record_success(i / 1000, input_tokens=300, output_tokens=300, cost=0.01)
        m.record_first_token(i / 10_000)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for i in range(100_000):
            m.record_success(i / 1000, input_tokens=300, output_tokens=300, cost=0.01)
            if i % 4 == 0:
                m.record_first_token(i / 10_000)
                m.record_failure(0.5, timeout=True)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 1024
    assert m.latency.count == 512
    assert m.total_requests == 2_000 + 100_000 + 25_000


# -- cost and usage ----------------------------------------------------------------------


def test_a_providers_price_is_per_1k_tokens_of_the_model() -> None:
    from router_middleware import ResilientRouter

    models = [
        {"name": "m", "cost_per_1k_input_tokens": 0.5, "cost_per_1k_output_tokens": 1.5},
        {"name": "gpt-4o-mini", "cost_per_1k_input_tokens": 0.00015,
         "cost_per_1k_output_tokens": 0.0006},
        {"name": "free"},
    ]  # fmt: skip
    router = ResilientRouter(
        {"a": lambda r: "ok"}, {"providers": [{"name": "a", "models": models}]}
    )
    a = router.providers["a"]
    assert a.price("m", 2000, 1000) == pytest.approx((1.0, 1.5))
    assert a.price("m", 0, 0) == (0.0, 0.0)
    assert a.price("m", 1, 0) == pytest.approx((0.0005, 0.0))
    assert sum(a.price("gpt-4o-mini", 1234, 567)) == pytest.approx(
        (1234 * 0.00015 + 567 * 0.0006) / 1000
    )
    assert a.price("free", 10_000, 10_000) == (0.0, 0.0)
    assert a.price("unserved", 10, 10) == (0.0, 0.0)


def _usage(i: int, o: int) -> dict[str, int]:
    return {"input_tokens": i, "output_tokens": o, "total_tokens": i + o}


def test_usage_from_message_reads_usage_metadata() -> None:
    assert usage_from_message(AIMessage("hi", usage_metadata=_usage(7, 3))) == (7, 3)
    chunk = AIMessageChunk(content="a", usage_metadata=_usage(5, 1))
    assert usage_from_message(chunk) == (5, 1)
    merged = chunk + AIMessageChunk(content="b", usage_metadata=_usage(0, 4))
    assert usage_from_message(merged) == (5, 5)


def test_usage_from_message_without_usage_is_zero() -> None:
    assert usage_from_message(AIMessage("hi")) == (0, 0)
    assert usage_from_message(AIMessageChunk(content="x")) == (0, 0)
    assert usage_from_message(HumanMessage("hi")) == (0, 0)
