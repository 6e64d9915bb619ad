"""Building the shared store from :class:`~router_middleware.StateConfig`."""

from __future__ import annotations

from .._clock import Clock
from .._config_state import StateConfig
from .._errors import ConfigurationError
from ._fallback import FallbackStore
from ._store import RedisStore

__all__ = ["shared_store"]


def shared_store(config: StateConfig, clock: Clock | None = None) -> FallbackStore:
    """The store ``config`` describes: Redis at ``config.url``, every operation bounded by
    ``timeout_seconds`` with client retries off, degrading as ``on_error`` says.

    Connects lazily: a router starts while Redis is down (degraded until it answers).
    """
    if config.url is None:
        raise ValueError("state.url is not set")
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError as exc:
        raise ConfigurationError(
            ["state.url: shared state needs redis-py: pip install 'router-middleware[redis]'"]
        ) from exc
    timeout = config.timeout_seconds
    client = redis.Redis.from_url(
        config.url.get_secret_value(),
        # Given here, not in the URL: each bounds every operation whatever the URL says.
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )
    shared = RedisStore(
        client, prefix=config.key_prefix, lease_seconds=config.lease_seconds, clock=clock
    )
    return FallbackStore(
        shared,
        on_error=config.on_error,
        replicas=config.expected_replicas,
        recheck_seconds=config.recheck_seconds,
        label=config.display_url(),
    )
