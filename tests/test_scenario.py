"""Scenarios: parsing a fault, and what a scenario accepts."""

from __future__ import annotations

import re

import pytest

from router_middleware.sim import Fault, Scenario, default_scenario, parse_fault


def test_parse_fault() -> None:
    name, fault = parse_fault("db:latency_ms=50,latency_p95=0.2,failure_rate=0.3,outage=2-5.5")
    assert name == "db"
    assert fault == Fault(
        latency_seconds=0.05, latency_p95_seconds=0.2, failure_rate=0.3, outage=(2.0, 5.5)
    )
    _, fault = parse_fault("x:rate_limit_burst=1-2,retry_after=4,hang_rate=0.1,latency=2")
    assert (fault.rate_limit_burst, fault.retry_after_seconds, fault.hang_rate) == ((1, 2), 4, 0.1)
    assert fault.latency_p95_seconds == 2.0  # raised to the median
    assert parse_fault("healthy:") == ("healthy", Fault())


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nocolon", "expected NAME:key=value"),
        ("a:speed=3", "unknown part 'speed=3'"),
        ("a:failure_rate=lots", "bad value in 'failure_rate=lots'"),
        ("a:outage=5", "bad value in 'outage=5'"),
        ("a:outage=5-2", "outage must be START-END"),
        ("a:failure_rate=2", "failure_rate must be within [0, 1]"),
        ("a:latency=1,latency_p95=0.5", "latency must satisfy"),
    ],
)
def test_parse_fault_errors(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_fault(spec)


def test_scenario_checks() -> None:
    base = default_scenario()
    with pytest.raises(ValueError, match="unknown provider"):
        Scenario(base.config, {"ghost": Fault()})
    with pytest.raises(ValueError, match="requests and concurrency"):
        Scenario(base.config, requests=0)
    with pytest.raises(ValueError, match="speed"):
        Scenario(base.config, speed=0)
