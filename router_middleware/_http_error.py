"""What an HTTP error says: the status it carries and how long it asks us to wait.

Provider SDKs and HTTP clients put these on differently named attributes and headers;
they are read by duck typing, so none of them is imported. No reader here raises: the
answer is ``None`` when there is none to give.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Mapping
from datetime import timezone

__all__ = ["attr_or_none", "parse_retry_after", "retry_after_from_error", "status_code_of"]


def attr_or_none(obj: object, name: str) -> object:
    """``getattr(obj, name, None)``, or ``None`` when reading the attribute raises."""
    # Properties on third-party exceptions may raise anything; classifying must not.
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _as_status(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
        return value
    return None


def status_code_of(exc: BaseException) -> int | None:
    """The HTTP status an error carries, or ``None``.

    Looks at ``status_code``, ``status``, ``http_status``, ``response.status_code`` and an
    integer ``code``, in that order; only integers in 100..599 count.

    Example:
        >>> class HTTPStatusError(Exception):
        ...     status = "UNAVAILABLE"
        ...     code = 503
        >>> status_code_of(HTTPStatusError())
        503
    """
    for name in ("status_code", "status", "http_status"):
        status = _as_status(attr_or_none(exc, name))
        if status is not None:
            return status
    status = _as_status(attr_or_none(attr_or_none(exc, "response"), "status_code"))
    if status is not None:
        return status
    return _as_status(attr_or_none(exc, "code"))


def parse_retry_after(value: object, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` if it makes no sense.

    Accepts delta-seconds (floats tolerated) or an HTTP-date, which is measured against
    the wall clock ``now`` and clamped at 0 once past. Negative or non-finite numbers and
    anything unparsable give ``None``; this never raises.

    Example:
        >>> parse_retry_after("1.5"), parse_retry_after("soon")
        (1.5, None)
        >>> parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT", now=lambda: 4.0)
        6.0
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        try:
            seconds = float(value.strip())
        except ValueError:
            return _seconds_until_http_date(value, now)
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _seconds_until_http_date(value: str, now: Callable[[], float]) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except Exception:
        return None
    if when.tzinfo is None:
        # RFC 9110 dates are GMT; email.utils leaves "-0000" naive.
        when = when.replace(tzinfo=timezone.utc)
    try:
        return max(0.0, when.timestamp() - float(now()))
    except Exception:
        return None


def _header(headers: object, name: str) -> object:
    # ``name`` is lowercase. httpx/requests/aiohttp headers are case-insensitive, a
    # plain dict is not: try a direct get, then scan (headers are few, failures rare).
    try:
        if isinstance(headers, Mapping):
            found = headers.get(name)
            if found is None:
                for key, value in headers.items():
                    text = key.decode("latin-1") if isinstance(key, bytes) else key
                    if isinstance(text, str) and text.lower() == name:
                        return value
            return found
        get = attr_or_none(headers, "get")
        return get(name) if callable(get) else None
    except Exception:
        return None


def _retry_after_from_headers(headers: object) -> float | None:
    millis = parse_retry_after(_header(headers, "retry-after-ms"))
    if millis is not None:
        return millis / 1000
    return parse_retry_after(_header(headers, "retry-after"))


def retry_after_from_error(exc: BaseException) -> float | None:
    """Seconds an error asks us to wait: ``exc.retry_after``, else its response headers.

    Headers come from ``exc.response.headers`` or ``exc.headers``; ``retry-after-ms``
    (OpenAI's, more precise) wins over ``retry-after``. Never raises.

    Example:
        >>> class RateLimitError(Exception):
        ...     headers = {"retry-after-ms": "250", "retry-after": "1"}
        >>> retry_after_from_error(RateLimitError())
        0.25
    """
    direct = attr_or_none(exc, "retry_after")
    if isinstance(direct, (int, float)):
        seconds = parse_retry_after(direct)
        if seconds is not None:
            return seconds
    for headers in (
        attr_or_none(attr_or_none(exc, "response"), "headers"),
        attr_or_none(exc, "headers"),
    ):
        if headers is not None:
            seconds = _retry_after_from_headers(headers)
            if seconds is not None:
                return seconds
    return None
