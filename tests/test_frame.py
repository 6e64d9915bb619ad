"""``router.metrics_frame()``: the metrics view as a pandas DataFrame."""

from __future__ import annotations

import math
import sys

import pytest

from router_middleware import FakeClock, ResilientRouter
from router_middleware._frame import flatten, metrics_frame
from router_middleware.testing import ScriptedChatModel, http_error

pytest.importorskip("pandas", reason="needs the notebook extra (pandas)")


def two_providers() -> ResilientRouter:
    router = ResilientRouter(
        {"first": ScriptedChatModel(script=[http_error(503)]), "second": ScriptedChatModel()},
        {
            "providers": [
                {"name": "first", "priority": 1, "models": [{"name": "m"}]},
                {"name": "second", "priority": 2, "models": [{"name": "m"}]},
            ],
            "strategy": "cost_priority_round_robin",
            "retry": {"attempts": 1},
            "circuit_breaker": {"threshold": 1},
        },
        clock=FakeClock(),
    )
    router.invoke("hi")
    return router


def test_one_row_per_provider_with_the_metrics_as_columns() -> None:
    router = two_providers()
    frame = router.metrics_frame()
    snapshot = router.metrics()["providers"]
    assert list(frame.index) == ["first", "second"]
    assert frame.index.name == "provider"
    assert list(frame.columns) == list(snapshot["first"])
    for name, row in snapshot.items():
        for key, value in row.items():
            got = frame.loc[name, key]
            assert (value is None and (got is None or math.isnan(got))) or got == value, key
    assert frame.loc["first", "circuit_breaker_state"] == "open"
    assert frame.loc["second", "successful_requests"] == 1
    assert frame["total_requests"].sum() == router.metrics()["totals"]["total_requests"]


def test_nested_metrics_become_dotted_columns_and_missing_ones_nan() -> None:
    snapshot = {
        "providers": {
            "a": {"cost": 1.0, "context_refused_at": {"big": 9000}},
            "b": {"cost": 2.0, "token_headroom": 500},
        }
    }
    frame = metrics_frame(snapshot)
    assert list(frame.columns) == ["cost", "context_refused_at.big", "token_headroom"]
    assert frame.loc["a", "context_refused_at.big"] == 9000
    assert math.isnan(frame.loc["a", "token_headroom"])
    assert flatten({"x": {"y": {"z": 1}}}) == {"x.y.z": 1}


def test_without_pandas_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    router = two_providers()
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails
    with pytest.raises(ImportError, match=r"router-middleware\[notebook\]"):
        router.metrics_frame()
