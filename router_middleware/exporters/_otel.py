"""OpenTelemetry traces and metrics for a router, through the OpenTelemetry API only.

:class:`OpenTelemetryExporter` is an :class:`~router_middleware.Observer`: a span per
routed request (``invoke``, ``ainvoke``, ``stream``, ``astream``), a child span per
provider attempt, and the two GenAI client metrics. It uses the API's global tracer and
meter providers unless given its own; the application brings the SDK, its processors and
exporters (without an SDK, the API's no-op providers make it nearly free).

Spans follow the GenAI semantic conventions: named ``chat {model}``, kind ``CLIENT``,
``gen_ai.operation.name = "chat"``, the provider, the request and response model, token
usage, finish reasons and the time to the first chunk; the router's own attributes are
under ``llm_router.*`` (attempt number, outcome, error kind, fallback, breaker state). No
text of a request or an answer ever becomes an attribute.

Example:
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    ...     InMemorySpanExporter,
    ... )
    >>> from router_middleware import ResilientRouter
    >>> from router_middleware.testing import ScriptedChatModel
    >>> spans = InMemorySpanExporter()
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(spans))
    >>> router = ResilientRouter({"a": ScriptedChatModel(text="hi", usage=(5, 2))})
    >>> exporter = OpenTelemetryExporter.attach(router, tracer_provider=provider)
    >>> router.invoke("hello").content
    'hi'
    >>> attempt, request = spans.get_finished_spans()
    >>> attempt.parent.span_id == request.context.span_id
    True
    >>> attempt.name, attempt.attributes["gen_ai.usage.input_tokens"]
    ('chat a', 5)
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .._breaker import BreakerTransition
from .._observe import AttemptEnd
from ._follow import Following

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

    from .._router import ResilientRouter

__all__ = ["OpenTelemetryExporter"]

SCOPE = "router_middleware"

# The GenAI conventions' advised buckets (as the Prometheus exporter's).
DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]
TOKEN_BUCKETS = [float(4**i) for i in range(14)]

_CLIENT = SpanKind.CLIENT
_ERROR = StatusCode.ERROR


class _Request:
    """One routed request being traced: its span, and its attempts' spans by number."""

    __slots__ = ("attempts", "context", "count", "served", "span", "token")

    def __init__(self, span: Span, context: Context) -> None:
        self.span = span
        self.context = context
        self.attempts: dict[int, Span] = {}
        self.count = 0
        self.served: dict[str, Any] | None = None
        self.token: Token[_Request | None] | None = None


class OpenTelemetryExporter(Following):
    """A router's requests and attempts as OpenTelemetry spans, and the GenAI metrics.

    ``tracer_provider`` and ``meter_provider`` default to the API's global ones. Attach it
    with :meth:`attach` (or ``ResilientRouter(observers=[exporter])`` and :meth:`watch`,
    which lets the attempt spans carry the provider's breaker state).

    A request span is the current one, for this exporter, on the thread or task that
    started the request until it ends: the attempts' spans are its children. Each span
    ends on every ending (an error, a cancellation, a stream closed early).

    Example:
        >>> from router_middleware import ResilientRouter
        >>> from router_middleware.testing import ScriptedChatModel
        >>> exporter = OpenTelemetryExporter()
        >>> router = ResilientRouter({"a": ScriptedChatModel()}, observers=[exporter])
        >>> exporter.watch(router) is exporter
        True
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__()
        self.tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration (one provider attempt).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used (per attempt).",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._breakers: dict[str, str] = {}  # breaker state by provider, from transitions
        # Per exporter: two exporters on one router each follow their own requests.
        self._current: ContextVar[_Request | None] = ContextVar("llm_router_otel", default=None)
        # Metric attributes by their values, built once (bounded by the configuration).
        self._duration_attrs: dict[tuple[str, str, str | None], dict[str, Any]] = {}
        self._token_attrs: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}

    # -- attaching --------------------------------------------------------------------------

    @classmethod
    def attach(
        cls,
        router: ResilientRouter,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> OpenTelemetryExporter:
        """A new exporter, observing ``router``."""
        return cls(tracer_provider, meter_provider).watch(router)

    # -- requests ---------------------------------------------------------------------------

    def request_started(self, model: str | None, stream: bool) -> None:
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "llm_router.stream": stream}
        if model is not None:
            attributes["gen_ai.request.model"] = model
        span = self.tracer.start_span(
            f"chat {model}" if model else "chat", kind=_CLIENT, attributes=attributes
        )
        request = _Request(span, trace.set_span_in_context(span))
        request.token = self._current.set(request)

    def request_finished(self, outcome: str, error: BaseException | None) -> None:
        request = self._current.get()
        if request is None:
            return
        if request.token is not None:
            try:
                self._current.reset(request.token)
            except ValueError:  # ended in another context (a stream closed by the collector)
                self._current.set(None)
        span = request.span
        for left in request.attempts.values():  # never left open, whatever happened
            left.end()
        request.attempts.clear()
        # One set_attributes: the SDK takes its lock and checks the values once per call.
        attributes: dict[str, Any] = {"llm_router.outcome": outcome}
        attributes["llm_router.attempts"] = request.count
        if outcome == "cached":
            attributes["llm_router.cached"] = True
        if request.served is not None:
            attributes.update(request.served)
        if error is not None and outcome == "failed":
            name = type(error).__name__
            attributes["error.type"] = name
            span.set_status(Status(_ERROR, name))
        span.set_attributes(attributes)
        span.end()

    # -- attempts ---------------------------------------------------------------------------

    def attempt_started(self, provider: str, model: str, attempt: int) -> None:
        request = self._current.get()
        if request is None:  # attached while this request was under way
            return
        request.count += 1
        request.attempts[attempt] = self.tracer.start_span(
            f"chat {model}",
            request.context,
            _CLIENT,
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "llm_router.attempt": attempt,
            },
        )

    def attempt_ended(self, end: AttemptEnd) -> None:
        self._record(end)
        request = self._current.get()
        span = request.attempts.pop(end.attempt, None) if request is not None else None
        if span is None:
            return
        attributes = _served(end) if end.outcome == "succeeded" else {}
        if attributes:
            request.served = attributes  # type: ignore[union-attr]
            attributes = dict(attributes)
        attributes["llm_router.outcome"] = end.outcome
        if end.kind is not None:
            attributes["llm_router.error_kind"] = end.kind
        if not end.ends_request:
            attributes["llm_router.retried"] = True
        if end.fallback:
            attributes["llm_router.fallback"] = True
            attributes["llm_router.fallback_reason"] = end.kind or ""
        if end.cost:
            attributes["llm_router.cost"] = end.cost
        breaker = self._breakers.get(end.provider) or self._breaker_state(end.provider)
        if breaker is not None:
            attributes["llm_router.breaker_state"] = breaker
        if end.outcome == "failed":
            attributes["error.type"] = end.kind or "failed"
            span.set_status(Status(_ERROR, end.kind))
        span.set_attributes(attributes)
        span.end()

    def retried(self, provider: str, attempt: int, delay: float) -> None:
        request = self._current.get()
        if request is not None:
            request.span.add_event(
                "llm_router.retry",
                {"gen_ai.provider.name": provider, "llm_router.attempt": attempt, "delay": delay},
            )

    def fell_back(self, from_provider: str, to_provider: str, reason: str) -> None:
        request = self._current.get()
        if request is not None:
            request.span.add_event(
                "llm_router.fallback",
                {"from_provider": from_provider, "to_provider": to_provider, "reason": reason},
            )

    # -- metrics ----------------------------------------------------------------------------

    def _record(self, end: AttemptEnd) -> None:
        if end.latency is not None:
            error = end.kind or end.outcome if end.outcome != "succeeded" else None
            key = (end.provider, end.model, error)
            attrs = self._duration_attrs.get(key)
            if attrs is None:
                attrs = self._duration_attrs[key] = _attributes(end.provider, end.model)
                if error is not None:
                    attrs["error.type"] = error
            self.duration.record(end.latency, attrs)
        if end.input_tokens or end.output_tokens:
            pair = self._token_attrs.get((end.provider, end.model))
            if pair is None:
                base = _attributes(end.provider, end.model)
                pair = self._token_attrs[end.provider, end.model] = (
                    {**base, "gen_ai.token.type": "input"},
                    {**base, "gen_ai.token.type": "output"},
                )
            self.tokens.record(end.input_tokens, pair[0])
            self.tokens.record(end.output_tokens, pair[1])

    def breaker_changed(self, transition: BreakerTransition) -> None:
        self._breakers[transition.name] = transition.to_state.value

    def _breaker_state(self, provider: str) -> str | None:
        """Read once per provider from the router; the transitions keep it after that."""
        router = self._router
        state = router.providers.get(provider) if router is not None else None
        if state is None:
            return None
        value = self._breakers[provider] = state.breaker.state.value
        return value

    def __repr__(self) -> str:
        following = "-" if self._router is None else list(self._router.providers)
        return f"OpenTelemetryExporter(providers={following})"


def _attributes(provider: str, model: str) -> dict[str, Any]:
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
    }


def _served(end: AttemptEnd) -> dict[str, Any]:
    """What a succeeded attempt answered, as attributes: never its text."""
    served: dict[str, Any] = {"gen_ai.provider.name": end.provider}
    if end.input_tokens or end.output_tokens:
        served["gen_ai.usage.input_tokens"] = end.input_tokens
        served["gen_ai.usage.output_tokens"] = end.output_tokens
    if end.first_chunk is not None:
        served["gen_ai.response.time_to_first_chunk"] = end.first_chunk
    metadata = getattr(end.message, "response_metadata", None)
    if isinstance(metadata, dict):
        model = metadata.get("model_name") or metadata.get("model")
        if isinstance(model, str):
            served["gen_ai.response.model"] = model
        reason = metadata.get("finish_reason") or metadata.get("stop_reason")
        if isinstance(reason, str):
            served["gen_ai.response.finish_reasons"] = (reason,)
    return served
