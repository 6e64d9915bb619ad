"""The simulation engine, its report for people, and the simulated providers."""

from __future__ import annotations

import asyncio
import io
import math
import statistics
import subprocess
import sys
from dataclasses import replace
from typing import Any

import pytest

from router_middleware import (
    AllProvidersFailedError,
    DeadlineExceededError,
    NoProviderAvailableError,
    ProviderTimeoutError,
    RouterConfig,
)
from router_middleware._classify import default_classifier
from router_middleware.sim import Fault, Scenario, default_scenario, scenario_for, simulate
from router_middleware.sim._report import write_report
from router_middleware.sim._run import _provider_rows, _reason
from router_middleware.testing import (
    FakeClock,
    Hang,
    HTTPStatusError,
    SimulatedProvider,
    http_error,
)


def comparable(report: Any) -> dict[str, Any]:
    data: dict[str, Any] = report.to_dict()
    data.pop("wall_seconds")
    return data


@pytest.fixture(scope="module")
def default_run() -> dict[str, Any]:
    return comparable(simulate(default_scenario(speed=math.inf)))


def test_the_default_scenario_shows_every_mechanism(default_run: dict[str, Any]) -> None:
    requests, providers = default_run["requests"], default_run["providers"]
    assert requests["total"] == 600
    assert requests["succeeded"] >= 590  # failover hides the outage from callers
    assert sum(requests["served_by"].values()) == requests["succeeded"]

    primary, secondary, slow = (
        providers["primary"],
        providers["secondary"],
        providers["slow-backup"],
    )
    # The outage: primary's breaker opens, probes while it lasts, and closes after it.
    changes = [
        (t["from"], t["to"]) for t in default_run["transitions"] if t["provider"] == "primary"
    ]
    assert changes[0] == ("closed", "open")
    assert ("open", "half_open") in changes
    assert changes[-1] == ("half_open", "closed")
    opened = default_run["transitions"][0]["at"]
    assert 15.0 <= opened < 16.0  # the outage starts at 25% of the 60 s run
    assert primary["breaker_trips"] >= 1
    assert primary["breaker_state"] == "closed"
    assert primary["injected"]["outage"] >= 5
    # The 429 burst: secondary answers 429 only a few times, Retry-After keeps it aside.
    assert 1 <= secondary["injected"]["rate_limited"] <= 10
    assert secondary["rate_limited"] > secondary["injected"]["rate_limited"]
    # Local rate limits overflow traffic; retries, timeouts and slowness show.
    assert primary["rate_limited"] > 0
    assert primary["retries"] > 0
    assert slow["timeouts"] >= slow["injected"]["hang"] > 0  # every hang ends in a timeout
    assert slow["latency_p50"] > 3 * primary["latency_p50"]
    # Every answer is paid for: 60 input and 150 output tokens each, at USD prices per 1k.
    assert default_run["scenario"]["currency"] == "USD"
    assert default_run["scenario"]["tokens_per_answer"] == {"input": 60, "output": 150}
    prices = {p.name: p.models[0] for p in default_scenario().config.providers}
    for name, row in providers.items():
        assert row["input_tokens"] == 60 * row["successes"]
        assert row["output_tokens"] == 150 * row["successes"]
        price = prices[name]
        per_answer = 60 * price.cost_per_1k_input_tokens + 150 * price.cost_per_1k_output_tokens
        assert row["cost"] == pytest.approx(row["successes"] * per_answer / 1000, abs=1e-6)
    total = sum(row["cost"] for row in providers.values())
    assert requests["cost"] == pytest.approx(total)
    assert 0.1 < requests["cost"] < 1.0  # list prices: cents, not tens of dollars


def test_the_report_says_what_was_injected_and_what_it_hit(default_run: dict[str, Any]) -> None:
    found = {(i["provider"], i["fault"]): i for i in default_run["injected"]}
    outage = found["primary", "outage"]
    assert (outage["start"], outage["end"]) == (15.0, 30.0)
    assert outage["effect"] == "every call fails fast with HTTP 503"
    assert outage["hits"] == default_run["providers"]["primary"]["injected"]["outage"]
    burst = found["secondary", "429 burst"]
    assert (burst["start"], burst["end"]) == (pytest.approx(37.8), 45.0)
    assert burst["effect"] == "every call gets HTTP 429 with Retry-After 3s"
    assert burst["hits"] == default_run["providers"]["secondary"]["injected"]["rate_limited"]
    hangs = found["slow-backup", "hangs"]
    assert (hangs["start"], hangs["end"]) == (None, None)  # the whole run
    assert hangs["effect"] == "3% of calls never answer (cut by the 5s attempt timeout)"
    assert hangs["hits"] == default_run["providers"]["slow-backup"]["injected"]["hang"] > 0
    slow = found["slow-backup", "latency"]
    assert (slow["effect"], slow["hits"]) == ("answers take 1.5s (median), 4s (p95)", None)
    assert ("secondary", "outage") not in found


def test_each_failed_request_is_reported_with_its_time_and_cause() -> None:
    cfg = RouterConfig.model_validate(
        {
            "providers": [{"name": "a", "models": [{"name": "m"}]}],
            "retry": {"attempts": 1},
            "circuit_breaker": {"threshold": 2, "reset_timeout_seconds": 100},
            "max_wait_seconds": 0,
        }
    )
    scenario = Scenario(cfg, {"a": Fault(outage=(2.0, 50.0))}, requests=10, duration_seconds=5.0)
    report = simulate(replace(scenario, speed=math.inf))
    assert report.requests["failed"] == len(report.failures) == 6  # sent at 2.0s to 4.5s
    assert [f["sent_at"] for f in report.failures] == [2.0, 2.5, 3.0, 3.5, 4.0, 4.5]
    assert [f["request"] for f in report.failures] == [4, 5, 6, 7, 8, 9]
    first, second, *rest = report.failures
    assert (first["error"], first["reason"]) == (
        "AllProvidersFailedError",
        "a raised HTTPStatusError: HTTP 503",
    )
    assert first["failed_at"] >= first["sent_at"]
    assert second["error"] == "AllProvidersFailedError"  # the breaker's second failure
    assert {(f["error"], f["reason"]) for f in rest} == {
        ("NoProviderAvailableError", "no provider could take it: a circuit open")
    }
    assert report.requests["errors"] == {
        "AllProvidersFailedError": 2,
        "NoProviderAvailableError": 4,
    }
    out = io.StringIO()
    write_report(report, out)
    text = out.getvalue()
    assert (
        "  2 requests sent between t=2.0s and t=2.5s failed: AllProvidersFailedError: "
        "a raised HTTPStatusError: HTTP 503\n"
    ) in text
    assert (
        "  4 requests sent between t=3.0s and t=4.5s failed: NoProviderAvailableError: "
        "no provider could take it: a circuit open\n"
    ) in text


def test_a_failure_reason_names_each_providers_part() -> None:
    skipped = {"a": "circuit open", "b": "rate limited for 0.125s", "c": "at max concurrency"}
    assert _reason(NoProviderAvailableError("m", skipped, 0.125)) == (
        "no provider could take it: a circuit open; b rate limited; c at max concurrency"
    )
    errors = {"a": http_error(503), "b": ProviderTimeoutError("b", "attempt", 5.0)}
    failed = AllProvidersFailedError("m", errors, 3, skipped={"c": "rate limited for 2.5s"})
    assert _reason(failed) == (
        "a raised HTTPStatusError: HTTP 503; b raised ProviderTimeoutError: attempt timeout "
        "after 5s; c skipped: rate limited"
    )
    late = DeadlineExceededError("m", {"a": ConnectionError("reset")}, 2, "deadline 15s")
    assert _reason(late) == "deadline 15s exceeded: a raised ConnectionError: reset"
    assert _reason(AllProvidersFailedError("m", {})) == "no provider tried"
    assert _reason(RuntimeError()) == "RuntimeError"


def test_a_providers_own_429s_are_reported_apart_from_the_routers_skips() -> None:
    snapshot = {
        "p": {
            "total_requests": 20, "successful_requests": 5, "failed_requests": 2,
            "throttled": 4, "rate_limited_requests": 9, "circuit_breaker_trips": 0,
            "retries": 1, "fallbacks": 0, "timeouts": 0, "latency_p50": 0.1,
            "latency_p95": 0.2, "input_tokens": 300, "output_tokens": 750, "cost": 0.01,
            "circuit_breaker_state": "closed",
        }
    }  # fmt: skip
    provider = SimulatedProvider(clock=FakeClock())
    row = _provider_rows(snapshot, {"p": provider})["p"]
    assert (row["throttled"], row["rate_limited"], row["failures"]) == (4, 9, 2)
    del snapshot["p"]["throttled"]  # a router that does not count them yet
    assert _provider_rows(snapshot, {"p": provider})["p"]["throttled"] == 0

    report = simulate(default_scenario(requests=30, duration_seconds=3.0, speed=math.inf))
    report.providers["secondary"].update(throttled=4, rate_limited=9)
    out = io.StringIO()
    write_report(report, out)
    lines = out.getvalue().splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("provider "))
    head = lines[top : top + 3]
    assert head[0].split()[4:6] == ["429s", "skipped"]
    assert head[1].split() == ["from", "the", "by", "router", "(USD)"]
    assert head[2].split() == ["provider", "limits"]
    secondary = next(line for line in lines if line.startswith("secondary "))
    assert secondary.split()[4:6] == ["4", "9"]
    # Right-aligned under their headers.
    assert secondary.index(" 4 ") + 2 == head[1].index("from the") + len("from the")
    assert secondary.index(" 9 ") + 2 == head[2].index("limits") + len("limits")


def test_the_plain_report_opens_with_the_scenario() -> None:
    report = simulate(default_scenario(requests=30, duration_seconds=3.0, speed=math.inf))
    out = io.StringIO()
    write_report(report, out)
    lines = out.getvalue().splitlines()
    assert lines[:3] == [
        "Scenario: 30 requests arriving evenly over 3 simulated seconds, at most 32 in flight "
        "(seed 0)",
        "Router: strategy cost_priority_round_robin, any model",
        "Injected (t = simulated seconds from the start):",
    ]
    outage = next(line for line in lines if "outage" in line)
    hits = report.providers["primary"]["injected"]["outage"]
    assert outage.split() == [
        "primary", "outage", "t=0.75s", "to", "1.5s", "every", "call", "fails", "fast",
        "with", "HTTP", "503", str(hits),
    ]  # fmt: skip
    assert lines.index(outage) < next(i for i, x in enumerate(lines) if x.startswith("Results"))
    cost = next(line for line in lines if line.startswith("cost: "))
    assert cost == (
        f"cost: {report.requests['cost']:.4f} USD, from the config's prices per 1k tokens "
        "(each answer: 60 input + 150 output tokens)"
    )
    failed = lines[lines.index("Failed requests:") + 1]
    assert failed.startswith("  1 request sent at t=2.7s failed: AllProvidersFailedError: ")
    assert failed.endswith("; secondary skipped: cooling down (Retry-After)")


@pytest.mark.parametrize(
    "first",
    ["router_middleware.sim", "router_middleware.testing", "router_middleware.sim._provider"],
)
def test_the_fakes_import_in_any_order(first: str) -> None:
    code = (
        f"import {first}\n"
        "from router_middleware import sim, testing\n"
        "assert testing.SimulatedProvider is sim.SimulatedProvider\n"
        "assert testing.run_virtual is sim.run_virtual\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_same_seed_gives_the_same_run() -> None:
    def run(seed: int) -> dict[str, Any]:
        scenario = default_scenario(requests=200, duration_seconds=20.0, speed=math.inf, seed=seed)
        return comparable(simulate(scenario))

    first = run(0)
    assert first["transitions"]  # the run has some history to get wrong
    assert run(0) == first
    assert run(1) != first


def test_speed_paces_the_run_in_real_time() -> None:
    report = simulate(default_scenario(requests=20, duration_seconds=2.0, speed=20.0))
    assert report.wall_seconds >= 0.1  # 2 simulated seconds at 20x
    assert report.requests["simulated_seconds"] >= 2.0


def test_progress_is_reported_for_every_request() -> None:
    seen: list[tuple[int, int]] = []
    scenario = default_scenario(requests=30, duration_seconds=3.0, speed=math.inf)
    simulate(scenario, lambda done, total: seen.append((done, total)))
    assert seen == [(i, 30) for i in range(1, 31)]


def test_simulate_under_a_running_loop() -> None:
    async def inside() -> int:
        report = simulate(default_scenario(requests=20, duration_seconds=2.0, speed=math.inf))
        return int(report.requests["total"])

    assert asyncio.run(inside()) == 20


def test_a_configuration_is_simulated_with_default_roles_by_priority() -> None:
    cfg = RouterConfig.model_validate(
        {
            "providers": [
                {"name": "backup", "priority": 5, "models": [{"name": "m"}]},
                {"name": "main", "priority": 1, "models": [{"name": "m"}]},
                {"name": "spare", "priority": 9, "models": [{"name": "m"}]},
                {"name": "extra", "priority": 10, "models": [{"name": "m"}]},
            ]
        }
    )
    scenario = scenario_for(cfg, {"spare": Fault(failure_rate=1.0)}, duration_seconds=40.0)
    assert scenario.faults["main"].outage == (10.0, 20.0)
    assert scenario.faults["backup"].rate_limit_burst is not None
    assert scenario.faults["spare"] == Fault(failure_rate=1.0)
    assert "extra" not in scenario.faults
    report = simulate(replace(scenario, requests=40, speed=math.inf))
    assert set(report.providers) == {"backup", "main", "spare", "extra"}
    assert report.providers["spare"]["successes"] == 0


# -- the simulated provider on a fake clock -------------------------------------------------


def test_windows_count_from_the_epoch() -> None:
    clock = FakeClock(100.0)
    model = SimulatedProvider(
        clock=clock, epoch=100.0, outages=[(1.0, 2.0)], rate_limit_bursts=[(3.0, 4.0)],
        retry_after=7.0,
    )  # fmt: skip
    assert model.invoke("a").content == "ok"
    clock.advance(1.5)
    with pytest.raises(HTTPStatusError) as outage:
        model.invoke("b")
    assert outage.value.status_code == 503
    clock.advance(2.0)
    with pytest.raises(HTTPStatusError) as limited:
        model.invoke("c")
    verdict = default_classifier(limited.value)
    assert (verdict.kind.value, verdict.retry_after) == ("rate_limited", 7.0)
    clock.advance(1.0)
    assert model.invoke("d").content == "ok"
    assert model.faults == {"ok": 2, "outage": 1, "rate_limited": 1}
    assert model.calls == 4


def test_latency_follows_the_median_and_p95() -> None:
    model = SimulatedProvider(latency=0.2, latency_p95=1.0, seed=7)
    samples = sorted(model._latency() for _ in range(4000))
    assert statistics.median(samples) == pytest.approx(0.2, rel=0.1)
    assert samples[int(0.95 * len(samples))] == pytest.approx(1.0, rel=0.15)


def test_fates_are_drawn_from_the_seed() -> None:
    def fates(seed: int) -> list[str]:
        model = SimulatedProvider(failure_rate=0.3, hang_rate=0.1, seed=seed, clock=FakeClock())
        out = []
        for _ in range(50):
            step = model._next()
            model._done()
            out.append(type(step).__name__)
        return out

    assert fates(1) == fates(1) != fates(2)
    assert {"Reply", "Fail", "Hang"} <= set(fates(1))
    model = SimulatedProvider(hang_rate=1.0, hang_seconds=9.0, clock=FakeClock())
    assert model._next() == Hang(9.0)


def test_a_script_is_played_first() -> None:
    model = SimulatedProvider(script=["scripted"], outages=[(0.0, 99.0)], clock=FakeClock())
    assert model.invoke("a").content == "scripted"
    with pytest.raises(HTTPStatusError):
        model.invoke("b")


def test_requests_that_never_end_are_reported_unfinished() -> None:
    cfg = RouterConfig.model_validate(
        {"providers": [{"name": "a", "models": [{"name": "m"}]}], "deadline_seconds": None}
    )
    scenario = Scenario(cfg, {"a": Fault(hang_rate=1.0)}, requests=5, duration_seconds=1.0)
    report = simulate(replace(scenario, speed=math.inf))
    assert report.requests["errors"] == {"Unfinished": 5}
    assert report.requests["simulated_seconds"] == pytest.approx(1.0 + 60.0 + 5.0 + 1.0, abs=0.01)
