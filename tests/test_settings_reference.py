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
