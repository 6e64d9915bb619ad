"""The simulation engine and the simulated providers."""

from __future__ import annotations

import asyncio
import math
import statistics
from dataclasses import replace
from typing import Any

import pytest

from router_middleware import RouterConfig
from router_middleware._classify import default_classifier
from router_middleware.sim import Fault, Scenario, default_scenario, scenario_for, simulate
from router_middleware.testing import FakeClock, Hang, HTTPStatusError, SimulatedProvider


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
    # Every answer is paid for: 60 input and 150 output tokens each.
    for row in providers.values():
        assert row["input_tokens"] == 60 * row["successes"]
        assert row["output_tokens"] == 150 * row["successes"]
        assert row["cost"] > 0


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
