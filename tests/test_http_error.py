"""Reading an HTTP error: the status it carries and the wait its Retry-After asks for."""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router_middleware._http_error import parse_retry_after, retry_after_from_error, status_code_of

from .sdk_fakes import (
    APIError,
    APIStatusError,
    ClientError,
    HTTPStatusError,
    RateLimitError,
    openai_error,
)

# --- status_code_of


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (APIStatusError("x", status_code=429), 429),
        (HTTPStatusError(503), 503),
        (ClientError(404, "NOT_FOUND"), 404),
        (type("E", (Exception,), {"http_status": 502})(), 502),
        (type("E", (Exception,), {"status": 500})(), 500),
        (openai_error(400, "context_length_exceeded"), 400),
        (APIError("x", body={"code": "rate_limit_exceeded"}), None),
        (type("E", (Exception,), {"status_code": True})(), None),
        (type("E", (Exception,), {"status_code": 700, "code": 99})(), None),
        (type("E", (Exception,), {"status_code": "503"})(), None),
        (Exception("x"), None),
    ],
)
def test_status_code_of(exc: BaseException, status: int | None) -> None:
    assert status_code_of(exc) == status


# --- Retry-After


NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("1.5", 1.5),
        (b"2", 2.0),
        (7, 7.0),
        (0, 0.0),
        (2.5, 2.5),
        ("Wed, 01 May 2024 12:00:30 GMT", 30.0),
        ("Wed, 01 May 2024 12:00:30 -0000", 30.0),
        ("Wed, 01 May 2024 14:00:30 +0200", 30.0),
        ("Wed, 01 May 2024 11:59:00 GMT", 0.0),
        ("-1", None),
        (-3, None),
        ("nan", None),
        ("inf", None),
        (float("nan"), None),
        ("", None),
        ("soon", None),
        ("Wed, 99 Foo 2024 99:00:00 GMT", None),
        (True, None),
        (None, None),
        (["3"], None),
    ],
)
def test_parse_retry_after(value: object, seconds: float | None) -> None:
    assert parse_retry_after(value, now=lambda: NOW) == seconds


def test_parse_retry_after_http_date_defaults_to_wall_clock() -> None:
    future = datetime.fromtimestamp(4_000_000_000, tz=timezone.utc)
    seconds = parse_retry_after(format_datetime(future, usegmt=True))
    assert seconds is not None
    assert seconds > 365 * 24 * 3600


def test_retry_after_prefers_milliseconds_header() -> None:
    exc = RateLimitError(
        "slow", status_code=429, headers={"Retry-After-Ms": "1500", "Retry-After": "30"}
    )
    assert retry_after_from_error(exc) == 1.5


def test_retry_after_garbage_ms_falls_back_to_seconds() -> None:
    exc = RateLimitError(
        "slow", status_code=429, headers={"retry-after-ms": "x", "retry-after": "2"}
    )
    assert retry_after_from_error(exc) == 2.0


def test_retry_after_from_plain_dict_is_case_insensitive() -> None:
    class ClientResponseError(Exception):
        headers = {"Retry-After": "6"}  # noqa: RUF012

    assert retry_after_from_error(ClientResponseError()) == 6.0


def test_retry_after_attribute_wins_over_headers() -> None:
    exc = RateLimitError("slow", status_code=429, headers={"retry-after": "30"})
    exc.retry_after = 0.25  # type: ignore[attr-defined]
    assert retry_after_from_error(exc) == 0.25


def test_non_numeric_retry_after_attribute_falls_back_to_headers() -> None:
    exc = RateLimitError("slow", status_code=429, headers={"retry-after": "9"})
    exc.retry_after = "soon"  # type: ignore[attr-defined]
    assert retry_after_from_error(exc) == 9.0


@pytest.mark.parametrize(
    "exc",
    [
        Exception("no headers"),
        RateLimitError("slow", status_code=429),
        RateLimitError("slow", status_code=429, headers={"retry-after": "-5"}),
        RateLimitError("slow", status_code=429, headers={"retry-after": "later"}),
        type("E", (Exception,), {"headers": ["retry-after", "3"]})(),
        type("E", (Exception,), {"headers": {7: "x", "retry-after": None}})(),
    ],
)
def test_retry_after_absent_or_garbage_is_none(exc: BaseException) -> None:
    assert retry_after_from_error(exc) is None


def test_retry_after_from_raw_bytes_headers() -> None:
    class ClientResponseError(Exception):
        headers = {7: "x", b"Retry-After": b"3"}  # noqa: RUF012

    assert retry_after_from_error(ClientResponseError()) == 3.0


@given(st.text(max_size=40) | st.binary(max_size=40) | st.floats() | st.integers())
def test_parse_retry_after_never_raises(value: object) -> None:
    seconds = parse_retry_after(value, now=lambda: NOW)
    assert seconds is None or seconds >= 0
