"""A provider's remaining rate-limit quota, read from the headers of its response.

``ChatOpenAI(include_response_headers=True)`` puts the HTTP headers in
``message.response_metadata["headers"]`` (on the first chunk of a stream, so also on the
summed message). OpenAI and Azure send ``x-ratelimit-*`` headers with Go-style duration
resets; Anthropic's ``anthropic-ratelimit-*`` headers (read from the same place, since
``ChatAnthropic`` exposes no headers itself) reset at RFC 3339 instants. Nothing here
raises: a malformed value leaves its field ``None``.

Example:
    >>> from langchain_core.messages import AIMessage
    >>> headers = {"X-RateLimit-Remaining-Requests": "59", "x-ratelimit-reset-requests": "6m0s"}
    >>> quota_from_message(AIMessage("hi", response_metadata={"headers": headers}))
    ProviderQuota(requests_remaining=59, requests_reset_seconds=360.0)
    >>> quota_from_message(AIMessage("hi")) is None
    True
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.messages import BaseMessage

__all__ = ["ProviderQuota", "quota_from_headers", "quota_from_message"]


@dataclass(frozen=True, slots=True, repr=False)
class ProviderQuota:
    """What a provider says is left, and seconds until each quota resets (``None``: unsaid)."""

    requests_remaining: int | None = None
    requests_reset_seconds: float | None = None
    tokens_remaining: int | None = None
    tokens_reset_seconds: float | None = None
    input_tokens_remaining: int | None = None
    input_tokens_reset_seconds: float | None = None
    output_tokens_remaining: int | None = None
    output_tokens_reset_seconds: float | None = None

    def __repr__(self) -> str:
        # Most providers send two or four of the eight fields: show only those.
        said = (f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"ProviderQuota({', '.join(s for s in said if not s.endswith('=None'))})"


# Go's time.Duration.String() (OpenAI, Azure, Groq): "1h2m3.5s", "6m0s", "20ms", "0.5s".
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0}
_UNIT_SECONDS |= {"m": 60.0, "h": 3600.0}
# Python 3.10's datetime.fromisoformat() takes neither "Z" nor arbitrary fractions.
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(\.\d+)?(?:[Zz]|([+-])(\d\d):?(\d\d))"
)


def _remaining(value: object, now: float) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    try:
        return max(0, int(value))
    except ValueError:
        return None


def _duration(value: object, now: float) -> float | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if _DURATION.fullmatch(text):
        return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))
    try:
        seconds = float(text)
    except ValueError:
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _until_instant(value: object, now: float) -> float | None:
    match = _RFC3339.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        return None
    *date_time, fraction, sign, off_h, off_m = match.groups()
    try:
        offset = timedelta(hours=int(off_h or 0), minutes=int(off_m or 0))
        zone = timezone(-offset if sign == "-" else offset)
        year, month, day, hour, minute, second = map(int, date_time)
        when = datetime(year, month, day, hour, minute, second, tzinfo=zone)
        return max(0.0, when.timestamp() + float(fraction or 0) - now)
    except (ValueError, OverflowError):  # month 13, offset 25:00, a leap second...
        return None


_Parse = Callable[[object, float], float | None]
# Field -> (header, parser); the first header present and parsable wins.
_READERS: dict[str, tuple[tuple[str, _Parse], ...]] = {
    "requests_remaining": (
        ("x-ratelimit-remaining-requests", _remaining),
        ("anthropic-ratelimit-requests-remaining", _remaining),
    ),
    "requests_reset_seconds": (
        ("x-ratelimit-reset-requests", _duration),
        ("anthropic-ratelimit-requests-reset", _until_instant),
    ),
    "tokens_remaining": (
        ("x-ratelimit-remaining-tokens", _remaining),
        ("anthropic-ratelimit-tokens-remaining", _remaining),
    ),
    "tokens_reset_seconds": (
        ("x-ratelimit-reset-tokens", _duration),
        ("anthropic-ratelimit-tokens-reset", _until_instant),
    ),
    "input_tokens_remaining": (("anthropic-ratelimit-input-tokens-remaining", _remaining),),
    "input_tokens_reset_seconds": (("anthropic-ratelimit-input-tokens-reset", _until_instant),),
    "output_tokens_remaining": (("anthropic-ratelimit-output-tokens-remaining", _remaining),),
    "output_tokens_reset_seconds": (("anthropic-ratelimit-output-tokens-reset", _until_instant),),
}


def quota_from_headers(headers: object, *, now: float | None = None) -> ProviderQuota | None:
    """The quota a mapping of HTTP headers states (names in any case), or ``None``.

    ``now`` (epoch seconds, default :func:`time.time`) measures Anthropic's reset instants;
    a reset already past counts as 0. Also fits an error's ``response.headers``.

    Example:
        >>> quota_from_headers({"anthropic-ratelimit-tokens-reset": "1970-01-01T00:01:00Z"},
        ...                    now=45.0)
        ProviderQuota(tokens_reset_seconds=15.0)
    """
    if not isinstance(headers, Mapping):
        return None
    lowered = {k.lower(): v for k, v in headers.items() if isinstance(k, str)}
    clock = time.time() if now is None else now
    found: dict[str, Any] = {}
    for name, readers in _READERS.items():
        for header, parse in readers:
            value = parse(lowered.get(header), clock)
            if value is not None:
                found[name] = value
                break
    return ProviderQuota(**found) if found else None


def quota_from_message(message: BaseMessage, *, now: float | None = None) -> ProviderQuota | None:
    """The quota stated by ``message.response_metadata["headers"]``, or ``None``.

    ``None`` also when no header there parses. See :func:`quota_from_headers` for ``now``.
    """
    headers = message.response_metadata.get("headers")
    return None if headers is None else quota_from_headers(headers, now=now)
