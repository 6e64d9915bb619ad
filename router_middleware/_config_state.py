"""Configuration of where live state lives: in this process (the default) or on Redis,
shared by every replica.

``url`` names the Redis (``redis://``, ``rediss://`` for TLS, ``unix://``); it may hold a
password, so it is a secret: :meth:`StateConfig.display_url` shows it with the password
masked, and nothing else ever shows it. Every operation on Redis is bounded by
``timeout_seconds`` with client retries off; when Redis fails, ``on_error`` says what the
router does until it answers again: ``local`` keeps limiting on this replica's own state,
each shared limit divided by ``expected_replicas``; ``open`` admits without limits;
``closed`` refuses the providers whose state is on Redis. With ``cluster``, ``url`` names
one node of a Redis Cluster; every key of a provider shares one hash tag, so each
provider's state lives on one node and every script runs there.

Example:
    >>> cfg = StateConfig(url="redis://:hunter2@cache:6379/0")
    >>> cfg.display_url(), cfg.key_prefix, cfg.on_error
    ('redis://:***@cache:6379/0', 'llmr', 'local')
    >>> "hunter2" in repr(cfg)
    False
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from ._config_base import ConfigModel, Count, FieldProblem, Number

__all__ = ["StateConfig"]

_SCHEMES = ("redis", "rediss", "unix")


class StateConfig(ConfigModel):
    """Where limits, breakers, cool-downs and slots live (in-memory unless ``url``)."""

    url: SecretStr | None = Field(
        None,
        description="Redis shared by the replicas (`redis://`, `rediss://`, `unix://`); "
        "none keeps state in this process.",
    )
    cluster: bool = Field(
        False,
        description="`url` names one node of a Redis Cluster (`redis://` or `rediss://`); "
        "the client finds the others and sends each provider's keys to the node of their "
        "slot.",
    )
    key_prefix: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^{}\s]+$")] = Field(
        "llmr", description="Prefix of every key (routers with one prefix share state)."
    )
    timeout_seconds: Annotated[Number, Field(ge=0.001, le=10)] = Field(
        0.1, description="Bound on every Redis operation (connect, command)."
    )
    on_error: Literal["local", "open", "closed"] = Field(
        "local",
        description="While Redis fails: `local` limits on this replica's state (shared "
        "limits divided by `expected_replicas`), `open` admits, `closed` refuses.",
    )
    expected_replicas: Count = Field(
        1, le=10_000, description="Replicas sharing the limits (divides them while degraded)."
    )
    lease_seconds: Annotated[Number, Field(ge=1, le=3600)] = Field(
        30.0,
        description="How long a concurrency slot outlives a replica that stopped renewing it.",
    )
    recheck_seconds: Annotated[Number, Field(ge=0.01, le=60)] = Field(
        1.0, description="How often a degraded router checks whether Redis is back."
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        scheme = urlsplit(value.get_secret_value()).scheme
        if scheme not in _SCHEMES:
            # The URL may hold a password: name what is wrong, never quote it.
            raise ValueError(f"the URL's scheme must be one of {', '.join(_SCHEMES)}")
        return value

    @model_validator(mode="after")
    def _cluster_over_tcp(self) -> StateConfig:
        url = self.url
        if self.cluster and url is not None and urlsplit(url.get_secret_value()).scheme == "unix":
            raise FieldProblem("url", "a Redis Cluster is reached over TCP, not unix://")
        return self

    @property
    def shared(self) -> bool:
        return self.url is not None

    def display_url(self) -> str | None:
        """The URL with its password (if any) masked: safe to log and show."""
        if self.url is None:
            return None
        parts = urlsplit(self.url.get_secret_value())
        netloc = parts.netloc
        if "@" in netloc:
            user, _, host = netloc.rpartition("@")
            name = user.partition(":")[0]
            netloc = f"{name}:***@{host}" if ":" in user or not name else f"{name}@{host}"
        return f"{parts.scheme}://{netloc}{parts.path}"
