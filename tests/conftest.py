"""Shared helpers for the router's end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from router_middleware import FakeClock, ResilientRouter
from router_middleware.testing import ScriptedChatModel

# A replica's process (run with ``python -m``), not a test module: importing it for
# --doctest-modules would connect to a Redis named by an environment it does not have.
collect_ignore = ["replica_worker.py"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def provider_config(name: str, *, models: tuple[str, ...] = ("m",), **extra: Any) -> dict[str, Any]:
    return {"name": name, "models": [{"name": m} for m in models], **extra}


@pytest.fixture
def make_router(clock: FakeClock) -> Callable[..., ResilientRouter]:
    """Build a router over the given providers, on the fake clock, with fast retries."""

    def make(
        providers: Mapping[str, Any],
        configs: list[dict[str, Any]] | None = None,
        **config: Any,
    ) -> ResilientRouter:
        configs = configs or [
            provider_config(name, priority=i) for i, name in enumerate(providers, start=1)
        ]
        config.setdefault("strategy", "cost_priority_round_robin")
        config.setdefault("retry", {"attempts": 2, "initial_backoff_seconds": 0.01})
        return ResilientRouter(dict(providers), {"providers": configs, **config}, clock=clock)

    return make


@pytest.fixture
def scripted(clock: FakeClock) -> Callable[..., ScriptedChatModel]:
    def make(*script: Any, **kwargs: Any) -> ScriptedChatModel:
        kwargs.setdefault("clock", clock)
        return ScriptedChatModel(script=list(script), **kwargs)

    return make


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No LLM_ROUTER_* variable from the outside, and no stray .env in the directory."""
    for name in list(os.environ):
        if name.upper().startswith("LLM_ROUTER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A real redis-server for the session (see ``tests/redis_server.py``)."""
    from tests.redis_server import redis_server

    with redis_server() as (_, url):
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A client of the session's redis-server, on an empty database."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A real 3-node Redis Cluster (3 masters, no replicas) for the session: the URL of one
    node, from which a client finds the others (see ``tests/redis_server.py``)."""
    from tests.redis_server import redis_cluster

    with redis_cluster() as (_, url):
        yield url


@pytest.fixture
def redis_cluster_client(redis_cluster_url: str) -> Iterator[Any]:
    """A client of the session's cluster, every node's database empty."""
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(redis_cluster_url)
    client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    client.close()
