"""RouterSettings: environment, .env and config file; validation; binding; reload."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import Field, SecretStr

from router_middleware import (
    CircuitBreakerConfig,
    ConfigurationError,
    FakeClock,
    ProviderConfig,
    RetryConfig,
    RouterConfig,
)
from router_middleware.settings import (
    ProviderSettings,
    RouterSettings,
    env_reference,
    reload_from_settings,
    router_from_settings,
)
from router_middleware.testing import ScriptedChatModel, http_error

from . import test_seed as seed_examples

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("clean_env")


def setenv(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def problems_of(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigurationError) as info:
        RouterSettings(**kwargs)
    return info.value.problems


# -- the seed README's configs, as JSON (handlers are code, so they stay out) -----------------


def without_handlers(config: dict[str, Any]) -> dict[str, Any]:
    """A seed example as a file or an env var holds it: the same, minus the functions."""
    plain = copy.deepcopy(config)
    for provider in plain["providers"]:
        provider.pop("handler", None)
    return plain


# The seed README's examples, as tests/test_seed.py runs them with their handlers.
QUICK_START = without_handlers(seed_examples.QUICK_START)
MULTI_PROVIDER = without_handlers(seed_examples.MULTI_PROVIDER)

# The "Rate Limiting" and "Circuit Breaker" snippets, in a config of their own.
SNIPPETS = {
    "providers": [
        {
            "name": "p",
            "models": [{"name": "m"}],
            "rateLimit": {"tokensPerSecond": 10, "maxConcurrent": 5},
        }
    ],
    "resilience": {"circuitBreaker": {"enabled": True, "threshold": 5, "resetTimeoutMs": 30000}},
}

# "Dynamic Configuration": a provider switched off.
DYNAMIC = copy.deepcopy(QUICK_START)
DYNAMIC["providers"][0]["enabled"] = False  # type: ignore[index]

SEED_EXAMPLES: dict[str, dict[str, Any]] = {
    "quick_start": QUICK_START,
    "multi_provider": MULTI_PROVIDER,
    "snippets": SNIPPETS,
    "dynamic": DYNAMIC,
}


@pytest.mark.parametrize("name", SEED_EXAMPLES)
@pytest.mark.parametrize("path", ["file.json", "file.yaml", "env"])
def test_seed_examples_give_the_config_the_router_builds(
    name: str, path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seed = SEED_EXAMPLES[name]
    if path == "env":
        setenv(monkeypatch, LLM_ROUTER_CONFIG_JSON=json.dumps(seed))
    else:
        file = tmp_path / path
        file.write_text(json.dumps(seed) if path.endswith("json") else yaml.safe_dump(seed))
        setenv(monkeypatch, LLM_ROUTER_CONFIG_FILE=str(file))
    assert RouterSettings().to_router_config() == RouterConfig.coerce(seed)


def test_seed_quick_start_from_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    file = tmp_path / "router.toml"
    file.write_text(
        """
loadBalancingStrategy = "cost_priority_round_robin"

[[providers]]
name = "openai-provider"
type = "custom"
priority = 2
rateLimit = { tokensPerSecond = 10, maxConcurrent = 5 }

[[providers.models]]
name = "gpt-4"
costPer1kInputTokens = 0.03
costPer1kOutputTokens = 0.06
maxTokens = 8192

[[providers]]
name = "anthropic-provider"
type = "custom"
priority = 1
rateLimit = { tokensPerSecond = 20, maxConcurrent = 10 }

[[providers.models]]
name = "claude-3-sonnet"
costPer1kInputTokens = 0.015
costPer1kOutputTokens = 0.075
maxTokens = 4096

[resilience.retry]
enabled = true
attempts = 3
initialBackoffMs = 100
maxBackoffMs = 1000
multiplier = 2

[resilience.circuitBreaker]
enabled = true
threshold = 5
samplingDurationMs = 60000
resetTimeoutMs = 30000
"""
    )
    setenv(monkeypatch, LLM_ROUTER_CONFIG_FILE=str(file))
    assert RouterSettings().to_router_config() == RouterConfig.coerce(QUICK_START)


def test_seed_providers_list_as_one_json_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        LLM_ROUTER_PROVIDERS=json.dumps(MULTI_PROVIDER["providers"]),
        LLM_ROUTER_RETRY='{"attempts": 4, "initialBackoffMs": 50}',
    )
    cfg = RouterSettings().to_router_config()
    assert [p.name for p in cfg.providers] == [
        "primary-cheap",
        "secondary-expensive",
        "backup-local",
    ]
    assert cfg.providers[0].rate_limit.requests_per_second == 50
    assert (cfg.retry.attempts, cfg.retry.initial_backoff_seconds) == (4, 0.05)


# -- environment parsing ----------------------------------------------------------------------


def test_the_issue_example(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        LLM_ROUTER_STRATEGY="cost_priority_round_robin",
        LLM_ROUTER_DEFAULT_MODEL="gpt-4o-mini",
        LLM_ROUTER_PROVIDERS__OPENAI__PRIORITY="1",
        LLM_ROUTER_PROVIDERS__OPENAI__MODELS='[{"name": "gpt-4o-mini", '
        '"cost_per_1k_input_tokens": 0.00015, "cost_per_1k_output_tokens": 0.0006}]',
        LLM_ROUTER_PROVIDERS__OPENAI__RATE_LIMIT__REQUESTS_PER_SECOND="10",
        LLM_ROUTER_PROVIDERS__OPENAI__RATE_LIMIT__MAX_CONCURRENT="5",
        LLM_ROUTER_RETRY__ATTEMPTS="3",
        LLM_ROUTER_CIRCUIT_BREAKER__THRESHOLD="5",
    )
    cfg = RouterSettings().to_router_config()
    assert (cfg.strategy, cfg.default_model) == ("cost_priority_round_robin", "gpt-4o-mini")
    (openai,) = cfg.providers
    assert (openai.name, openai.priority) == ("openai", 1)
    assert openai.models[0].cost_per_1k_output_tokens == 0.0006
    assert (openai.rate_limit.requests_per_second, openai.rate_limit.max_concurrent) == (10, 5)
    assert (cfg.retry.attempts, cfg.circuit_breaker.threshold) == (3, 5)


def test_every_router_field_is_settable(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        LLM_ROUTER_PROVIDERS__A__MODELS='[{"name": "m"}]',
        LLM_ROUTER_PROVIDERS__A__ENABLED="false",
        LLM_ROUTER_PROVIDERS__A__TYPE="ollama",
        LLM_ROUTER_PROVIDERS__A__RETRY__ATTEMPTS="7",
        LLM_ROUTER_PROVIDERS__A__CIRCUIT_BREAKER__RESET_TIMEOUT_SECONDS="9",
        LLM_ROUTER_PROVIDERS__A__TIMEOUTS__IDLE_SECONDS="4",
        LLM_ROUTER_PROVIDERS__B__MODELS=MODELS,
        LLM_ROUTER_CONFIG_JSON='{"providers": {"b": {"retry": {"attempts": 5},'
        ' "rate_limit": {"burst": 3}}}}',
        LLM_ROUTER_PROVIDERS__B__RETRY="none",  # optional sections and fields take none
        LLM_ROUTER_PROVIDERS__B__RATE_LIMIT__BURST="null",
        LLM_ROUTER_TIMEOUTS__ATTEMPT_SECONDS="30",
        LLM_ROUTER_MAX_WAIT_SECONDS="0.5",
        LLM_ROUTER_DEADLINE_SECONDS="none",
        LLM_ROUTER_MAX_ATTEMPTS="4",
    )
    cfg = RouterSettings().to_router_config()
    a, b = (next(p for p in cfg.providers if p.name == name) for name in "ab")
    assert (a.enabled, a.type) == (False, "ollama")
    assert a.model_dump(include={"retry", "circuit_breaker", "timeouts"}) == {
        "retry": {**RetryConfig(attempts=7).model_dump()},
        "circuit_breaker": {**CircuitBreakerConfig(reset_timeout_seconds=9).model_dump()},
        "timeouts": {"attempt_seconds": None, "first_token_seconds": None, "idle_seconds": 4.0},
    }
    assert b.retry is None
    assert b.rate_limit.burst is None
    assert cfg.timeouts.attempt_seconds == 30
    assert (cfg.max_wait_seconds, cfg.deadline_seconds, cfg.max_attempts) == (0.5, None, 4)


def test_a_json_section_then_single_fields_on_top(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        LLM_ROUTER_RETRY='{"attempts": 5, "initialBackoffMs": 50}',
        LLM_ROUTER_RETRY__ATTEMPTS="2",
    )
    settings = RouterSettings()
    assert (settings.retry.attempts, settings.retry.initial_backoff_seconds) == (2, 0.05)
    assert str(settings.origin("retry.attempts")) == "env LLM_ROUTER_RETRY__ATTEMPTS"
    assert str(settings.origin("retry.initial_backoff_seconds")) == "env LLM_ROUTER_RETRY"


def test_dotenv_file_and_env_over_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "LLM_ROUTER_STRATEGY=cost_priority_round_robin\n"
        'LLM_ROUTER_PROVIDERS__LOCAL__MODELS=\'[{"name": "llama3"}]\'\n'
        "LLM_ROUTER_MAX_ATTEMPTS=3\n"
        "UNRELATED=1\n"
    )
    setenv(monkeypatch, LLM_ROUTER_MAX_ATTEMPTS="6")
    settings = RouterSettings()
    assert (settings.strategy, settings.max_attempts) == ("cost_priority_round_robin", 6)
    assert settings.providers["local"].models[0].name == "llama3"
    assert str(settings.origin("strategy")) == ".env LLM_ROUTER_STRATEGY"
    assert str(settings.origin("max_attempts")) == "env LLM_ROUTER_MAX_ATTEMPTS"
    assert RouterSettings(_env_file=None).strategy == "round_robin"


def test_precedence_file_json_dotenv_env_init(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "router.json"
    file.write_text(json.dumps({"max_attempts": 1, "max_wait_seconds": 1, "deadline_seconds": 1,
                                "strategy": "round_robin", "default_model": None}))  # fmt: skip
    (tmp_path / ".env").write_text("LLM_ROUTER_MAX_WAIT_SECONDS=3\nLLM_ROUTER_DEADLINE_SECONDS=3\n")
    setenv(
        monkeypatch,
        LLM_ROUTER_CONFIG_FILE=str(file),
        LLM_ROUTER_CONFIG_JSON='{"max_attempts": 2, "max_wait_seconds": 2, "deadline_seconds": 2}',
        LLM_ROUTER_DEADLINE_SECONDS="4",
    )
    settings = RouterSettings(strategy="cost_priority_round_robin")
    assert (settings.max_attempts, settings.max_wait_seconds, settings.deadline_seconds) == (
        2,
        3,
        4,
    )
    origins = {f: settings.origin(f).source for f in ("max_attempts", "max_wait_seconds",
               "deadline_seconds", "strategy", "default_model", "retry.attempts")}  # fmt: skip
    assert origins == {
        "max_attempts": "json",
        "max_wait_seconds": ".env",
        "deadline_seconds": "env",
        "strategy": "init",
        "default_model": "file",
        "retry.attempts": "default",
    }


def test_env_key_overrides_one_field_of_a_file_provider(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "router.toml"
    file.write_text(
        '[providers.OpenAI-EU]\npriority = 3\nmodels = [{ name = "gpt-4o" }]\n'
        "[providers.OpenAI-EU.rate_limit]\nrequests_per_second = 5\nmax_concurrent = 2\n"
    )
    setenv(
        monkeypatch,
        LLM_ROUTER_CONFIG_FILE=str(file),
        LLM_ROUTER_PROVIDERS__OPENAI_EU__RATE_LIMIT__MAX_CONCURRENT="8",
    )
    settings = RouterSettings()
    assert list(settings.providers) == ["OpenAI-EU"]  # matched, not a second provider
    provider = settings.providers["OpenAI-EU"]
    assert (provider.priority, provider.rate_limit.requests_per_second) == (3, 5)
    assert provider.rate_limit.max_concurrent == 8
    assert settings.origin("providers.OpenAI-EU.priority").detail == str(file)
    assert settings.origin("providers.OpenAI-EU.rate_limit.max_concurrent").source == "env"


def test_explain_lists_every_value_with_its_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, LLM_ROUTER_PROVIDERS__A__MODELS='[{"name": "m"}, {"name": "n"}]')
    rows = {path: (value, str(origin)) for path, value, origin in RouterSettings().explain()}
    assert rows["providers.a.models.1.name"] == ("n", "env LLM_ROUTER_PROVIDERS__A__MODELS")
    assert rows["circuit_breaker.threshold"] == (5, "default")
    assert "config_json" not in rows


# -- validation: every problem, each naming its field and source -----------------------------

MODELS = '[{"name": "m"}]'

INVALID: dict[str, tuple[dict[str, str], list[str]]] = {
    "unknown strategy": (
        {"LLM_ROUTER_STRATEGY": "fastest"},
        ["strategy: unknown strategy; expected one of", "[env LLM_ROUTER_STRATEGY]"],
    ),
    "zero rate": (
        {"LLM_ROUTER_PROVIDERS__A__MODELS": MODELS,
         "LLM_ROUTER_PROVIDERS__A__RATE_LIMIT__REQUESTS_PER_SECOND": "0"},
        ["providers.a.rate_limit.requests_per_second: Input should be greater than or equal",
         "LLM_ROUTER_PROVIDERS__A__RATE_LIMIT__REQUESTS_PER_SECOND"],
    ),
    "negative priority": (
        {"LLM_ROUTER_PROVIDERS__A__MODELS": MODELS, "LLM_ROUTER_PROVIDERS__A__PRIORITY": "-1"},
        ["providers.a.priority: Input should be greater than or equal to 0"],
    ),
    "nan cost": (
        {"LLM_ROUTER_PROVIDERS__A__MODELS": '[{"name": "m", "cost_per_1k_input_tokens": NaN}]'},
        ["providers.a.models.0.cost_per_1k_input_tokens: Input should be a finite number",
         "[env LLM_ROUTER_PROVIDERS__A__MODELS]"],
    ),
    "infinite window": (
        {"LLM_ROUTER_CIRCUIT_BREAKER__SAMPLING_DURATION_SECONDS": "inf"},
        ["circuit_breaker.sampling_duration_seconds: Input should be a finite number"],
    ),
    "zero timeout": (
        {"LLM_ROUTER_TIMEOUTS__ATTEMPT_SECONDS": "0"},
        ["timeouts.attempt_seconds: Input should be greater than or equal to 0.001"],
    ),
    "negative deadline": (
        {"LLM_ROUTER_DEADLINE_SECONDS": "-5"},
        ["deadline_seconds: Input should be greater than or equal to 0.001"],
    ),
    "duplicate names": (
        {"LLM_ROUTER_PROVIDERS": '[{"name": "a", "models": [{"name": "m"}]},'
                                 ' {"name": "a", "models": [{"name": "m"}]}]'},
        ["LLM_ROUTER_PROVIDERS: items 0 and 1 have the same name [env]"],
    ),
    "duplicate models": (
        {"LLM_ROUTER_PROVIDERS__A__MODELS": '[{"name": "m"}, {"name": "m"}]'},
        ["providers.a.models: items 0 and 1 have the same name"],
    ),
    "default model nobody serves": (
        {"LLM_ROUTER_PROVIDERS__A__MODELS": MODELS, "LLM_ROUTER_DEFAULT_MODEL": "gpt-5"},
        ["default_model: no provider serves this model",
         "[env LLM_ROUTER_DEFAULT_MODEL]"],
    ),
    "malformed json": (
        {"LLM_ROUTER_PROVIDERS__A__MODELS": '[{"name": "m"'},
        ["LLM_ROUTER_PROVIDERS__A__MODELS: malformed JSON (Expecting ',' delimiter"],
    ),
    "unknown nested key": (
        {"LLM_ROUTER_RETRY__ATEMPTS": "3"},
        ["LLM_ROUTER_RETRY__ATEMPTS: unknown setting; did you mean "
         "LLM_ROUTER_RETRY__ATTEMPTS? [env]"],
    ),
    "unknown variable": (
        {"LLM_ROUTER_STRATEGYY": "round_robin"},
        ["LLM_ROUTER_STRATEGYY: unknown setting; did you mean LLM_ROUTER_STRATEGY?"],
    ),
    "missing models": (
        {"LLM_ROUTER_PROVIDERS__A__PRIORITY": "1"},
        ["providers.a.models: Field required [set LLM_ROUTER_PROVIDERS__A__MODELS; "
         "providers.a is from env LLM_ROUTER_PROVIDERS__A__PRIORITY]"],
    ),
    "bad boolean": (
        {"LLM_ROUTER_RETRY__ENABLED": "perhaps"},
        ["retry.enabled: Input should be a valid boolean"],
    ),
    "missing file": (
        {"LLM_ROUTER_CONFIG_FILE": "/nonexistent/router.toml"},
        ["LLM_ROUTER_CONFIG_FILE: cannot read the file (No such file or directory) [env]"],
    ),
    "unknown key in a JSON section": (
        {"LLM_ROUTER_RETRY": '{"atempts": 3}'},
        ["retry.atempts: Extra inputs are not permitted; did you mean retry.attempts? "
         "[env LLM_ROUTER_RETRY]"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", INVALID)
def test_each_invalid_setting_is_named(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    env, expected = INVALID[case]
    setenv(monkeypatch, **env)
    message = "\n".join(problems_of())
    for fragment in expected:
        assert fragment in message


def test_file_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad_toml = tmp_path / "bad.toml"
    bad_toml.write_text("strategy = \n")
    ini = tmp_path / "router.ini"
    ini.write_text("")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    clash = tmp_path / "clash.yaml"
    clash.write_text(
        "providers:\n  OpenAI: {models: [{name: m}]}\n  openai: {models: [{name: m}]}\n"
    )
    expected = {
        bad_toml: "malformed TOML (Invalid value (at line 1, column 12))",
        ini: "LLM_ROUTER_CONFIG_FILE: unsupported file type; name a .toml, .json or .yaml",
        listed: "expected a mapping of settings, got list",
        clash: "duplicate provider name: 'OpenAI' and 'openai' are one name to variables",
    }
    for file, fragment in expected.items():
        monkeypatch.setenv("LLM_ROUTER_CONFIG_FILE", str(file))
        assert fragment in "\n".join(problems_of())


def test_every_problem_is_listed_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(
        monkeypatch,
        LLM_ROUTER_STRATEGY="fastest",
        LLM_ROUTER_STRATEGYY="x",
        LLM_ROUTER_PROVIDERS__A__PRIORITY="-1",
        LLM_ROUTER_PROVIDERS__B__MODELS="[",
        LLM_ROUTER_RETRY__ATTEMPTS="0",
        LLM_ROUTER_CIRCUIT_BREAKER__RESET_TIMEOUT_SECONDS="nan",
    )
    problems = problems_of()
    assert len(problems) == 7, problems  # providers.a misses its models too
    assert all("[" in p or p.startswith("LLM_ROUTER_") for p in problems)


# -- secrets ------------------------------------------------------------------------------

CANARY = "hunter2-CANARY-7f3a"


class SettingsWithSecret(RouterSettings):
    redis_url: SecretStr | None = Field(None, description="The shared state store.")


def test_a_secret_never_shows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    setenv(monkeypatch, LLM_ROUTER_REDIS_URL=f"redis://:{CANARY}@cache:6379/0")
    settings = SettingsWithSecret()
    assert settings.redis_url is not None
    assert CANARY in settings.redis_url.get_secret_value()
    shown = [
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(list(settings.explain())),
    ]
    assert all(CANARY not in text for text in shown)
    assert ("redis_url", "**********") in [(p, v) for p, v, _ in settings.explain()]
    assert "LLM_ROUTER_REDIS_URL" in env_reference(SettingsWithSecret)
    assert "| secret or `none` |" in env_reference(SettingsWithSecret)


class SettingsWithHidden(RouterSettings):
    token: str = Field("", repr=False, description="A credential that is no secret type.")


def test_explain_and_shown_leave_out_repr_false_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    """``explain()`` (what ``config show`` prints) listed fields its repr hides."""
    setenv(monkeypatch, LLM_ROUTER_TOKEN=CANARY)
    settings = SettingsWithHidden()
    assert settings.token == CANARY
    assert CANARY not in repr(list(settings.explain()))
    assert "token" not in settings.shown()
    assert settings.shown()["retry"]["attempts"] == 3


@pytest.mark.parametrize(
    "env",
    [
        {"LLM_ROUTER_RETRY": '{"attempts": "' + CANARY + '"'},  # malformed JSON
        {"LLM_ROUTER_MAX_ATTEMPTS": CANARY},  # not an integer
        {"LLM_ROUTER_PROVIDERS__A__API_KEY": CANARY, "LLM_ROUTER_PROVIDERS__A__MODELS": MODELS},
        {"LLM_ROUTER_CONFIG_JSON": '{"redis_url": "' + CANARY + '", "retry": 1}'},
    ],
)
def test_errors_never_echo_values(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    setenv(monkeypatch, **env)
    with pytest.raises(ConfigurationError) as info:
        SettingsWithSecret()
    assert CANARY not in str(info.value)
    assert CANARY not in repr(info.value)


def test_a_yaml_error_never_quotes_the_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    file = tmp_path / "router.yaml"
    file.write_text(f'redis_url: "redis://:{CANARY}@host\nretry: [\n')
    monkeypatch.setenv("LLM_ROUTER_CONFIG_FILE", str(file))
    message = "\n".join(problems_of())
    assert "malformed YAML" in message
    assert CANARY not in message


# -- binding to runnables, and reload ----------------------------------------------------------


def two_providers(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for i, name in enumerate(names, start=1):
        monkeypatch.setenv(f"LLM_ROUTER_PROVIDERS__{name}__MODELS", MODELS)
        monkeypatch.setenv(f"LLM_ROUTER_PROVIDERS__{name}__PRIORITY", str(i))
    monkeypatch.setenv("LLM_ROUTER_STRATEGY", "cost_priority_round_robin")


def test_from_settings_matches_runnables_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    two_providers(monkeypatch, "OPENAI_EU", "LOCAL")
    eu, local = ScriptedChatModel(text="eu"), ScriptedChatModel(text="local")
    router = router_from_settings({"OpenAI-EU": eu, "local": local})
    assert list(router.providers) == ["local", "OpenAI-EU"]  # variables: in name order
    assert router.invoke("hi").content == "eu"


def test_from_settings_lists_every_mismatch(monkeypatch: pytest.MonkeyPatch) -> None:
    two_providers(monkeypatch, "A", "B")
    with pytest.raises(ConfigurationError) as info:
        router_from_settings({"a": ScriptedChatModel(), "c": ScriptedChatModel()})
    assert info.value.problems == [
        "providers.b: configured [env LLM_ROUTER_PROVIDERS__B__MODELS, "
        "env LLM_ROUTER_PROVIDERS__B__PRIORITY], but no runnable was given for it (given: a, c)",
        "'c': a runnable was given, but no provider 'c' is configured (configured: a, b); "
        "set LLM_ROUTER_PROVIDERS__C__MODELS",
    ]


def test_from_settings_without_providers_infers_them() -> None:
    router = router_from_settings({"solo": ScriptedChatModel(text="hi")}, RouterSettings())
    assert list(router.providers) == ["solo"]


def test_reload_keeps_the_state_of_remaining_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    two_providers(monkeypatch, "A", "B")
    monkeypatch.setenv("LLM_ROUTER_CIRCUIT_BREAKER__THRESHOLD", "1")
    monkeypatch.setenv("LLM_ROUTER_RETRY__ATTEMPTS", "1")
    a = ScriptedChatModel(script=[http_error(503)], text="a")
    b = ScriptedChatModel(text="b")
    router = router_from_settings({"a": a, "b": b}, clock=FakeClock())
    assert router.invoke("hi").content == "b"  # a failed once: its breaker opened
    metrics_a = router.providers["a"].metrics
    assert router.providers["a"].circuit_breaker_state == "open"

    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__B__PRIORITY", "0")  # b is now preferred
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__C__MODELS", MODELS)
    c = ScriptedChatModel(text="c")
    reload_from_settings(router, RouterSettings(), {"c": c})

    assert list(router.providers) == ["a", "b", "c"]
    assert router.providers["a"].metrics is metrics_a
    assert metrics_a.failed_requests == 1
    assert router.providers["a"].circuit_breaker_state == "open"
    assert router.providers["b"].priority == 0
    assert router.invoke("hi").content == "b"

    monkeypatch.delenv("LLM_ROUTER_PROVIDERS__A__MODELS")
    monkeypatch.delenv("LLM_ROUTER_PROVIDERS__A__PRIORITY")
    reload_from_settings(router)
    assert list(router.providers) == ["b", "c"]


def test_reload_without_provider_settings_keeps_the_providers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = router_from_settings({"solo": ScriptedChatModel()}, RouterSettings())
    monkeypatch.setenv("LLM_ROUTER_RETRY__ATTEMPTS", "5")
    reload_from_settings(router)
    assert list(router.providers) == ["solo"]
    assert router.router_config.retry.attempts == 5
    monkeypatch.setenv("LLM_ROUTER_DEFAULT_MODEL", "gpt-9")
    with pytest.raises(ConfigurationError, match="default_model: no provider serves this model"):
        reload_from_settings(router)


def test_reload_refuses_a_new_provider_without_runnable(monkeypatch: pytest.MonkeyPatch) -> None:
    two_providers(monkeypatch, "A")
    router = router_from_settings({"a": ScriptedChatModel()})
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__NEW__MODELS", MODELS)
    with pytest.raises(ConfigurationError, match=r"providers\.new: configured"):
        reload_from_settings(router)
    assert list(router.providers) == ["a"]


# -- the models mirror RouterConfig ----------------------------------------------------------


def test_settings_fields_mirror_the_config() -> None:
    assert set(ProviderSettings.model_fields) == set(ProviderConfig.model_fields) - {
        "name",
        "handler",
    }
    assert set(RouterConfig.model_fields) <= set(RouterSettings.model_fields)


def test_importing_the_package_skips_settings_and_settings_skip_the_router() -> None:
    """``import router_middleware`` stays free of pydantic-settings; no import cycle either."""
    import subprocess
    import sys

    code = (
        "import sys, router_middleware\n"
        "assert 'pydantic_settings' not in sys.modules\n"
        "assert not any(m.startswith('router_middleware.settings') for m in sys.modules)\n"
        "from router_middleware import RouterSettings\n"
        "assert RouterSettings.__module__ == 'router_middleware.settings._model'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    binding = (ROOT / "router_middleware" / "settings" / "_binding.py").read_text()
    top_level = [line for line in binding.splitlines() if line.startswith("from .._router")]
    assert top_level == []  # only under TYPE_CHECKING or inside a function
