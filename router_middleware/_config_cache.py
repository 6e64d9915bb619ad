"""Configuration of the response cache: whether answers are reused, for how long, for whom.

The cache is off unless ``enabled``. It is bounded twice: in entries (``max_entries``) and
in bytes (``max_bytes``, an estimate of each answer's size), and an entry lives at most
``ttl_seconds``. ``scope`` says whose answer a request may reuse: any provider's for the
model (``model``), or only one from a provider this request may use (``provider``).
``key_metadata`` names run-config metadata keys whose values are part of the key, so
tenants never share entries.

Example:
    >>> cfg = CacheConfig(enabled=True, key_metadata=["tenant_id"])
    >>> cfg.scope, cfg.ttl_seconds, cfg.single_flight
    ('model', 300.0, True)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._config_base import ConfigModel, Count, Seconds

__all__ = ["CacheConfig"]


class CacheConfig(ConfigModel):
    """The response cache (off by default)."""

    enabled: bool = Field(False, description="Whether identical requests reuse an answer.")
    ttl_seconds: Seconds = Field(300.0, description="How long an answer is reused.")
    max_entries: Count = Field(1_024, le=10**7, description="The most answers kept.")
    max_bytes: Count | None = Field(
        64 * 1024 * 1024,
        le=2**40,
        description="The most bytes of answers kept (estimated); none for no byte bound.",
    )
    scope: Literal["model", "provider"] = Field(
        "model",
        description="Whose answer a request reuses: any provider's for the model (`model`) "
        "or only one from a provider the request may use (`provider`).",
    )
    key_metadata: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list,
        description="Run-config metadata keys whose values are part of the key "
        "(`tenant_id`: tenants never share answers).",
    )
    single_flight: bool = Field(
        True, description="Whether identical requests in flight at once make one call."
    )
