"""Exceptions shaped like the SDKs' (openai/anthropic via httpx, httpx itself, LiteLLM,
google-genai, LangGraph, langchain integrations); only names and attributes matter."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from langchain_core.exceptions import ContextOverflowError, ModelError, ModelRateLimitError


class Headers(Mapping[str, str]):
    """Case-insensitive like httpx.Headers / requests' CaseInsensitiveDict."""

    def __init__(self, items: Mapping[str, str] | None = None) -> None:
        self._items = {k.lower(): v for k, v in (items or {}).items()}

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


class Response:
    def __init__(self, status_code: int, headers: Mapping[str, str] | None = None) -> None:
        self.status_code = status_code
        self.headers = Headers(headers)


class APIError(Exception):
    """openai.APIError: ``code``/``type`` are lifted from the body when it is a dict."""

    def __init__(self, message: str, *, body: object = None) -> None:
        super().__init__(message)
        self.message = message
        self.body = body
        fields = body if isinstance(body, dict) else {}
        self.code = fields.get("code")
        self.type = fields.get("type")


class APIStatusError(APIError):
    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        headers: Mapping[str, str] | None = None,
        body: object = None,
    ) -> None:
        super().__init__(message, body=body)
        self.response = Response(status_code, headers)
        self.status_code = status_code


class BadRequestError(APIStatusError):
    pass


class RateLimitError(APIStatusError):
    pass


class APIConnectionError(APIError):
    def __init__(self, message: str = "Connection error.") -> None:
        super().__init__(message)


class APITimeoutError(APIConnectionError):
    def __init__(self) -> None:
        super().__init__("Request timed out.")


def openai_error(
    status: int, code: str | None = None, type_: str = "invalid_request_error", **kw: Any
) -> APIStatusError:
    body = {"message": kw.pop("message", f"Error code: {status}"), "type": type_, "code": code}
    return APIStatusError(body["message"], status_code=status, body=body, **kw)


class AnthropicStatusError(Exception):
    """anthropic.APIStatusError: the whole JSON body, kind in ``body['error']['type']``."""

    def __init__(self, status_code: int, error_type: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.response = Response(status_code)
        self.body = {"type": "error", "error": {"type": error_type, "message": message}}


# httpx's exception tree
class HTTPError(Exception):
    pass


class TransportError(HTTPError):
    pass


class TimeoutException(TransportError):
    pass


class ReadTimeout(TimeoutException):
    pass


class ConnectTimeout(TimeoutException):
    pass


class NetworkError(TransportError):
    pass


class ConnectError(NetworkError):
    pass


class ProtocolError(TransportError):
    pass


class RemoteProtocolError(ProtocolError):
    pass


class HTTPStatusError(HTTPError):
    def __init__(self, status_code: int, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(f"Server error '{status_code}'")
        self.response = Response(status_code, headers)


# LiteLLM: openai-shaped, with a status on every class
class LiteLLMBadRequestError(BadRequestError):
    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=400)


class ContextWindowExceededError(LiteLLMBadRequestError):
    pass


class ContentPolicyViolationError(LiteLLMBadRequestError):
    pass


class Timeout(APITimeoutError):
    def __init__(self) -> None:
        super().__init__()
        self.status_code = 408


# google-genai: ``code`` is the HTTP status, ``status`` the gRPC name
class ClientError(Exception):
    def __init__(self, code: int, status: str) -> None:
        super().__init__(f"{code} {status}")
        self.code = code
        self.status = status


# LangGraph control flow
class GraphBubbleUp(Exception):
    pass


class GraphInterrupt(GraphBubbleUp):
    pass


class NodeInterrupt(GraphInterrupt):
    pass


class ParentCommand(GraphBubbleUp):
    pass


# langchain integrations: an SDK error that is also a ModelError
class OpenAIContextOverflowError(BadRequestError, ContextOverflowError):
    pass


class OpenAIRateLimitModelError(RateLimitError, ModelRateLimitError):
    pass


class RetryableCustomModelError(ModelError):
    is_retryable = True


class OtherCustomModelError(ModelError):
    pass
