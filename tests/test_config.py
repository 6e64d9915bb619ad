"""Configuration defects, one test each: every one failed on the code before its fix.

Found with the settings refactor: messages that echoed values, numbers that validated
but overflowed the arithmetic later, booleans read as numbers, empty variables read as
"unset", and errors that did not name their variable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models import FakeListChatModel

from router_middleware import (
    ConfigurationError,
    ResilientRouter,
    RouterConfig,
    RouterError,
    RouterSettings,
)

CANARY = "sk-CANARY-5e1f"
MODELS = '[{"name": "m"}]'


pytestmark = pytest.mark.usefixtures("clean_env")


def config_problems(config: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        RouterConfig.coerce(config)
    return info.value.problems


def settings_problems(monkeypatch: pytest.MonkeyPatch, **env: str) -> list[str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as info:
        RouterSettings()
    return info.value.problems


def one_provider(**provider: Any) -> dict[str, Any]:
    return {"providers": [{"name": "a", "models": [{"name": "m"}], **provider}]}


# -- defect: messages echoed the value (a secret pasted into the wrong field) ---------------


def test_unknown_strategy_names_the_field_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was ``unknown strategy 'sk-...'; expected ...``."""
    (problem,) = config_problems({"strategy": CANARY})
    assert problem.startswith("strategy: unknown strategy; expected one of round_robin")
    (problem,) = settings_problems(monkeypatch, LLM_ROUTER_STRATEGY=CANARY)
    assert problem.endswith("[env LLM_ROUTER_STRATEGY]")
    assert CANARY not in problem


def test_unserved_default_model_names_the_field_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was ``default_model 'sk-...' is served by no provider (served: m)``."""
    (problem,) = config_problems({**one_provider(), "default_model": CANARY})
    assert problem.startswith("default_model: no provider serves this model")
    (problem,) = settings_problems(
        monkeypatch, LLM_ROUTER_PROVIDERS__A__MODELS=MODELS, LLM_ROUTER_DEFAULT_MODEL=CANARY
    )
    assert problem.startswith("default_model: ")
    assert problem.endswith("[env LLM_ROUTER_DEFAULT_MODEL]")
    assert CANARY not in problem


def test_repeated_names_are_given_by_position_not_by_value() -> None:
    """Was ``provider 'a' lists model(s) twice: sk-...``."""
    models = [{"name": CANARY}, {"name": "n"}, {"name": CANARY}]
    (problem,) = config_problems({"providers": [{"name": "a", "models": models}]})
    assert problem == "providers.0.models: items 0 and 2 have the same name"


def test_an_unreadable_config_file_is_named_not_quoted(monkeypatch: pytest.MonkeyPatch) -> None:
    """Was ``LLM_ROUTER_CONFIG_FILE=sk-...: cannot read the file``."""
    (problem,) = settings_problems(monkeypatch, LLM_ROUTER_CONFIG_FILE=CANARY)
    assert (
        problem == "LLM_ROUTER_CONFIG_FILE: cannot read the file (No such file or directory) [env]"
    )


# -- defect: numbers that validated, then overflowed the router's arithmetic ------------------

TOO_BIG_OR_SMALL = {
    "providers.0.rate_limit.burst": one_provider(rate_limit={"burst": 10**400}),
    "providers.0.rate_limit.max_concurrent": one_provider(rate_limit={"max_concurrent": 10**400}),
    "providers.0.rate_limit.requests_per_second": one_provider(
        rate_limit={"requests_per_second": 1e-320}
    ),
    "providers.0.models.0.max_input_tokens": {
        "providers": [{"name": "a", "models": [{"name": "m", "max_input_tokens": 10**400}]}]
    },
    "circuit_breaker.sampling_duration_seconds": {
        "circuit_breaker": {"sampling_duration_seconds": 1e-320, "failure_rate_threshold": 0.5}
    },
    "circuit_breaker.reset_timeout_seconds": {"circuit_breaker": {"reset_timeout_seconds": 1e308}},
    "circuit_breaker.threshold": {"circuit_breaker": {"threshold": 10**400}},
    "circuit_breaker.minimum_calls": {"circuit_breaker": {"minimum_calls": 10**400}},
    "circuit_breaker.half_open_max_calls": {"circuit_breaker": {"half_open_max_calls": 10**400}},
    "retry.attempts": {"retry": {"attempts": 10**400}},
    "retry.multiplier": {"retry": {"multiplier": 1e308}},
    "retry.max_backoff_seconds": {"retry": {"max_backoff_seconds": 1e308}},
    "max_attempts": {"max_attempts": 10**400},
    "deadline_seconds": {"deadline_seconds": 1e-320},
    "max_cooldown_seconds": {"max_cooldown_seconds": 1e308},
    "timeouts.idle_seconds": {"timeouts": {"idle_seconds": 1e-320}},
}


@pytest.mark.parametrize("field", TOO_BIG_OR_SMALL)
def test_a_number_that_would_overflow_is_rejected_by_name(field: str) -> None:
    """Was accepted, then raised OverflowError (or hung) when a request arrived."""
    (problem,) = config_problems(TOO_BIG_OR_SMALL[field])
    assert problem.startswith(f"{field}: Input should be")


def test_an_overflowing_burst_from_the_environment_names_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (problem,) = settings_problems(
        monkeypatch,
        LLM_ROUTER_PROVIDERS__A__MODELS=MODELS,
        LLM_ROUTER_PROVIDERS__A__RATE_LIMIT__BURST="1" + "0" * 400,
    )
    assert problem.startswith("providers.a.rate_limit.burst: Input should be less than or equal")
    assert problem.endswith("[env LLM_ROUTER_PROVIDERS__A__RATE_LIMIT__BURST]")


LOWEST = {
    "retry": {"attempts": 1, "initial_backoff_seconds": 0, "max_backoff_seconds": 0,
              "multiplier": 1},
    "circuit_breaker": {"threshold": 1, "sampling_duration_seconds": 0.001,
                        "reset_timeout_seconds": 0.001, "half_open_max_calls": 1,
                        "failure_rate_threshold": 1e-300, "minimum_calls": 1},
    # Time limits of 1 ms would time the call out: test_the_lowest_time_limits_... has them.
    "timeouts": {"attempt_seconds": 1, "first_token_seconds": 1, "idle_seconds": 1},
    "max_wait_seconds": 0, "deadline_seconds": 1, "max_attempts": 1,
    "max_cooldown_seconds": 0.001,
    "providers": [{"name": "a", "priority": 0, "models": [{"name": "m", "max_output_tokens": 1}],
                   "rate_limit": {"requests_per_second": 0.001, "burst": 1,
                                  "max_concurrent": 1}}],
}  # fmt: skip

HIGHEST = {
    "retry": {"attempts": 10_000, "initial_backoff_seconds": 10**7,
              "max_backoff_seconds": 10**7, "multiplier": 100},
    "circuit_breaker": {"threshold": 10_000, "sampling_duration_seconds": 10**7,
                        "reset_timeout_seconds": 10**7, "half_open_max_calls": 10_000,
                        "failure_rate_threshold": 1, "minimum_calls": 10**9},
    "timeouts": {"attempt_seconds": 10**7, "first_token_seconds": 10**7, "idle_seconds": 10**7},
    "max_wait_seconds": 10**7, "deadline_seconds": 10**7, "max_attempts": 10_000,
    "max_cooldown_seconds": 10**7,
    "providers": [{"name": "a", "priority": 10**6,
                   "models": [{"name": "m", "max_input_tokens": 10**9,
                               "max_output_tokens": 10**9,
                               "cost_per_1k_input_tokens": 10**6,
                               "cost_per_1k_output_tokens": 10**6,
                               "token_limits": {"tokens_per_minute": 10**9}}],
                   "rate_limit": {"requests_per_second": 10**9, "burst": 10**9,
                                  "max_concurrent": 10**9, "tokens_per_minute": 10**9,
                                  "input_tokens_per_minute": 10**9,
                                  "output_tokens_per_minute": 10**9},
                   "budget": {"max_cost": 10**9, "period_seconds": 10**7}}],
}  # fmt: skip


@pytest.mark.parametrize("config", [LOWEST, HIGHEST], ids=["lowest", "highest"])
async def test_a_config_at_every_bound_serves_a_request(config: dict[str, Any]) -> None:
    router = ResilientRouter({"a": FakeListChatModel(responses=["ok"])}, config)
    assert router.invoke("hi", model="m").content == "ok"
    again = ResilientRouter({"a": FakeListChatModel(responses=["ok"])}, config)
    assert (await again.ainvoke("hi", model="m")).content == "ok"


async def test_the_lowest_time_limits_end_a_request_cleanly() -> None:
    """A call may outlast 1 ms: then the router answers with its timeout error."""
    config = {**LOWEST, "deadline_seconds": 0.001,
              "timeouts": {"attempt_seconds": 0.001, "first_token_seconds": 0.001,
                           "idle_seconds": 0.001}}  # fmt: skip
    router = ResilientRouter({"a": FakeListChatModel(responses=["ok"])}, config)
    try:
        outcome: Any = await router.ainvoke("hi", model="m")
    except RouterError as exc:
        outcome = exc
    assert getattr(outcome, "content", None) == "ok" or "timeout" in str(outcome).lower()


# -- defect: a boolean was read as a number (True as 1) ---------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"retry": {"attempts": True}}, "retry.attempts"),
        ({"max_wait_seconds": True}, "max_wait_seconds"),
        ({"deadline_seconds": False}, "deadline_seconds"),
        (one_provider(priority=False), "providers.0.priority"),
        (one_provider(rate_limit={"burst": True}), "providers.0.rate_limit.burst"),
        ({"circuit_breaker": {"failure_rate_threshold": True}},
         "circuit_breaker.failure_rate_threshold"),
    ],
)  # fmt: skip
def test_a_boolean_is_not_a_number(config: dict[str, Any], field: str) -> None:
    """Was accepted as 1 (or 0)."""
    assert config_problems(config) == [f"{field}: Input should be a number, not a boolean"]


def test_a_boolean_in_a_json_section_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_problems(monkeypatch, LLM_ROUTER_RETRY='{"attempts": true}') == [
        "retry.attempts: Input should be a number, not a boolean [env LLM_ROUTER_RETRY]"
    ]


# -- defect: an empty variable silently meant "unset" -----------------------------------------


def test_an_empty_variable_is_an_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """``LLM_ROUTER_DEADLINE_SECONDS=`` meant no deadline; ``none`` says so explicitly."""
    (tmp := Path(".env")).write_text("LLM_ROUTER_MAX_ATTEMPTS=\n")
    problems = settings_problems(monkeypatch, LLM_ROUTER_DEADLINE_SECONDS="")
    assert problems == [
        "LLM_ROUTER_DEADLINE_SECONDS: empty; give a value, `none` to turn it off, "
        "or remove the variable for the default [env]",
        "LLM_ROUTER_MAX_ATTEMPTS: empty; give a value, or remove the variable for the default "
        "[.env]",
    ]
    tmp.unlink()
    monkeypatch.setenv("LLM_ROUTER_DEADLINE_SECONDS", "none")
    assert RouterSettings().deadline_seconds is None


# -- defect: errors that did not name their variable, or guess the intended one --------------


def test_an_object_where_a_list_belongs_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Was ``providers.a.models: Input should be a valid list``, with no variable."""
    assert settings_problems(monkeypatch, LLM_ROUTER_PROVIDERS__A__MODELS='{"name": "m"}') == [
        "providers.a.models: Input should be a valid list [env LLM_ROUTER_PROVIDERS__A__MODELS]"
    ]


@pytest.mark.parametrize(
    ("variable", "meant"),
    [
        ("LLM_ROUTER_RETRY__ATEMPTS", "LLM_ROUTER_RETRY__ATTEMPTS"),
        ("LLM_ROUTER_CIRCUIT_BREAKER__TRESHOLD", "LLM_ROUTER_CIRCUIT_BREAKER__THRESHOLD"),
        ("LLM_ROUTER_PROVIDERS__A__PRIORTY", "LLM_ROUTER_PROVIDERS__A__PRIORITY"),
        ("LLM_ROUTER_PROVIDERS__A__RETRY__ATEMPTS", "LLM_ROUTER_PROVIDERS__A__RETRY__ATTEMPTS"),
    ],
)
def test_a_nested_typo_gets_did_you_mean(
    variable: str, meant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A top-level typo had the hint; a nested one only got ``Extra inputs``."""
    problems = settings_problems(
        monkeypatch, LLM_ROUTER_PROVIDERS__A__MODELS=MODELS, **{variable: "2"}
    )
    assert problems == [f"{variable}: unknown setting; did you mean {meant}? [env]"]
