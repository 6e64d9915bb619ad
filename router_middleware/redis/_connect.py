"""Building the shared store from :class:`~router_middleware.StateConfig`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .._clock import Clock
from .._config_state import StateConfig
from .._errors import ConfigurationError
from ._fallback import FallbackStore
from ._store import RedisStore

if TYPE_CHECKING:
    from redis.cluster import RedisCluster
    from redis.commands.core import Script

__all__ = ["shared_store"]


def shared_store(config: StateConfig, clock: Clock | None = None) -> FallbackStore:
    """The store ``config`` describes: Redis at ``config.url`` (a Redis Cluster with
    ``config.cluster``), every operation bounded by ``timeout_seconds`` with client retries
    off, degrading as ``on_error`` says.

    Connects lazily: a router starts while Redis is down (degraded until it answers).
    """
    if config.url is None:
        raise ValueError("state.url is not set")
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.cluster import RedisCluster
        from redis.retry import Retry
    except ImportError as exc:
        raise ConfigurationError(
            ["state.url: shared state needs redis-py: pip install 'router-middleware[redis]'"]
        ) from exc
    timeout = config.timeout_seconds
    # Given here and taken out of the URL's query (where redis-py would let it win), so
    # they bound every operation whatever the URL says.
    bounds: dict[str, Any] = dict(
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry_on_timeout=False,
        health_check_interval=0,
    )
    url = _without(config.url.get_secret_value(), bounds)
    client: Any
    if config.cluster:
        # ``retry`` is the cluster client's own (it replaces the deprecated
        # ``cluster_error_retry_attempts``): with none, a command that meets a dead or slow
        # node fails after one timeout (redis-py gives its node clients no retries).
        client = _ClusterOnFirstUse(
            lambda: RedisCluster.from_url(url, retry=Retry(NoBackoff(), 0), **bounds)
        )
    else:
        client = redis.Redis.from_url(url, retry=Retry(NoBackoff(), 0), **bounds)
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


def _without(url: str, names: Any) -> str:
    """``url`` without the query options ``names`` (the ones the store sets itself)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in names]
    return urlunsplit(parts._replace(query=urlencode(kept)))


class _ClusterOnFirstUse:
    """A ``RedisCluster`` built at its first command. redis-py's constructor reads the slot
    map at once and raises while no node answers; built here instead, a failure is one
    operation's (the store degrades, and the re-check builds it once the cluster answers),
    so a router starts while its cluster is down, as with one Redis."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._client: Any = None
        self._lock = threading.Lock()

    def register_script(self, source: str) -> Script:
        from redis.commands.core import Script

        # Runs through this object, so it builds the client at the script's first run.
        return Script(cast("RedisCluster", self), source)

    def get_encoder(self) -> Any:
        from redis._parsers.encoders import Encoder

        return Encoder("utf-8", "strict", False)  # type: ignore[no-untyped-call]  # to hash scripts

    def _cluster(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._build()
        return self._client

    def ping(self) -> bool:
        """``True`` when every master answers and the cluster serves every slot, else it
        raises: what a degraded store waits for. ``PING`` alone goes to one node, and
        nodes answer it while the cluster refuses commands (``CLUSTERDOWN``): the store
        would switch back, and fail again, at every re-check."""
        from redis.cluster import RedisCluster
        from redis.exceptions import ClusterDownError

        infos = self._cluster().cluster_info(target_nodes=RedisCluster.PRIMARIES)
        if "cluster_state" in infos:  # one master: its reply, not one per node
            infos = {"": infos}
        if any(info.get("cluster_state") != "ok" for info in infos.values()):
            raise ClusterDownError("cluster_state is not ok")
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cluster(), name)
