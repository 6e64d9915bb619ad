"""Two routers on one Redis, in one process: what one replica learns, the other knows
(a Retry-After cool-down, an open breaker), the limits are the deployment's, and
``metrics(scope="cluster")`` counts every replica's attempts."""

from __future__ import annotations

from typing import Any

import pytest

from router_middleware import NoProviderAvailableError, ResilientRouter
from router_middleware.testing import ScriptedChatModel, http_error


def provider(**extra: Any) -> dict[str, Any]:
    return {"name": "p", "models": [{"name": "m", "cost_per_1k_input_tokens": 1.0}], **extra}


def replicas(url: str, model: Any, n: int = 2, **config: Any) -> list[ResilientRouter]:
    config.setdefault("providers", [provider()])
    config.setdefault("max_wait_seconds", 0)
    config.setdefault("retry", {"attempts": 1})
    return [ResilientRouter({"p": model}, {"state": {"url": url}, **config}) for _ in range(n)]


def close(*routers: ResilientRouter) -> None:
    for router in routers:
        router.store.close()  # type: ignore[attr-defined]


def test_a_retry_after_learned_by_one_replica_cools_the_provider_for_all(
    redis_url: str, redis_client: Any
) -> None:
    model = ScriptedChatModel(script=[http_error(429, retry_after=30)])
    a, b = replicas(redis_url, model)
    with pytest.raises(Exception):  # noqa: B017, PT011 - the 429, as the caller sees it
        a.invoke("hi", model="m")
    with pytest.raises(NoProviderAvailableError) as caught:
        b.invoke("hi", model="m")
    assert "cooling down" in caught.value.reasons["p"]
    assert 29 < b.providers["p"].cooldown_left <= 30
    assert model.calls == 1
    close(a, b)


def test_a_breaker_opened_by_one_replica_stops_the_other(redis_url: str, redis_client: Any) -> None:
    model = ScriptedChatModel(script=[ConnectionError("down")] * 2)
    a, b = replicas(redis_url, model, circuit_breaker={"threshold": 2})
    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017, PT011
            a.invoke("hi", model="m")
    assert b.providers["p"].circuit_breaker_state == "open"
    with pytest.raises(NoProviderAvailableError) as caught:
        b.invoke("hi", model="m")
    assert caught.value.reasons["p"] == "circuit open"
    assert model.calls == 2
    close(a, b)


def test_a_request_rate_is_the_deployments(redis_url: str, redis_client: Any) -> None:
    limits = {"rate_limit": {"requests_per_second": 0.01, "burst": 3}}
    a, b = replicas(redis_url, ScriptedChatModel(), providers=[provider(**limits)])
    served = 0
    for router in (a, b, a, b, a, b):
        try:
            router.invoke("hi", model="m")
            served += 1
        except NoProviderAvailableError:
            pass
    assert served == 3
    close(a, b)


def test_cluster_metrics_count_every_replicas_attempts(redis_url: str, redis_client: Any) -> None:
    model = ScriptedChatModel(script=["one", ConnectionError("down"), "two", "three"])
    a, b = replicas(redis_url, model)
    a.invoke("hi", model="m")
    with pytest.raises(Exception):  # noqa: B017, PT011
        b.invoke("hi", model="m")
    b.invoke("hi", model="m")
    b.invoke("hi", model="m")
    cluster = a.metrics(scope="cluster")
    counts = cluster["providers"]["p"]
    assert counts["attempts"] == 4
    assert counts["succeeded"] == 3
    assert counts["failed"] == 1
    assert counts["failed:transient"] == 1
    assert counts["input_tokens"] > 0
    assert cluster["totals"]["attempts"] == 4
    assert a.metrics()["providers"]["p"]["total_requests"] == 1  # local stays local
    assert b.metrics(scope="cluster") == cluster
    close(a, b)


def test_cluster_metrics_need_shared_state() -> None:
    router = ResilientRouter({"p": ScriptedChatModel()}, {"providers": [provider()]})
    with pytest.raises(ValueError, match=r"state\.url"):
        router.metrics(scope="cluster")
