"""What kind of failure is this? The rules that give one :class:`ErrorKind` per failed call.

The router never inspects exceptions itself: it asks a classifier, then reads the
kind's :class:`ErrorPolicy` (retry the same provider? fail over? count it against the
circuit breaker?). Provider SDKs are detected by duck typing (the status and
``Retry-After`` as ``_http_error`` reads them, error codes in ``body``) and by class
names in the MRO, so neither ``httpx`` nor ``openai`` is imported. The kinds and
:class:`Classification` live in ``_classification``; they are re-exported here, where
the router takes them from along with the classifiers.

Example:
    >>> class RateLimitError(Exception):
    ...     status_code = 429
    ...     headers = {"Retry-After": "2"}
    >>> c = default_classifier(RateLimitError("slow down"))
    >>> c.kind, c.retry_after, c.status, c.policy.failover
    (<ErrorKind.RATE_LIMITED: 'rate_limited'>, 2.0, 429, True)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Final

import langchain_core.exceptions as _lc_exceptions

from ._classification import POLICIES, Classification, ErrorClassifier, ErrorKind
from ._errors import (
    IncompleteStreamError,
    InvalidProviderOutputError,
    InvalidStructuredOutputError,
    PartialStreamError,
    ProviderError,
    ProviderTimeoutError,
    RouterError,
)
from ._http_error import attr_or_none, retry_after_from_error, status_code_of

__all__ = [
    "Classification",
    "ErrorClassifier",
    "ErrorKind",
    "chain_classifiers",
    "default_classifier",
]


# Shared instances: most failures carry neither a status nor a Retry-After.
_PLAIN: Final[Mapping[ErrorKind, Classification]] = MappingProxyType(
    {kind: Classification(kind) for kind in ErrorKind}
)


def _index(groups: Mapping[ErrorKind, str]) -> Mapping[str, ErrorKind]:
    return MappingProxyType({n: kind for kind, names in groups.items() for n in names.split()})


# Class names matched anywhere in the MRO. LangGraph's control-flow signals must reach
# LangGraph untouched; LiteLLM names two kinds its status (400) would hide.
_NAMED: Final = _index(
    {
        ErrorKind.NOT_PROVIDER: "GraphBubbleUp GraphInterrupt NodeInterrupt ParentCommand",
        ErrorKind.CONTEXT_LENGTH: "ContextWindowExceededError",
        ErrorKind.CONTENT_POLICY: "ContentPolicyViolationError",
        ErrorKind.TIMEOUT: "TimeoutException Timeout",
        ErrorKind.TRANSIENT: "APIConnectionError ConnectError RemoteProtocolError ProtocolError"
        " ReadError WriteError NetworkError TransportError ServerDisconnectedError"
        " ClientConnectionError ChunkedEncodingError IncompleteRead",
    }
)
_DECISIVE_NAMES: Final = frozenset(
    {ErrorKind.NOT_PROVIDER, ErrorKind.CONTEXT_LENGTH, ErrorKind.CONTENT_POLICY}
)

# Error codes and types as OpenAI (``code``), Anthropic (``error.type``) and Azure send
# them. "insufficient_quota" is a 429 that no amount of waiting fixes.
_LABELS: Final = _index(
    {
        ErrorKind.RATE_LIMITED: "rate_limit_exceeded rate_limit_error rate_limited"
        " too_many_requests",
        ErrorKind.MISCONFIGURED: "insufficient_quota billing_hard_limit_reached"
        " billing_not_active billing_error invalid_api_key authentication_error"
        " permission_error permission_denied not_found_error model_not_found",
        ErrorKind.CONTEXT_LENGTH: "context_length_exceeded context_window_exceeded",
        ErrorKind.CONTENT_POLICY: "content_policy_violation content_filter content_policy"
        " moderation_blocked",
        ErrorKind.INVALID_REQUEST: "invalid_request_error",
        ErrorKind.TRANSIENT: "overloaded_error api_error server_error service_unavailable",
    }
)

_CONTEXT_MESSAGE = re.compile(
    r"context[ _]length[ _]exceeded|maximum context length|context window"
    r"|prompt is too long|input is too long|too many input tokens",
    re.IGNORECASE,
)
_CONTENT_MESSAGE = re.compile(
    r"content[ _]policy|content[ _]filter|content management policy"
    r"|safety (?:system|filter|settings)|blocked due to safety|flagged as potentially violating",
    re.IGNORECASE,
)

_TIMEOUT_TYPES: Final = (TimeoutError, asyncio.TimeoutError, concurrent.futures.TimeoutError)

# Bugs in the caller's code: failing over would only repeat them on every provider.
_BUG_TYPES: Final = (
    TypeError,
    AttributeError,
    NameError,
    LookupError,
    AssertionError,
    NotImplementedError,
    ArithmeticError,
    ImportError,
    RecursionError,
    SyntaxError,
    MemoryError,
    StopIteration,
    StopAsyncIteration,
)


def _lc_class(name: str) -> type[BaseException] | None:
    # The ModelError family arrived in langchain-core 1.7 (ModelRefusalError in 1.7.5);
    # older releases satisfy our ">=1.0" pin, so look the classes up instead of importing.
    cls = getattr(_lc_exceptions, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, BaseException) else None


def _model_error_table() -> tuple[tuple[type[BaseException], ErrorKind], ...]:
    # Most specific first: integrations multiply-inherit (e.g. a BadRequestError that is
    # also a ContextOverflowError), and a subclass may later derive from a sibling.
    wanted = (
        ("ContextOverflowError", ErrorKind.CONTEXT_LENGTH),
        ("ModelRefusalError", ErrorKind.CONTENT_POLICY),
        ("ModelRateLimitError", ErrorKind.RATE_LIMITED),
        ("ModelTimeoutError", ErrorKind.TIMEOUT),
        ("ModelAuthenticationError", ErrorKind.MISCONFIGURED),
        ("ModelPermissionDeniedError", ErrorKind.MISCONFIGURED),
        ("ModelNotFoundError", ErrorKind.MISCONFIGURED),
        ("ModelInvalidRequestError", ErrorKind.INVALID_REQUEST),
        ("ModelAPIError", ErrorKind.TRANSIENT),
        ("ModelConnectionError", ErrorKind.TRANSIENT),
    )
    return tuple((cls, kind) for name, kind in wanted if (cls := _lc_class(name)) is not None)


_MODEL_ERROR: Final = _lc_class("ModelError")
_MODEL_ERRORS: Final = _model_error_table()


def _named_kind(exc: BaseException) -> ErrorKind | None:
    for cls in type(exc).__mro__:
        name = cls.__name__
        kind = _NAMED.get(name)
        if kind is not None:
            return kind
        if name.endswith(("Timeout", "TimeoutError")):
            return ErrorKind.TIMEOUT
    return None


def _labels(exc: BaseException, field: str) -> Iterator[object]:
    yield attr_or_none(exc, field)
    body = attr_or_none(exc, "body")
    if isinstance(body, Mapping):
        yield body.get(field)
        inner = body.get("error")
        if isinstance(inner, Mapping):
            yield inner.get(field)


def _label_kind(exc: BaseException, field: str) -> ErrorKind | None:
    try:
        for label in _labels(exc, field):
            if isinstance(label, str):
                kind = _LABELS.get(label.lower())
                if kind is not None:
                    return kind
    except Exception:
        return None
    return None


def _model_error_kind(exc: BaseException) -> ErrorKind:
    for cls, kind in _MODEL_ERRORS:
        if isinstance(exc, cls):
            return kind
    # An unknown ModelError: without retry, failing over without blaming the provider
    # is the cautious reading.
    return (
        ErrorKind.TRANSIENT
        if attr_or_none(exc, "is_retryable") is True
        else ErrorKind.INVALID_REQUEST
    )


def _status_kind(status: int) -> ErrorKind | None:
    if status >= 500:
        return ErrorKind.TRANSIENT
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status == 408:
        return ErrorKind.TIMEOUT
    if status in (401, 402, 403, 404):
        return ErrorKind.MISCONFIGURED
    if status == 409:
        # A conflict (e.g. a lock held upstream) clears on its own; OpenAI's SDK retries it.
        return ErrorKind.TRANSIENT
    if status >= 400:
        return ErrorKind.INVALID_REQUEST
    return None


def _message_kind(exc: BaseException) -> ErrorKind | None:
    try:
        text = str(exc)
    except Exception:
        return None
    if _CONTEXT_MESSAGE.search(text):
        return ErrorKind.CONTEXT_LENGTH
    if _CONTENT_MESSAGE.search(text):
        return ErrorKind.CONTENT_POLICY
    return None


def _router_error_kind(exc: RouterError) -> ErrorKind:
    if isinstance(exc, ProviderTimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, PartialStreamError):
        # A continuation that diverged, or a nested router's stream it could not finish:
        # its text already reached the reader, so no other provider may take over.
        return ErrorKind.NOT_PROVIDER
    if isinstance(exc, IncompleteStreamError):
        return ErrorKind.TRANSIENT
    if isinstance(exc, InvalidStructuredOutputError):
        return ErrorKind.INVALID_OUTPUT
    if isinstance(exc, ProviderError) and not isinstance(exc, InvalidProviderOutputError):
        return ErrorKind.TRANSIENT
    # Our own verdicts (no provider, bad input, bad config, nested router giving up)
    # are answers for the caller, not failures of one provider.
    return ErrorKind.NOT_PROVIDER


def _kind_and_status(exc: BaseException) -> tuple[ErrorKind, int | None]:
    if not isinstance(exc, Exception):
        return ErrorKind.NOT_PROVIDER, None
    named = _named_kind(exc)
    if named is not None and named in _DECISIVE_NAMES:
        return named, None
    if isinstance(exc, RouterError):
        return _router_error_kind(exc), None
    status = status_code_of(exc)
    # Explicit error codes beat everything else: "insufficient_quota" comes as a 429
    # (and may be a ModelRateLimitError), "context_length_exceeded" as a plain 400.
    kind = _label_kind(exc, "code")
    if kind is None and _MODEL_ERROR is not None and isinstance(exc, _MODEL_ERROR):
        kind = _model_error_kind(exc)
    if kind is None and status is not None:
        kind = _status_kind(status)
    if kind is None:
        # Types are coarser than codes; Anthropic mid-stream errors carry status 200.
        kind = _label_kind(exc, "type")
    if kind is None and isinstance(exc, _BUG_TYPES):
        return ErrorKind.NOT_PROVIDER, status
    if kind is None or kind is ErrorKind.INVALID_REQUEST:
        # Anthropic says "prompt is too long" in a 400; some integrations raise a
        # ValueError about the context window.
        kind = _message_kind(exc) or kind
    if kind is None:
        kind = named
    if kind is None:
        if isinstance(exc, _TIMEOUT_TYPES):
            kind = ErrorKind.TIMEOUT
        elif isinstance(exc, ValueError):
            kind = ErrorKind.NOT_PROVIDER
        else:
            # ConnectionError, OSError, RuntimeError, a handler's bare Exception: the
            # provider may well answer next time.
            kind = ErrorKind.TRANSIENT
    return kind, status


def default_classifier(exc: BaseException) -> Classification:
    """Classify any exception; never raises, never returns ``None``.

    Example:
        >>> default_classifier(KeyboardInterrupt()).kind
        <ErrorKind.NOT_PROVIDER: 'not_provider'>
        >>> default_classifier(Exception("Simulated failure")).kind
        <ErrorKind.TRANSIENT: 'transient'>
    """
    kind, status = _kind_and_status(exc)
    retry_after = retry_after_from_error(exc) if POLICIES[kind].retry else None
    if status is None and retry_after is None:
        return _PLAIN[kind]
    return Classification(kind, retry_after, status)


class _ChainedClassifier:
    __slots__ = ("_classifiers",)

    def __init__(self, classifiers: tuple[ErrorClassifier, ...]) -> None:
        self._classifiers = classifiers

    def __call__(self, exc: BaseException) -> Classification:
        for classify in self._classifiers:
            found = classify(exc)
            if found is not None:
                return found
        return default_classifier(exc)

    def __repr__(self) -> str:
        names = ", ".join(getattr(c, "__qualname__", repr(c)) for c in self._classifiers)
        return f"chain_classifiers({names})"


def chain_classifiers(*classifiers: ErrorClassifier) -> Callable[[BaseException], Classification]:
    """Ask each classifier in turn; the first non-``None`` answer wins, else the default.

    A classifier that raises is a bug in it: the error propagates.

    Example:
        >>> def teapot(exc):
        ...     return Classification(ErrorKind.MISCONFIGURED) if "teapot" in str(exc) else None
        >>> classify = chain_classifiers(teapot)
        >>> classify(Exception("I'm a teapot")).kind, classify(Exception("boom")).kind
        (<ErrorKind.MISCONFIGURED: 'misconfigured'>, <ErrorKind.TRANSIENT: 'transient'>)
    """
    return _ChainedClassifier(classifiers)
