"""The variable reference: generated from the models, and what docs/ENV.md holds."""

from __future__ import annotations

from pathlib import Path

from router_middleware import RouterConfig
from router_middleware.settings import env_reference

ROOT = Path(__file__).resolve().parent.parent


def test_docs_env_md_is_the_generated_reference() -> None:
    # Regenerate with: llm-router config reference > docs/ENV.md
    assert (ROOT / "docs" / "ENV.md").read_text() == env_reference()


def test_reference_names_every_field() -> None:
    text = env_reference()
    for name in RouterConfig.model_fields:
        if name != "providers":
            assert f"`LLM_ROUTER_{name.upper()}" in text
    assert "`LLM_ROUTER_PROVIDERS__<NAME>__RATE_LIMIT__MAX_CONCURRENT`" in text
    assert "`LLM_ROUTER_PROVIDERS__<NAME>__RETRY__*` | section | router-wide" in text


def test_every_config_field_is_described_once_and_shared_by_the_settings() -> None:
    from router_middleware import (
        CircuitBreakerConfig,
        ModelConfig,
        ProviderConfig,
        RateLimitConfig,
        RetryConfig,
        TimeoutConfig,
    )
    from router_middleware.settings import ProviderSettings, RouterSettings

    for model in (ModelConfig, RateLimitConfig, RetryConfig, CircuitBreakerConfig,
                  TimeoutConfig, ProviderConfig, RouterConfig):  # fmt: skip
        missing = [name for name, f in model.model_fields.items() if not f.description]
        assert missing == [], model.__name__
    for settings, config in ((RouterSettings, RouterConfig), (ProviderSettings, ProviderConfig)):
        for name, field in settings.model_fields.items():
            if name in config.model_fields and name != "providers":
                theirs = config.model_fields[name]
                assert (field.annotation, field.default, field.description, field.metadata) == (
                    theirs.annotation, theirs.default, theirs.description, theirs.metadata
                ), name  # fmt: skip
    assert RouterSettings.model_fields["max_cooldown_seconds"].default == 300.0
