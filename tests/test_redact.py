"""Credentials scrubbed from error text: the patterns, the secret registry, the router errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.language_models import FakeListChatModel
from pydantic import BaseModel, SecretBytes, SecretStr

from router_middleware import (
    AllProvidersFailedError,
    ConfigurationError,
    DeadlineExceededError,
    NoProviderAvailableError,
    ProviderError,
    RouterError,
    UnknownProviderError,
)
from router_middleware._redact import (
    _ALTERNATIVES,
    _PATTERN,
    MASK,
    MIN_SECRET_LENGTH,
    _Registry,
    describe,
    redact,
    register_secret,
    register_secrets_of,
    secrets_of,
)
from router_middleware.testing import ScriptedChatModel

# Built by concatenation so that no credential scanner takes this file for a leak.
OPENAI_KEY = "sk-proj-" + "Ab3_x-" * 8
LEGACY_OPENAI_KEY = "sk-" + "Zq9" * 16
ANTHROPIC_KEY = "sk-ant-" + "api03-" + "Kp7" * 10
GOOGLE_KEY = "AIza" + "Sy" + "B1" * 16 + "c"
AWS_KEY_ID = "AKIA" + "Q7" * 8
GITHUB_TOKEN = "ghp_" + "a1B2" * 9
SLACK_TOKEN = "xoxb-" + "1234567890-" + "aBc" * 6
JWT = "eyJ" + "hbGciOiJIUzI1NiJ9" + "." + "eyJzdWIiOiIxIn0" + "." + "c2lnbmF0dXJl" * 3

KEY_SHAPED = {
    "openai": (OPENAI_KEY, "sk-proj-***"),
    "openai legacy": (LEGACY_OPENAI_KEY, "sk-***"),
    "anthropic": (ANTHROPIC_KEY, "sk-ant-***"),
    "google": (GOOGLE_KEY, "AIza***"),
    "aws": (AWS_KEY_ID, "AKIA***"),
    "github": (GITHUB_TOKEN, "ghp_***"),
    "slack": (SLACK_TOKEN, "xoxb-***"),
    "jwt": (JWT, "eyJ***"),
}


def test_each_alternative_keeps_exactly_one_group() -> None:
    # The replacement keeps the group that matched: a second group would be kept instead.
    assert _PATTERN.groups == len(_ALTERNATIVES)


@pytest.mark.parametrize(("key", "masked"), KEY_SHAPED.values(), ids=list(KEY_SHAPED))
def test_key_shaped_values_are_masked_anywhere(key: str, masked: str) -> None:
    assert redact(f"rejected {key}.") == f"rejected {masked}."
    assert redact(f"({key})") == f"({masked})"
    assert redact(key) == masked


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Query parameters named like a credential, in URLs and in bare a=b&c=d form.
        (
            "GET https://generativelanguage.googleapis.com/v1/models?key=abc123def&alt=sse",
            "GET https://generativelanguage.googleapis.com/v1/models?key=***&alt=sse",
        ),
        ("https://h/x?API_KEY=v4lue#frag", "https://h/x?API_KEY=***#frag"),
        ("https://h/x?a=1&apikey=v4lue", "https://h/x?a=1&apikey=***"),
        ("https://h/x?api-key=v4lue", "https://h/x?api-key=***"),
        ("token=t0k&access_token=a1&auth=a2", "token=***&access_token=***&auth=***"),
        ("secret=s1&password=p1 sig=g1", "secret=***&password=*** sig=***"),
        (
            "https://s3/o?X-Amz-Signature=ab12&Signature=cd34",
            "https://s3/o?X-Amz-Signature=***&Signature=***",
        ),
        ("client(api_key='v4lue-123')", "client(api_key='***')"),
        # Headers, as HTTP text, as a dict's repr and as JSON.
        ("Authorization: Bearer abc.def-123", "Authorization: Bearer ***"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=Basic ***"),
        ("{'Authorization': 'Token abc123'}", "{'Authorization': 'Token ***'}"),
        ("Proxy-Authorization: s3cr3t", "Proxy-Authorization: ***"),
        ("x-api-key: abc123def", "x-api-key: ***"),
        ("{'X-Goog-Api-Key': 'abc123def'}", "{'X-Goog-Api-Key': '***'}"),
        ('{"api-key": "abc123def", "model": "m"}', '{"api-key": "***", "model": "m"}'),
        # Bare schemes with a random-looking token.
        ("sent Bearer abc123def456 to the API", "sent Bearer *** to the API"),
        ("sent basic dXNlcjpwYXNz", "sent basic ***"),
        # Passwords in URLs; the user name stays.
        ("https://user:hunter2@example.com/v1", "https://user:***@example.com/v1"),
        ("redis://:p4ss@cache:6379/0", "redis://:***@cache:6379/0"),
    ],
)
def test_credential_patterns(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The quick brown fox jumps over the lazy dog.",
        "429 Too Many Requests: rate limit reached for gpt-4o-mini in organization org-abc.",
        "503 Service Unavailable: claude-3-5-sonnet-20241022 is overloaded, try again later",
        "A task-based, risk-aware plan; ask-me-anything; desk-top; sk-short",
        "Bearer tokens expire after an hour; Basic authentication is not supported.",
        "See https://platform.openai.com/docs/guides/error-codes?lang=python&page=2#api-errors",
        "Write to support@example.com or https://example.com:8443/status",
        "Missing key: 'model'; the key_id and monkey fields; the token budget is 4096",
        "AKIA is a prefix; AIza too; eyJ alone is nothing; xoxb- needs more",
        "timeout after 30s (attempt 2 of 3); circuit open; cooling down (Retry-After)",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert redact(text) == text


@given(
    st.lists(
        st.sampled_from(
            [
                # Key shapes are recognised as whole tokens, not glued to a word.
                *[f" {k} " for k, _ in KEY_SHAPED.values()],
                " ",
                "key=",
                "?",
                "&",
                "Bearer ",
                "x-api-key: ",
                "https://u:",
                "@h",
                "hello",
                ".",
            ]
        )
    )
)
def test_redact_is_idempotent_and_leaves_no_key(parts: list[str]) -> None:
    once = redact("".join(parts))
    assert redact(once) == once
    for key, _ in KEY_SHAPED.values():
        assert key not in once


def test_registered_secret_is_masked_in_any_text() -> None:
    secret = "custom-" + "Q" * 12  # no known shape: only the registry can find it
    assert redact(f"echo {secret}") == f"echo {secret}"
    register_secret(secret)
    assert redact(f"echo {secret}!") == "echo ***!"
    assert str(AllProvidersFailedError("m", {"p": ValueError(f"bad {secret}")})).endswith(
        "p: ValueError: bad ***"
    )


def test_registered_secret_percent_encoded_form_is_masked() -> None:
    secret = "wJalr/Xutn+FEMI=" + "7" * 8
    register_secret(secret)
    encoded = secret.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D")
    assert redact(f"GET /x?credential={encoded}") == "GET /x?credential=***"


def test_short_values_are_not_registered() -> None:
    word = "q" * (MIN_SECRET_LENGTH - 1)
    register_secret(word)
    assert redact(f"a {word} b") == f"a {word} b"


def test_longest_registered_secret_is_masked_whole() -> None:
    registry = _Registry()
    registry.add("inner-" + "v" * 8)
    registry.add("outer-inner-" + "v" * 8 + "-tail")
    assert registry.mask("x outer-inner-vvvvvvvv-tail y") == f"x {MASK} y"


def test_registry_is_bounded_dropping_the_oldest() -> None:
    registry = _Registry(limit=3)
    values = [f"value-{i:04d}" for i in range(5)]
    for value in values:
        registry.add(value)
    assert registry.mask(" ".join(values)) == f"value-0000 value-0001 {MASK} {MASK} {MASK}"
    registry.add(values[2])  # registering again makes it the newest
    registry.add("value-0005")
    assert registry.mask(values[2]) == MASK
    assert registry.mask(values[3]) == values[3]


def test_registry_is_thread_safe() -> None:
    registry = _Registry(limit=50)

    def register(worker: int) -> None:
        for i in range(200):
            registry.add(f"worker-{worker}-{i:04d}")
            registry.mask("some text")

    threads = [threading.Thread(target=register, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(registry.by_length) == 50


def test_registry_values_never_shown() -> None:
    registry = _Registry()
    registry.add("hidden-" + "h" * 10)
    assert "hhhhhhhhhh" not in repr(registry)


class KeyedChatModel(FakeListChatModel):
    """A LangChain chat model holding its key the way ChatOpenAI does."""

    openai_api_key: SecretStr
    extra_token: SecretBytes | None = None


def test_secrets_of_a_chat_model_a_binding_and_a_mapping() -> None:
    key, token = "key-" + "m" * 12, "tok-" + "n" * 12
    model = KeyedChatModel(
        responses=["hi"], openai_api_key=SecretStr(key), extra_token=SecretBytes(token.encode())
    )
    assert secrets_of(model) == [key, token]
    binding = model.bind(stop=["x"])
    assert secrets_of(binding) == [key, token]
    other = KeyedChatModel(responses=["hi"], openai_api_key=SecretStr("key-" + "o" * 12))
    assert secrets_of({"a": binding, "b": [other], "c": "plain"}) == [key, token, "key-" + "o" * 12]
    assert secrets_of(model.with_fallbacks([other])) == [key, token, "key-" + "o" * 12]


def test_secrets_of_odd_objects() -> None:
    class Exploding(Mapping[str, Any]):
        def __getitem__(self, key: str) -> Any:
            raise RuntimeError("no")

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("no")

        def __len__(self) -> int:
            return 1

    class Holder(BaseModel):
        secret: SecretStr
        undecodable: SecretBytes = SecretBytes(b"\xff\xfe" * 8)

    loop: list[Any] = []
    loop.append(loop)
    deep: Any = Holder(secret=SecretStr("deep-" + "d" * 10))
    for _ in range(10):
        deep = [deep]
    assert secrets_of(None) == []
    assert secrets_of(lambda: None) == []
    assert secrets_of(Exploding()) == []
    assert secrets_of(loop) == []
    assert secrets_of([Holder(secret=SecretStr("x" * 10))]) == ["x" * 10]
    assert secrets_of(deep) == []
    assert secrets_of(deep, max_depth=12) == ["deep-" + "d" * 10]


def test_register_secrets_of_a_chat_model_scrubs_its_key() -> None:
    key = "opaque-" + "K" * 16
    model = KeyedChatModel(responses=["hi"], openai_api_key=SecretStr(key))
    assert register_secrets_of({"openai": model.bind(stop=["x"])}) == 1
    error = PermissionError(f"401: the key {key} was revoked")
    assert describe(error) == "PermissionError: 401: the key *** was revoked"


def test_describe_survives_a_str_that_raises() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError(f"cannot print {OPENAI_KEY}")

    text = describe(Unprintable())
    assert text == "Unprintable: <message unavailable: str() raised RuntimeError>"
    assert "Unprintable" in str(AllProvidersFailedError("m", {"p": Unprintable()}))


def test_describe_of_an_empty_message_is_the_type() -> None:
    assert describe(TimeoutError()) == "TimeoutError"


def google_http_error() -> httpx.HTTPStatusError:
    url = f"https://generativelanguage.googleapis.com/v1/models/gemini:generate?key={GOOGLE_KEY}"
    request = httpx.Request("GET", url)
    response = httpx.Response(403, request=request, json={"error": "denied"})
    try:
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        return exc
    raise AssertionError("raise_for_status did not raise")


def openai_auth_error() -> Exception:
    class AuthenticationError(Exception):
        pass

    masked = OPENAI_KEY[:11] + "*" * 30 + OPENAI_KEY[-4:]
    return AuthenticationError(
        "Error code: 401 - {'error': {'message': 'Incorrect API key provided: "
        f"{masked}. You can find your API key at https://platform.openai.com/account/"
        f"api-keys.', 'type': 'invalid_request_error', 'code': 'invalid_api_key'}}}} "
        f"(sent {OPENAI_KEY})"
    )


def assert_clean(error: BaseException, *leaks: str) -> None:
    for text in (str(error), repr(error)):
        for leak in leaks:
            assert leak not in text
        assert MASK in text


def test_httpx_error_through_all_providers_failed() -> None:
    err = google_http_error()
    assert GOOGLE_KEY in str(err)
    failed = AllProvidersFailedError("gemini", {"google": err}, 1)
    assert_clean(failed, GOOGLE_KEY, GOOGLE_KEY[4:20])
    assert "google: HTTPStatusError: Client error '403 Forbidden'" in str(failed)
    assert "key=***" in str(failed)
    assert failed.errors["google"] is err  # the provider's own error, untouched
    assert GOOGLE_KEY in str(failed.errors["google"])


def test_openai_401_echoing_the_key() -> None:
    err = openai_auth_error()
    failed = AllProvidersFailedError("gpt-4o-mini", {"openai": err}, 1)
    assert_clean(failed, OPENAI_KEY, OPENAI_KEY[8:20], OPENAI_KEY[-4:])
    assert "Incorrect API key provided: sk-proj-***." in str(failed)
    assert "'gpt-4o-mini'" in str(failed)


def test_every_router_error_is_clean() -> None:
    google, openai = google_http_error(), openai_auth_error()
    errors: list[RouterError] = [
        DeadlineExceededError("m", {"google": google, "openai": openai}, 4, "deadline 30s"),
        AllProvidersFailedError(
            "m", {"google": google}, 1, skipped={"openai": f"cooling down: {openai}"}
        ),
        NoProviderAvailableError("m", {"google": f"rate limited by {google}"}, 1.5),
        ProviderError("google", f"stream broke: {google}"),
        ConfigurationError([f"providers.0.url: bad value {google.request.url}", "other"]),
        RouterError(f"{openai}"),
        UnknownProviderError(f"?key={GOOGLE_KEY}", ["a"]),
    ]
    for error in errors:
        assert_clean(error, GOOGLE_KEY, OPENAI_KEY)
    assert GOOGLE_KEY not in str(errors[2].reasons)  # type: ignore[attr-defined]
    assert GOOGLE_KEY not in str(errors[1].skipped) + str(errors[4].problems)  # type: ignore[attr-defined]


def test_router_failure_carries_no_key(make_router: Any) -> None:
    failing = ScriptedChatModel(script=[google_http_error()] * 4)
    router = make_router({"google": failing}, retry={"attempts": 1})
    with pytest.raises(AllProvidersFailedError) as info:
        router.invoke("hi")
    assert_clean(info.value, GOOGLE_KEY)
    assert GOOGLE_KEY in str(info.value.errors["google"])
