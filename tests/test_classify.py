"""The default classifier's rules, the policy table, and chaining classifiers."""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.message
import urllib.error
from collections.abc import Callable

import pytest
from langchain_core.exceptions import (
    ContextOverflowError,
    ModelAPIError,
    ModelAuthenticationError,
    ModelConnectionError,
    ModelInvalidRequestError,
    ModelNotFoundError,
    ModelPermissionDeniedError,
    ModelRateLimitError,
    ModelRefusalError,
    ModelTimeoutError,
    OutputParserException,
)
from pydantic import ValidationError

from router_middleware._classification import POLICIES, Classification, ErrorKind, ErrorPolicy
from router_middleware._classify import chain_classifiers, default_classifier
from router_middleware._config import RetryConfig
from router_middleware._errors import (
    AllProvidersFailedError,
    ConfigurationError,
    DeadlineExceededError,
    IncompleteStreamError,
    InvalidInputError,
    InvalidProviderOutputError,
    NoProviderAvailableError,
    NoProviderForModelError,
    ProviderTimeoutError,
)

from .sdk_fakes import (
    AnthropicStatusError,
    APIConnectionError,
    APIError,
    APIStatusError,
    APITimeoutError,
    ClientError,
    ConnectError,
    ConnectTimeout,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    GraphBubbleUp,
    GraphInterrupt,
    HTTPStatusError,
    NodeInterrupt,
    OpenAIContextOverflowError,
    OpenAIRateLimitModelError,
    OtherCustomModelError,
    ParentCommand,
    RateLimitError,
    ReadTimeout,
    RemoteProtocolError,
    RetryableCustomModelError,
    Timeout,
    TimeoutException,
    openai_error,
)

K = ErrorKind


def validation_error() -> ValidationError:
    try:
        RetryConfig(attempts=0)
    except ValidationError as exc:
        return exc
    raise AssertionError("RetryConfig(attempts=0) validated")


CASES: list[tuple[str, Callable[[], BaseException], ErrorKind]] = [
    # TRANSIENT
    ("500", lambda: openai_error(500, type_="server_error"), K.TRANSIENT),
    ("502 httpx", lambda: HTTPStatusError(502), K.TRANSIENT),
    ("503", lambda: APIStatusError("unavailable", status_code=503), K.TRANSIENT),
    ("504 is 5xx not timeout", lambda: APIStatusError("gateway", status_code=504), K.TRANSIENT),
    ("529 overloaded", lambda: AnthropicStatusError(529, "overloaded_error", "x"), K.TRANSIENT),
    ("409 conflict", lambda: APIStatusError("conflict", status_code=409), K.TRANSIENT),
    (
        "anthropic mid-stream",
        lambda: AnthropicStatusError(200, "overloaded_error", "x"),
        K.TRANSIENT,
    ),
    ("ModelAPIError", lambda: ModelAPIError("boom"), K.TRANSIENT),
    ("ModelConnectionError", lambda: ModelConnectionError("down"), K.TRANSIENT),
    ("ModelError retryable", lambda: RetryableCustomModelError("x"), K.TRANSIENT),
    ("APIConnectionError", lambda: APIConnectionError(), K.TRANSIENT),
    ("httpx ConnectError", lambda: ConnectError("refused"), K.TRANSIENT),
    ("httpx RemoteProtocolError", lambda: RemoteProtocolError("peer closed"), K.TRANSIENT),
    ("ConnectionResetError", lambda: ConnectionResetError(104, "reset"), K.TRANSIENT),
    ("ConnectionRefusedError", lambda: ConnectionRefusedError(111, "refused"), K.TRANSIENT),
    ("BrokenPipeError", lambda: BrokenPipeError(), K.TRANSIENT),
    ("IncompleteStreamError", lambda: IncompleteStreamError("p", "ended early"), K.TRANSIENT),
    ("seed handler", lambda: Exception("Simulated failure"), K.TRANSIENT),
    ("RuntimeError", lambda: RuntimeError("flaky"), K.TRANSIENT),
    ("OSError", lambda: OSError("io"), K.TRANSIENT),
    # RATE_LIMITED
    ("429", lambda: RateLimitError("slow", status_code=429), K.RATE_LIMITED),
    ("ModelRateLimitError", lambda: ModelRateLimitError("slow"), K.RATE_LIMITED),
    (
        "code without status",
        lambda: APIError("x", body={"code": "rate_limit_exceeded"}),
        K.RATE_LIMITED,
    ),
    ("anthropic 429", lambda: AnthropicStatusError(429, "rate_limit_error", "x"), K.RATE_LIMITED),
    ("genai 429", lambda: ClientError(429, "RESOURCE_EXHAUSTED"), K.RATE_LIMITED),
    # TIMEOUT
    ("ProviderTimeoutError", lambda: ProviderTimeoutError("p", "attempt", 5), K.TIMEOUT),
    ("TimeoutError", lambda: TimeoutError(), K.TIMEOUT),
    ("asyncio.TimeoutError", lambda: asyncio.TimeoutError(), K.TIMEOUT),
    ("futures.TimeoutError", lambda: concurrent.futures.TimeoutError(), K.TIMEOUT),
    ("ModelTimeoutError", lambda: ModelTimeoutError("slow"), K.TIMEOUT),
    ("408", lambda: APIStatusError("timeout", status_code=408), K.TIMEOUT),
    ("httpx ReadTimeout", lambda: ReadTimeout("read"), K.TIMEOUT),
    ("httpx ConnectTimeout", lambda: ConnectTimeout("connect"), K.TIMEOUT),
    ("httpx TimeoutException", lambda: TimeoutException("t"), K.TIMEOUT),
    ("openai APITimeoutError", lambda: APITimeoutError(), K.TIMEOUT),
    ("litellm Timeout", lambda: Timeout(), K.TIMEOUT),
    # MISCONFIGURED
    ("401", lambda: openai_error(401, "invalid_api_key"), K.MISCONFIGURED),
    ("402", lambda: APIStatusError("pay", status_code=402), K.MISCONFIGURED),
    ("403", lambda: AnthropicStatusError(403, "permission_error", "no"), K.MISCONFIGURED),
    ("404", lambda: openai_error(404, "model_not_found"), K.MISCONFIGURED),
    ("404 plain", lambda: HTTPStatusError(404), K.MISCONFIGURED),
    ("ModelAuthenticationError", lambda: ModelAuthenticationError("key"), K.MISCONFIGURED),
    ("ModelPermissionDeniedError", lambda: ModelPermissionDeniedError("no"), K.MISCONFIGURED),
    ("ModelNotFoundError", lambda: ModelNotFoundError("gone"), K.MISCONFIGURED),
    (
        "insufficient_quota 429",
        lambda: openai_error(429, "insufficient_quota", type_="insufficient_quota"),
        K.MISCONFIGURED,
    ),
    (
        "insufficient_quota ModelRateLimitError",
        lambda: OpenAIRateLimitModelError(
            "quota", status_code=429, body={"code": "insufficient_quota"}
        ),
        K.MISCONFIGURED,
    ),
    (
        "billing code nested",
        lambda: APIStatusError(
            "x", status_code=429, body={"error": {"code": "billing_hard_limit_reached"}}
        ),
        K.MISCONFIGURED,
    ),
    # CONTEXT_LENGTH
    ("ContextOverflowError", lambda: ContextOverflowError("too long"), K.CONTEXT_LENGTH),
    (
        "ContextOverflow + 400",
        lambda: OpenAIContextOverflowError("x", status_code=400),
        K.CONTEXT_LENGTH,
    ),
    ("openai code", lambda: openai_error(400, "context_length_exceeded"), K.CONTEXT_LENGTH),
    (
        "openai nested code",
        lambda: APIStatusError(
            "x", status_code=400, body={"error": {"code": "context_length_exceeded"}}
        ),
        K.CONTEXT_LENGTH,
    ),
    (
        "anthropic message",
        lambda: AnthropicStatusError(
            400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
        ),
        K.CONTEXT_LENGTH,
    ),
    (
        "openai message only",
        lambda: openai_error(
            400,
            message="This model's maximum context length is 8192 tokens, you requested 9000",
        ),
        K.CONTEXT_LENGTH,
    ),
    (
        "ValueError from an integration",
        lambda: ValueError("Input exceeds the context window of this model"),
        K.CONTEXT_LENGTH,
    ),
    (
        "ModelInvalidRequestError message",
        lambda: ModelInvalidRequestError("prompt is too long"),
        K.CONTEXT_LENGTH,
    ),
    ("litellm ContextWindowExceeded", lambda: ContextWindowExceededError("x"), K.CONTEXT_LENGTH),
    # INVALID_REQUEST
    ("400", lambda: openai_error(400, "invalid_value"), K.INVALID_REQUEST),
    ("422", lambda: APIStatusError("unprocessable", status_code=422), K.INVALID_REQUEST),
    ("413", lambda: AnthropicStatusError(413, "request_too_large", "big"), K.INVALID_REQUEST),
    ("ModelInvalidRequestError", lambda: ModelInvalidRequestError("bad"), K.INVALID_REQUEST),
    ("ModelError not retryable", lambda: OtherCustomModelError("x"), K.INVALID_REQUEST),
    (
        "ValueError with 400",
        lambda: type("BadInput", (ValueError,), {"status_code": 400})(),
        K.INVALID_REQUEST,
    ),
    (
        "mid-stream invalid",
        lambda: AnthropicStatusError(200, "invalid_request_error", "x"),
        K.INVALID_REQUEST,
    ),
    # CONTENT_POLICY
    ("ModelRefusalError", lambda: ModelRefusalError(), K.CONTENT_POLICY),
    (
        "code content_policy_violation",
        lambda: openai_error(400, "content_policy_violation"),
        K.CONTENT_POLICY,
    ),
    ("azure content_filter", lambda: openai_error(400, "content_filter"), K.CONTENT_POLICY),
    (
        "safety message",
        lambda: openai_error(
            400, message="Your request was rejected as a result of our safety system."
        ),
        K.CONTENT_POLICY,
    ),
    ("litellm ContentPolicyViolation", lambda: ContentPolicyViolationError("x"), K.CONTENT_POLICY),
    # NOT_PROVIDER: bugs
    ("TypeError", lambda: TypeError("x"), K.NOT_PROVIDER),
    ("AttributeError", lambda: AttributeError("x"), K.NOT_PROVIDER),
    ("NameError", lambda: NameError("x"), K.NOT_PROVIDER),
    ("KeyError", lambda: KeyError("x"), K.NOT_PROVIDER),
    ("IndexError", lambda: IndexError("x"), K.NOT_PROVIDER),
    ("ValueError", lambda: ValueError("bad literal"), K.NOT_PROVIDER),
    ("AssertionError", lambda: AssertionError(), K.NOT_PROVIDER),
    ("NotImplementedError", lambda: NotImplementedError(), K.NOT_PROVIDER),
    ("ZeroDivisionError", lambda: ZeroDivisionError(), K.NOT_PROVIDER),
    ("ModuleNotFoundError", lambda: ModuleNotFoundError("x"), K.NOT_PROVIDER),
    ("RecursionError", lambda: RecursionError(), K.NOT_PROVIDER),
    ("pydantic ValidationError", validation_error, K.NOT_PROVIDER),
    ("OutputParserException", lambda: OutputParserException("unparsable"), K.NOT_PROVIDER),
    ("KeyError mentioning context", lambda: KeyError("maximum context length"), K.NOT_PROVIDER),
    # NOT_PROVIDER: the router's own verdicts
    ("ConfigurationError", lambda: ConfigurationError("bad"), K.NOT_PROVIDER),
    ("InvalidInputError", lambda: InvalidInputError("bad"), K.NOT_PROVIDER),
    ("InvalidProviderOutputError", lambda: InvalidProviderOutputError("p", "x"), K.NOT_PROVIDER),
    ("NoProviderForModelError", lambda: NoProviderForModelError("m"), K.NOT_PROVIDER),
    ("NoProviderAvailableError", lambda: NoProviderAvailableError("m", {}), K.NOT_PROVIDER),
    ("AllProvidersFailedError", lambda: AllProvidersFailedError("m", {}), K.NOT_PROVIDER),
    (
        "DeadlineExceededError is not a timeout",
        lambda: DeadlineExceededError("m", {}, 3, "deadline 1s"),
        K.NOT_PROVIDER,
    ),
    # NOT_PROVIDER: not Exceptions, and LangGraph signals
    ("KeyboardInterrupt", lambda: KeyboardInterrupt(), K.NOT_PROVIDER),
    ("SystemExit", lambda: SystemExit(1), K.NOT_PROVIDER),
    ("GeneratorExit", lambda: GeneratorExit(), K.NOT_PROVIDER),
    ("CancelledError", lambda: asyncio.CancelledError(), K.NOT_PROVIDER),
    ("GraphBubbleUp", lambda: GraphBubbleUp(), K.NOT_PROVIDER),
    ("GraphInterrupt", lambda: GraphInterrupt(), K.NOT_PROVIDER),
    ("NodeInterrupt", lambda: NodeInterrupt("stop"), K.NOT_PROVIDER),
    ("ParentCommand", lambda: ParentCommand(), K.NOT_PROVIDER),
    (
        "GraphInterrupt beats a status",
        lambda: type("GraphInterrupt", (Exception,), {"status_code": 503})(),
        K.NOT_PROVIDER,
    ),
]


@pytest.mark.parametrize(("make", "kind"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_default_classifier_kinds(make: Callable[[], BaseException], kind: ErrorKind) -> None:
    assert default_classifier(make()).kind is kind


def test_policy_table() -> None:
    p = ErrorPolicy
    assert dict(POLICIES) == {
        K.TRANSIENT: p(retry=True, failover=True, counts_for_breaker=True),
        K.RATE_LIMITED: p(retry=True, failover=True, counts_for_breaker=False),
        K.TIMEOUT: p(retry=False, failover=True, counts_for_breaker=True),
        K.MISCONFIGURED: p(retry=False, failover=True, counts_for_breaker=True),
        K.CONTEXT_LENGTH: p(retry=False, failover=True, counts_for_breaker=False),
        K.INVALID_REQUEST: p(retry=False, failover=True, counts_for_breaker=False),
        K.CONTENT_POLICY: p(retry=False, failover=False, counts_for_breaker=False),
        K.INVALID_OUTPUT: p(retry=False, failover=True, counts_for_breaker=True),
        K.NOT_PROVIDER: p(retry=False, failover=False, counts_for_breaker=False),
    }
    with pytest.raises(TypeError):
        POLICIES[K.TRANSIENT] = p(retry=False, failover=False, counts_for_breaker=False)  # type: ignore[index]


def test_classification_carries_status_retry_after_and_policy() -> None:
    exc = RateLimitError("slow", status_code=429, headers={"Retry-After": "3"})
    c = default_classifier(exc)
    assert c == Classification(K.RATE_LIMITED, retry_after=3.0, status=429)
    assert c.policy is POLICIES[K.RATE_LIMITED]
    assert default_classifier(Exception("x")) == Classification(K.TRANSIENT)


def test_retry_after_read_for_transient_but_not_for_kinds_that_never_retry() -> None:
    unavailable = APIStatusError("down", status_code=503, headers={"retry-after": "7"})
    assert default_classifier(unavailable).retry_after == 7.0
    unauthorized = APIStatusError("key", status_code=401, headers={"retry-after": "7"})
    assert default_classifier(unauthorized) == Classification(K.MISCONFIGURED, status=401)


def test_classifier_survives_hostile_exceptions() -> None:
    class Hostile(Exception):
        @property
        def status_code(self) -> int:
            raise RuntimeError("no status")

        @property
        def body(self) -> dict[str, str]:
            raise RuntimeError("no body")

        @property
        def response(self) -> object:
            raise RuntimeError("no response")

        def __str__(self) -> str:
            raise RuntimeError("no message")

    assert default_classifier(Hostile()) == Classification(K.TRANSIENT)


# --- a standard-library HTTP error, end to end


def test_urllib_http_error_status_and_retry_after() -> None:
    headers = email.message.Message()
    headers["Retry-After"] = "4"
    exc = urllib.error.HTTPError("https://api.example", 429, "Too Many Requests", headers, None)
    assert default_classifier(exc) == Classification(K.RATE_LIMITED, retry_after=4.0, status=429)


# --- chaining


def test_chain_classifiers_first_answer_wins_then_default() -> None:
    calls: list[str] = []

    def quota(exc: BaseException) -> Classification | None:
        calls.append("quota")
        return Classification(K.MISCONFIGURED) if "quota" in str(exc) else None

    def never(exc: BaseException) -> Classification | None:
        calls.append("never")
        return None

    classify = chain_classifiers(quota, never)
    assert classify(Exception("quota exhausted")).kind is K.MISCONFIGURED
    assert calls == ["quota"]
    calls.clear()
    assert classify(RateLimitError("slow", status_code=429)).kind is K.RATE_LIMITED
    assert calls == ["quota", "never"]
    assert "quota" in repr(classify)
    assert "never" in repr(classify)


def test_chain_classifiers_without_classifiers_is_the_default() -> None:
    classify = chain_classifiers()
    assert classify(KeyboardInterrupt()).kind is K.NOT_PROVIDER
    assert classify(APIStatusError("x", status_code=503)) == Classification(K.TRANSIENT, status=503)


def test_real_httpx_objects_if_installed() -> None:
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("POST", "https://api.example/v1/chat")
    response = httpx.Response(429, headers={"Retry-After": "2"}, request=request)
    exc = httpx.HTTPStatusError("429", request=request, response=response)
    assert default_classifier(exc) == Classification(K.RATE_LIMITED, retry_after=2.0, status=429)
    assert default_classifier(httpx.ReadTimeout("slow", request=request)).kind is K.TIMEOUT
    assert default_classifier(httpx.RemoteProtocolError("closed")).kind is K.TRANSIENT
