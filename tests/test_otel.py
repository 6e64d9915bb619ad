"""The OpenTelemetry exporter, checked with the SDK's in-memory span exporter and reader."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from router_middleware import AllProvidersFailedError, FakeClock, ResilientRouter
from router_middleware.exporters import OpenTelemetryExporter
from router_middleware.testing import ScriptedChatModel, http_error


class Telemetry:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader])

    def attach(self, router: ResilientRouter) -> OpenTelemetryExporter:
        return OpenTelemetryExporter.attach(
            router, tracer_provider=self.tracer_provider, meter_provider=self.meter_provider
        )

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        assert data is not None
        return [
            point
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]


@pytest.fixture
def otel() -> Telemetry:
    return Telemetry()


def _config(*names: str, **extra: Any) -> dict[str, Any]:
    return {
        "strategy": "cost_priority_round_robin",
        "default_model": "m",
        "providers": [
            {"name": n, "priority": i, "models": [{"name": "m"}]} for i, n in enumerate(names)
        ],
        "retry": {"attempts": 2, "initial_backoff_seconds": 0, "max_backoff_seconds": 0},
        "circuit_breaker": {"threshold": 5, "reset_timeout_seconds": 60},
        **extra,
    }


def _router(clock: FakeClock, **extra: Any) -> ResilientRouter:
    # alpha fails twice (a retry, then the request fails over to beta), beta answers
    # after 0.25 s with 7 input and 3 output tokens.
    alpha = ScriptedChatModel(script=[http_error(503), http_error(503)], clock=clock)
    beta = ScriptedChatModel(text="hello there", usage=(7, 3), latency=0.25, clock=clock)
    return ResilientRouter(
        {"alpha": alpha, "beta": beta}, _config("alpha", "beta", **extra), clock=clock
    )


def _split(spans: list[ReadableSpan]) -> tuple[ReadableSpan, list[ReadableSpan]]:
    roots = [s for s in spans if s.parent is None]
    assert len(roots) == 1
    request = roots[0]
    attempts = sorted(
        (s for s in spans if s is not request), key=lambda s: s.attributes["llm_router.attempt"]
    )
    for a in attempts:
        assert a.parent is not None
        assert a.parent.span_id == request.context.span_id
        assert a.context.trace_id == request.context.trace_id
    return request, attempts


def _check_retry_and_failover(request: ReadableSpan, attempts: list[ReadableSpan]) -> None:
    assert request.name == "chat m"
    assert request.kind is SpanKind.CLIENT
    assert request.status.status_code is StatusCode.UNSET
    r = request.attributes
    assert r["gen_ai.operation.name"] == "chat"
    assert r["gen_ai.request.model"] == "m"
    assert r["llm_router.outcome"] == "succeeded"
    assert r["llm_router.attempts"] == 3
    assert r["gen_ai.provider.name"] == "beta"
    assert (r["gen_ai.usage.input_tokens"], r["gen_ai.usage.output_tokens"]) == (7, 3)
    assert [e.name for e in request.events] == ["llm_router.retry", "llm_router.fallback"]
    fallback = request.events[1].attributes
    assert (fallback["from_provider"], fallback["to_provider"]) == ("alpha", "beta")
    first, second, third = attempts
    for span in attempts:
        assert span.name == "chat m"
        assert span.kind is SpanKind.CLIENT
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["llm_router.breaker_state"] == "closed"
    assert [s.attributes["gen_ai.provider.name"] for s in attempts] == ["alpha", "alpha", "beta"]
    # A failed attempt is an error on itself, retried or followed by a fallback.
    for span in (first, second):
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes["llm_router.outcome"] == "failed"
        assert span.attributes["error.type"] == span.attributes["llm_router.error_kind"]
    assert first.attributes["llm_router.retried"] is True
    assert "llm_router.fallback" not in first.attributes
    assert second.attributes["llm_router.fallback"] is True
    assert second.attributes["llm_router.fallback_reason"] == "transient"
    assert third.status.status_code is StatusCode.UNSET
    assert third.attributes["llm_router.outcome"] == "succeeded"
    assert third.attributes["gen_ai.usage.input_tokens"] == 7
    assert third.attributes["gen_ai.usage.output_tokens"] == 3


def test_a_request_with_a_retry_and_a_failover(otel: Telemetry) -> None:
    router = _router(FakeClock())
    otel.attach(router)
    assert router.invoke("hi").content == "hello there"
    _check_retry_and_failover(*_split(otel.finished()))


def test_async_requests_each_have_their_own_spans(otel: Telemetry) -> None:
    router = _router(FakeClock())
    otel.attach(router)

    async def main() -> None:
        await router.ainvoke("hi")
        otel.spans.clear()
        await asyncio.gather(*(router.ainvoke("hi") for _ in range(5)))

    # The first request (retry and failover) alone, then five concurrent ones.
    router2 = _router(FakeClock())
    otel2 = Telemetry()
    otel2.attach(router2)
    asyncio.run(router2.ainvoke("hi"))
    _check_retry_and_failover(*_split(otel2.finished()))
    asyncio.run(main())
    spans = otel.finished()
    requests = [s for s in spans if s.parent is None]
    assert len(requests) == 5
    assert len(spans) == 10
    for request in requests:
        children = [s for s in spans if s.parent and s.parent.span_id == request.context.span_id]
        assert len(children) == 1


def test_the_request_span_is_a_child_of_the_callers_span(otel: Telemetry) -> None:
    router = ResilientRouter({"a": ScriptedChatModel()})
    otel.attach(router)
    with otel.tracer_provider.get_tracer("app").start_as_current_span("app") as app:
        router.invoke("hi")
    request = next(s for s in otel.finished() if s.name == "chat")
    assert request.parent is not None
    assert request.parent.span_id == app.get_span_context().span_id


def test_a_failed_request_is_an_error_with_its_typed_error(otel: Telemetry) -> None:
    down = ScriptedChatModel(default=http_error(503))
    router = ResilientRouter({"a": down, "b": down}, _config("a", "b"))
    otel.attach(router)
    with pytest.raises(AllProvidersFailedError):
        router.invoke("hi")
    request, attempts = _split(otel.finished())
    assert request.status.status_code is StatusCode.ERROR
    assert request.status.description == "AllProvidersFailedError"
    assert request.attributes["error.type"] == "AllProvidersFailedError"
    assert request.attributes["llm_router.outcome"] == "failed"
    assert len(attempts) == 4
    assert all(a.status.status_code is StatusCode.ERROR for a in attempts)


def test_response_model_and_finish_reasons(otel: Telemetry) -> None:
    answer = AIMessage("hi", response_metadata={"model_name": "m-2025", "finish_reason": "stop"})
    router = ResilientRouter({"a": GenericFakeChatModel(messages=iter([answer]))})
    otel.attach(router)
    router.invoke("hello")
    _, (attempt,) = _split(otel.finished())
    assert attempt.attributes["gen_ai.response.model"] == "m-2025"
    assert attempt.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    text = repr([dict(s.attributes) for s in otel.finished()])
    assert "hello" not in text
    assert "'hi'" not in text


def test_a_stream_has_its_time_to_first_chunk(otel: Telemetry) -> None:
    clock = FakeClock()
    router = _router(clock)
    otel.attach(router)
    assert "".join(str(c.content) for c in router.stream("hi")) == "hello there"
    request, attempts = _split(otel.finished())
    _check_retry_and_failover(request, attempts)
    assert request.attributes["llm_router.stream"] is True
    assert attempts[-1].attributes["gen_ai.response.time_to_first_chunk"] == pytest.approx(0.25)


def test_an_async_stream(otel: Telemetry) -> None:
    router = _router(FakeClock())
    otel.attach(router)

    async def main() -> str:
        return "".join([str(c.content) async for c in router.astream("hi")])

    assert asyncio.run(main()) == "hello there"
    request, attempts = _split(otel.finished())
    _check_retry_and_failover(request, attempts)
    assert "gen_ai.response.time_to_first_chunk" in attempts[-1].attributes


def test_a_stream_closed_early_still_ends_its_spans(otel: Telemetry) -> None:
    router = ResilientRouter({"a": ScriptedChatModel(text="one two three")})
    otel.attach(router)
    stream = router.stream("hi")
    next(stream)
    assert otel.finished() == []  # the request is still under way
    stream.close()
    request, (attempt,) = _split(otel.finished())
    assert request.attributes["llm_router.outcome"] == "cancelled"
    assert request.status.status_code is StatusCode.UNSET
    assert attempt.attributes["llm_router.outcome"] == "cancelled"
    # Nothing is left behind: the next request is a root again.
    otel.spans.clear()
    router.invoke("hi")
    _split(otel.finished())


def test_an_async_stream_closed_early(otel: Telemetry) -> None:
    router = ResilientRouter({"a": ScriptedChatModel(text="one two three")})
    otel.attach(router)

    async def main() -> None:
        stream = router.astream("hi")
        await stream.__anext__()
        await stream.aclose()

    asyncio.run(main())
    request, (attempt,) = _split(otel.finished())
    assert request.attributes["llm_router.outcome"] == "cancelled"
    assert attempt.attributes["llm_router.outcome"] == "cancelled"


def test_a_sync_call_in_a_worker_thread_nests(otel: Telemetry) -> None:
    # attempt_seconds runs the call in a worker thread: its events still reach the request.
    config = {
        "providers": [{"name": "a", "models": [{"name": "m"}], "timeouts": {"attempt_seconds": 5}}]
    }
    router = ResilientRouter({"a": ScriptedChatModel(usage=(2, 1))}, config)
    otel.attach(router)
    router.invoke("hi", model="m")
    _, (attempt,) = _split(otel.finished())
    assert attempt.attributes["gen_ai.usage.input_tokens"] == 2


def test_a_cache_hit_is_a_request_without_attempts(otel: Telemetry) -> None:
    router = ResilientRouter({"a": ScriptedChatModel()}, {"cache": {"enabled": True}})
    otel.attach(router)
    router.invoke("hi")
    otel.spans.clear()
    router.invoke("hi")
    (request,) = otel.finished()
    assert request.attributes["llm_router.outcome"] == "cached"
    assert request.attributes["llm_router.cached"] is True
    assert request.attributes["llm_router.attempts"] == 0


def test_token_usage_and_duration_metrics(otel: Telemetry) -> None:
    router = _router(FakeClock())
    otel.attach(router)
    router.invoke("hi")
    router.invoke("hi")  # alpha's script is used up: alpha answers (3 and 2 tokens)
    tokens = {
        p.attributes["gen_ai.token.type"]: p
        for p in otel.points("gen_ai.client.token.usage")
        if p.attributes["gen_ai.provider.name"] == "beta"
    }
    assert (tokens["input"].sum, tokens["input"].count) == (7, 1)
    assert (tokens["output"].sum, tokens["output"].count) == (3, 1)
    assert tokens["input"].attributes["gen_ai.operation.name"] == "chat"
    durations = otel.points("gen_ai.client.operation.duration")
    ok = next(
        p
        for p in durations
        if "error.type" not in p.attributes and p.attributes["gen_ai.provider.name"] == "beta"
    )
    assert ok.attributes["gen_ai.request.model"] == "m"
    assert (ok.count, ok.sum) == (1, pytest.approx(0.25))
    failed = next(p for p in durations if p.attributes.get("error.type") == "transient")
    assert failed.attributes["gen_ai.provider.name"] == "alpha"
    assert failed.count == 2
    assert 0.32 in ok.explicit_bounds  # the GenAI conventions' advised buckets


def test_nothing_attached_no_span_and_no_request_events(
    otel: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    router = ResilientRouter({"a": ScriptedChatModel()})
    assert "request_started" not in router.observers.heard
    assert router.observers.started("m", False) is None
    called: list[str] = []
    monkeypatch.setattr(
        type(router.observers), "request_started", lambda *a: called.append("started")
    )
    router.invoke("hi")
    assert called == []
    assert otel.finished() == []


def test_an_exporter_that_raises_never_breaks_routing(
    otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    router = _router(FakeClock())
    exporter = otel.attach(router)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("exporter down")

    exporter.tracer.start_span = broken  # type: ignore[method-assign]
    exporter.duration.record = broken  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="router_middleware"):
        assert router.invoke("hi").content == "hello there"
        assert "".join(str(c.content) for c in router.stream("hi")) == "ok"  # alpha's again
    assert "exporter down" in caplog.text
    providers = router.metrics()["providers"]
    assert (
        providers["alpha"]["successful_requests"] == providers["beta"]["successful_requests"] == 1
    )


def test_attach_twice_and_repr(otel: Telemetry) -> None:
    router = ResilientRouter({"a": ScriptedChatModel()})
    exporter = otel.attach(router)
    assert exporter.watch(router) is exporter
    assert sum(1 for _ in [exporter] if exporter in router.observers) == 1
    with pytest.raises(ValueError, match="another router"):
        exporter.watch(ResilientRouter({"b": ScriptedChatModel()}))
    assert repr(exporter) == "OpenTelemetryExporter(providers=['a'])"
