"""The observer seam: every attempt, retry and transition reaches one place."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from router_middleware import AttemptEnd, BreakerTransition, FakeClock, Observer, ResilientRouter
from router_middleware._observe import Observers
from router_middleware.testing import ScriptedChatModel, http_error

from .conftest import provider_config


class Recorder(Observer):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def attempt_started(self, provider: str, model: str, attempt: int) -> None:
        self.events.append(("start", (provider, attempt)))

    def attempt_ended(self, end: AttemptEnd) -> None:
        self.events.append(("end", end))

    def retried(self, provider: str, attempt: int, delay: float) -> None:
        self.events.append(("retry", (provider, attempt)))

    def breaker_changed(self, transition: BreakerTransition) -> None:
        self.events.append(("breaker", transition.to_state.value))

    def cooled_down(self, provider: str, seconds: float) -> None:
        self.events.append(("cooldown", (provider, seconds)))


def _router(recorder: Observer, *models: Any, **config: Any) -> ResilientRouter:
    names = [f"p{i}" for i in range(len(models))]
    return ResilientRouter(
        dict(zip(names, models, strict=True)),
        {
            "strategy": "cost_priority_round_robin",
            "providers": [provider_config(n, priority=i) for i, n in enumerate(names)],
            "retry": {"attempts": 2, "initial_backoff_seconds": 0, "max_backoff_seconds": 0},
            **config,
        },
        clock=FakeClock(),
        observers=[recorder],
    )


def test_an_exporter_hears_every_attempt_with_its_outcome() -> None:
    recorder = Recorder()
    failing = ScriptedChatModel(script=[http_error(503), http_error(429, retry_after=0.5)])
    router = _router(recorder, failing, ScriptedChatModel(text="ok", usage=(7, 3)))
    assert router.invoke("hi").content == "ok"
    kinds = [kind for kind, _ in recorder.events]
    # An attempt's end is told once what follows it is known: after the retry it led to.
    assert kinds == ["start", "retry", "end", "start", "cooldown", "end", "start", "end"]
    ends = [e for kind, e in recorder.events if kind == "end"]
    assert [(e.provider, e.outcome, e.kind, e.ends_request, e.fallback) for e in ends] == [
        ("p0", "failed", "transient", False, False),
        ("p0", "failed", "rate_limited", True, True),
        ("p1", "succeeded", None, True, False),
    ]
    assert (ends[2].input_tokens, ends[2].output_tokens) == (7, 3)
    # The metrics are an observer of the same events.
    m = router.providers["p0"].metrics
    assert (m.total_requests, m.retries, m.throttled, m.fallbacks) == (1, 1, 1, 1)


def test_breaker_transitions_reach_observers_from_requests_and_controls() -> None:
    recorder = Recorder()
    router = _router(
        recorder, ScriptedChatModel(default=http_error(500)), circuit_breaker={"threshold": 1}
    )
    with pytest.raises(Exception, match="all providers failed"):
        router.invoke("hi")
    router.reset_breaker("p0")
    assert [e for kind, e in recorder.events if kind == "breaker"] == ["open", "closed"]


def test_an_observer_that_raises_is_logged_and_the_request_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(Observer):
        def attempt_ended(self, end: AttemptEnd) -> None:
            raise RuntimeError("exporter down")

    recorder = Recorder()
    router = _router(recorder, ScriptedChatModel(text="ok"))
    router.add_observer(Broken())
    router.add_observer(recorder2 := Recorder())
    with caplog.at_level(logging.ERROR, logger="router_middleware"):
        assert router.invoke("hi").content == "ok"
    assert "failed on attempt_ended" in caplog.text
    assert [k for k, _ in recorder2.events] == ["start", "end"]  # later observers still hear


def test_events_go_only_to_observers_that_override_them() -> None:
    class EndsOnly(Observer):
        def __init__(self) -> None:
            self.ends = 0

        def attempt_ended(self, end: AttemptEnd) -> None:
            self.ends += 1

    ends = EndsOnly()
    fan = Observers([ends])
    assert fan._by_event["attempt_started"] == ()
    fan.attempt_started("p", "m", 1)
    fan.attempt_ended(AttemptEnd("p", "m", 1, "succeeded"))
    assert ends.ends == 1


def test_a_fallback_names_the_provider_left_and_the_one_that_took_the_request() -> None:
    class Fallbacks(Observer):
        def __init__(self) -> None:
            self.pairs: list[tuple[str, str, str]] = []

        def fell_back(self, from_provider: str, to_provider: str, reason: str) -> None:
            self.pairs.append((from_provider, to_provider, reason))

    seen = Fallbacks()
    router = _router(
        seen,
        ScriptedChatModel(default=http_error(500)),
        ScriptedChatModel(default=http_error(429)),
        ScriptedChatModel(text="ok"),
        retry={"attempts": 1},
    )
    assert router.invoke("hi").content == "ok"
    assert seen.pairs == [("p0", "p1", "transient"), ("p1", "p2", "rate_limited")]
    # A request no other provider takes has no fallback.
    lone = _router(seen := Fallbacks(), ScriptedChatModel(default=http_error(500)))
    with pytest.raises(Exception, match="all providers failed"):
        lone.invoke("hi")
    assert seen.pairs == []
