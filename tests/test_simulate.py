"""The simulation engine, its report for people, and the simulated providers."""

from __future__ import annotations

import asyncio
import io
import math
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from router_middleware import (
    AllProvidersFailedError,
    DeadlineExceededError,
    NoProviderAvailableError,
    ProviderTimeoutError,
    RouterConfig,
)
from router_middleware._classify import default_classifier
from router_middleware._tokens import approximate_tokens
from router_middleware.sim import (
    Fault,
    PromptMix,
    Scenario,
    SimulationReport,
    _run,
    default_scenario,
    scenario_for,
    simulate,
    token_scenario,
    with_token_limits,
)
from router_middleware.sim._failures import reason as _reason
from router_middleware.sim._meter import Charge, TokenMeter
from router_middleware.sim._provider import count_prompt_tokens
from router_middleware.sim._report import write_report
from router_middleware.sim._run import _provider_rows
from router_middleware.testing import (
    FakeClock,
    Hang,
    HTTPStatusError,
    SimulatedProvider,
    http_error,
    run_virtual,
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


# -- token limits: the meter, the metered provider, the token scenario ------------------------


def test_the_meter_keeps_an_exact_sliding_window() -> None:
    meter = TokenMeter(limit=1000)
    first, wait = meter.admit(10.0, prompt=400, output=300)
    assert first is not None
    assert wait == 0.0
    assert meter.admit(30.0, 200, 200) == (None, 40.0)  # room once the 700 leave at 70 s
    assert meter.admit(69.999, 200, 200)[0] is None
    second, _ = meter.admit(70.0, 200, 200)  # exactly 60 s later: the first has left
    assert second is not None
    assert meter.admit(70.0, 700, 400) == (None, math.inf)  # more than the whole limit
    meter.settle(second, used=250, now=71.0)  # an answer shorter than its max_tokens
    assert meter.used(71.0) == 250
    assert (second.used, second.ended, second.counted) == (250, 71.0, 250)
    assert meter.peak == (700, 10.0)
    assert [(r.at, r.cost) for r in meter.refused] == [(30.0, 400), (69.999, 400), (70.0, 1100)]
    watcher = TokenMeter(limit=None)  # counts, never refuses
    for t in range(5):
        assert watcher.admit(float(t), 10_000, 0)[0] is not None
    assert watcher.peak == (50_000, 4.0)


def test_a_metered_provider_reports_its_own_count_and_answers_within_max_tokens() -> None:
    model = SimulatedProvider(answer_tokens=(50, 500), clock=FakeClock(), seed=1)
    prompt = "x" * 400  # 100 tokens, 3 for the message, 3 priming the reply
    outputs = []
    for _ in range(40):
        answer = model.invoke(prompt, max_tokens=64)
        assert answer.usage_metadata is not None
        assert answer.usage_metadata["input_tokens"] == 106
        outputs.append(answer.usage_metadata["output_tokens"])
    assert max(outputs) == 64  # capped by max_tokens
    assert min(outputs) >= 50
    unasked = [model.invoke(prompt).usage_metadata for _ in range(40)]  # capped at the reserve
    assert {u["output_tokens"] for u in unasked if u} <= set(range(50, 501))
    assert len({u["output_tokens"] for u in unasked if u}) > 10  # drawn, not fixed
    other = model.invoke(prompt, max_completion_tokens=60).usage_metadata  # OpenAI's new name
    assert other is not None
    assert other["output_tokens"] <= 60
    chunks = list(model.stream(prompt, max_tokens=64))
    streamed = sum(chunks[1:], chunks[0])
    assert streamed.usage_metadata["input_tokens"] == 106  # type: ignore[index]
    # Unmetered, as before: the fixed usage.
    plain = SimulatedProvider(usage=(60, 150), clock=FakeClock()).invoke(prompt, max_tokens=5)
    assert plain.usage_metadata is not None
    assert (plain.usage_metadata["input_tokens"], plain.usage_metadata["output_tokens"]) == (
        60,
        150,
    )
    assert not SimulatedProvider(clock=FakeClock()).counts_tokens


def test_a_metered_provider_enforces_tokens_per_minute_as_openai_does() -> None:
    clock = FakeClock(0.0)
    model = SimulatedProvider(
        tokens_per_minute=1000, answer_tokens=(10, 10), clock=clock, epoch=0.0
    )
    prompt = "x" * 400  # 106 tokens
    model.invoke(prompt, max_tokens=500)  # charged 606 on arrival, 116 once answered
    clock.advance(1.0)
    model.invoke(prompt, max_tokens=500)  # 116 + 606 fit; 232 once answered
    clock.advance(1.0)
    with pytest.raises(HTTPStatusError) as refused:  # 232 + 806 > 1000
        model.invoke(prompt, max_tokens=700)
    verdict = default_classifier(refused.value)
    # Room once the first call's 116 tokens leave the window, 60 s after it arrived.
    assert (refused.value.status_code, verdict.kind.value, verdict.retry_after) == (
        429, "rate_limited", 58.0,
    )  # fmt: skip
    assert "rate_limit_exceeded" in str(refused.value)
    clock.advance(57.9)
    with pytest.raises(HTTPStatusError):
        model.invoke(prompt, max_tokens=700)
    clock.advance(0.1)
    model.invoke(prompt, max_tokens=700)
    assert model.faults == {"ok": 3, "token_limited": 2}
    log = model.token_log
    assert [(c.at, c.reserved, c.used) for c in log] == [
        (0.0, 606, 116), (1.0, 606, 116), (pytest.approx(60.0), 806, 116),
    ]  # fmt: skip
    assert model.peak_window == (922, pytest.approx(60.0))  # 116 (at 1 s) + 806
    assert [r.held for r in model.token_refusals] == [232, 232]


def test_a_metered_provider_settles_failures_and_keeps_what_it_could_not_settle() -> None:
    failing = SimulatedProvider(tokens_per_minute=10_000, failure_rate=1.0, clock=FakeClock())
    with pytest.raises(ConnectionError):
        failing.invoke("x" * 400, max_tokens=500)
    (charge,) = failing.token_log
    assert (charge.reserved, charge.used) == (606, 106)  # it read the prompt, wrote nothing

    hanging = SimulatedProvider(tokens_per_minute=10_000, hang_rate=1.0, hang_seconds=60.0)

    async def cut() -> None:
        await asyncio.wait_for(hanging.ainvoke("x" * 400, max_tokens=500), 1.0)

    with pytest.raises(asyncio.TimeoutError):
        run_virtual(cut())
    (charge,) = hanging.token_log
    assert (charge.reserved, charge.used) == (606, None)  # a call cut off keeps its charge


def test_a_metered_provider_refuses_prompts_beyond_its_context_window() -> None:
    clock = FakeClock()
    model = SimulatedProvider(max_input_tokens=100, outages=[(5.0, 6.0)], clock=clock, epoch=0.0)
    with pytest.raises(HTTPStatusError) as refused:
        model.invoke("x" * 400)  # 106 tokens
    assert default_classifier(refused.value).kind.value == "context_length"
    assert model.invoke("x" * 300).content == "ok"  # 81 tokens
    clock.advance(5.0)
    with pytest.raises(HTTPStatusError) as down:  # the outage comes first
        model.invoke("x" * 400)
    assert down.value.status_code == 503
    assert model.faults == {"too_long": 1, "ok": 1, "outage": 1}
    assert [c.prompt for c in model.token_log] == [81]  # refused prompts are not charged


_build = _run._providers


def run_keeping_providers(
    scenario: Scenario, count: Any = None
) -> tuple[SimulationReport, dict[str, SimulatedProvider]]:
    """Simulate ``scenario``; also return its simulated providers (their token logs),
    counting prompts with ``count`` when given."""
    built: dict[str, SimulatedProvider] = {}

    def keep(s: Scenario, clock: Any) -> dict[str, SimulatedProvider]:
        built.update(_build(s, clock))
        for provider in built.values():
            if count is not None:
                provider.count_tokens = count
        return built

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_run, "_providers", keep)
        report = simulate(scenario)
    return report, built


def peak_from_log(log: list[Charge]) -> int:
    """The fullest 60 s window, recomputed from a provider's log by brute force."""
    peak = 0
    for c in log:
        now = c.at
        held = sum(
            (o.used if o.ended is not None and o.ended <= now else o.reserved)
            for o in log
            if now - 60.0 < o.at <= now
        )
        peak = max(peak, held)
    return peak


def with_config(scenario: Scenario, change: Callable[[dict[str, Any]], None]) -> Scenario:
    data = scenario.config.model_dump()
    change(data)
    return replace(scenario, config=RouterConfig.model_validate(data))


@pytest.fixture(scope="module")
def token_run() -> tuple[SimulationReport, dict[str, SimulatedProvider]]:
    return run_keeping_providers(token_scenario(speed=math.inf))


def test_the_router_keeps_within_a_providers_token_limit(
    token_run: tuple[SimulationReport, dict[str, SimulatedProvider]],
) -> None:
    report, providers = token_run
    primary, row = providers["primary"], report.providers["primary"]
    limit = row["tokens_per_minute"]
    assert limit == 100_000 == token_scenario().config.providers[0].rate_limit.tokens_per_minute
    # The provider never refused a call: the router skipped it while its window was full.
    assert primary.token_refusals == []
    assert row["throttled"] == 0
    assert "token_limited" not in row["injected"]
    assert row["skipped_for"]["token limit"] > 100
    assert row["rate_limited"] == row["skipped_for"]["token limit"]
    # Its own log: the window never went over the limit, and the router filled it.
    peak = peak_from_log(primary.token_log)
    assert 0.95 * limit <= peak <= row["peak_window_tokens"] <= limit
    assert row["peak_window_at"] is not None
    # The window slides: it serves again once the first minute's charges have left.
    assert any(c.at > 65.0 for c in primary.token_log)
    # The load spreads: nobody failed, every provider answered some.
    assert report.requests["failed"] == 0
    assert all(n > 0 for n in report.requests["served_by"].values())
    assert row["input_tokens"] + row["output_tokens"] == sum(c.used or 0 for c in primary.token_log)


def test_long_prompts_skip_the_small_context_window(
    token_run: tuple[SimulationReport, dict[str, SimulatedProvider]],
) -> None:
    report, providers = token_run
    small, row = providers["small-window"], report.providers["small-window"]
    assert small.token_log
    assert max(c.prompt for c in small.token_log) <= 2000
    assert row["injected"].get("too_long", 0) == 0  # it never had to refuse one
    mix, seed = token_scenario().prompts, 0
    assert mix is not None
    long = sum(
        count_prompt_tokens([HumanMessage(mix.request(i, seed)[0])]) > 2000 for i in range(600)
    )
    assert long > 50
    # Each long prompt went to primary (when its window had room) or to backup, past
    # small-window, which the router skipped for it (and for a few prompts just under
    # 2,000 tokens: its estimate errs high).
    elsewhere = [c.prompt > 2000 for p in ("primary", "backup") for c in providers[p].token_log]
    assert sum(elsewhere) == long
    at_backup = sum(c.prompt > 2000 for c in providers["backup"].token_log)
    assert at_backup <= row["skipped_for"]["context window"] <= providers["backup"].calls
    assert at_backup > 50


def test_the_provider_answers_429s_and_400s_when_the_router_is_not_told() -> None:
    def forget(data: dict[str, Any]) -> None:
        data["providers"][0]["rate_limit"]["tokens_per_minute"] = None
        data["providers"][1]["models"][0]["max_input_tokens"] = None

    scenario = with_config(token_scenario(speed=math.inf), forget)
    report, providers = run_keeping_providers(scenario)
    primary, small = report.providers["primary"], report.providers["small-window"]
    assert primary["throttled"] == primary["injected"]["token_limited"] >= 1
    assert providers["primary"].token_refusals
    # Then its Retry-After keeps the router away until the window has room.
    assert primary["skipped_for"]["cooling down (Retry-After)"] > 50
    assert small["injected"]["too_long"] >= 1
    # The router learns the window from the provider's context_length_exceeded.
    assert small["skipped_for"]["context window"] > small["injected"]["too_long"]


def test_no_429_the_router_could_have_prevented_even_all_at_once() -> None:
    # Counting as the router estimates, the provider leaves it nothing to learn: any 429
    # would be the router's. (Counting its own way, a burst that fills the window before
    # the first answer may get a 429 or two the router could not foresee.)
    def tighter(data: dict[str, Any]) -> None:
        data["providers"][0]["rate_limit"]["tokens_per_minute"] = 30_000

    for seed in range(3):
        scenario = token_scenario(speed=math.inf, requests=400, duration_seconds=0.0, seed=seed)
        scenario = with_token_limits(with_config(scenario, tighter))
        report, providers = run_keeping_providers(scenario, count=approximate_tokens)
        assert providers["primary"].token_refusals == []
        assert report.providers["primary"]["skipped_for"]["token limit"] > 300
        assert peak_from_log(providers["primary"].token_log) <= 30_000


def test_no_429_the_router_could_have_prevented_after_timeouts() -> None:
    """A timed-out call keeps its charge: the provider goes on counting it."""

    def slow(data: dict[str, Any]) -> None:
        data["providers"][0]["rate_limit"]["tokens_per_minute"] = 8_000
        data["timeouts"]["attempt_seconds"] = 3.0

    scenario = token_scenario(speed=math.inf, requests=400, duration_seconds=200.0)
    scenario = with_token_limits(with_config(scenario, slow))
    faults = {**scenario.faults, "primary": Fault(latency_seconds=0.5, latency_p95_seconds=6.0)}
    scenario = with_token_limits(replace(scenario, faults=faults))
    report, providers = run_keeping_providers(scenario, count=approximate_tokens)
    assert report.providers["primary"]["timeouts"] > 0
    assert providers["primary"].token_refusals == []


def test_the_token_scenario_is_repeatable_and_leaves_the_default_alone(
    token_run: tuple[SimulationReport, dict[str, SimulatedProvider]],
    default_run: dict[str, Any],
) -> None:
    first = comparable(token_run[0])
    assert comparable(simulate(token_scenario(speed=math.inf))) == first
    assert comparable(simulate(token_scenario(speed=math.inf, seed=1))) != first
    assert first["scenario"]["prompts"] == asdict(PromptMix())
    assert first["scenario"]["tokens_per_answer"] is None
    # The classic run counts no tokens: fixed usage, no windows, no token section.
    assert default_run["scenario"]["prompts"] is None
    for row in default_run["providers"].values():
        assert (row["tokens_per_minute"], row["peak_window_tokens"]) == (None, None)
    assert default_run["providers"]["primary"]["skipped_for"]["circuit open"] > 0


def test_the_report_shows_tokens_limits_and_the_fullest_window(
    token_run: tuple[SimulationReport, dict[str, SimulatedProvider]],
) -> None:
    report = token_run[0]
    out = io.StringIO()
    write_report(report, out)
    lines = out.getvalue().splitlines()
    assert lines[2] == (
        "Traffic: prompts of 30 to 6,000 tokens (log-uniform), max_tokens 128, 256, 512, "
        "1,024 or unset; answers of 40 to 800 tokens, at most max_tokens"
    )
    assert any(line.endswith("(on the tokens each provider reported)") for line in lines)
    top = lines.index("Tokens:") + 1
    assert lines[top].split() == [
        "provider", "input", "output", "limit", "peak", "429s", "400s", "skipped", "skipped",
    ]  # fmt: skip
    row = report.providers["primary"]
    primary = next(line for line in lines[top:] if line.startswith("primary "))
    assert primary.split() == [
        "primary", f"{row['input_tokens']:,}", f"{row['output_tokens']:,}", "100,000",
        f"{row['peak_window_tokens']:,}", "0", "0", str(row["skipped_for"]["token limit"]), "0",
    ]  # fmt: skip
    backup = next(line for line in lines[top:] if line.startswith("backup "))
    assert backup.split()[3] == "-"  # no limit
    sentence = " ".join(
        line.strip()
        for line in lines[lines.index(primary) :]
        if line.startswith(("primary:", "  "))
    )
    assert (
        f"primary: its 60 s window peaked at {row['peak_window_tokens']:,} of 100,000 tokens "
        f"(t={row['peak_window_at']:.1f}s); it answered 0 429s for tokens; the router skipped "
        f"it {row['skipped_for']['token limit']} times for its token limit"
    ) in sentence
    default = io.StringIO()
    write_report(
        simulate(default_scenario(requests=30, duration_seconds=3.0, speed=math.inf)), default
    )
    assert "Tokens:" not in default.getvalue().splitlines()
