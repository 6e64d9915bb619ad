"""A real ``redis-server`` for the shared-state tests, started on a free port, and a real
3-node Redis Cluster (3 masters, no replicas) on three more.

Missing ``redis-server`` fails the tests that need it: CI installs it (``.ci/run``), and a
skipped shared-state suite would hide exactly the bugs it is there for.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager

import redis
from redis.cluster import RedisCluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _binary(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed (apt-get install redis-server)")
    return binary


@contextmanager
def redis_server(
    extra: Sequence[str] = (), port: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run ``redis-server`` on a free loopback port: yields the process and its URL."""
    binary = _binary("redis-server")
    port = port or free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", workdir,
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            for _ in range(200):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.025)
            else:
                raise RuntimeError(f"redis-server did not start on port {port}")
            client.close()
            yield proc, url
        finally:
            proc.kill()
            proc.wait()


def cluster_state(url: str) -> str:
    """``cluster_state`` of one node's ``CLUSTER INFO`` (``ok`` once every slot is served)."""
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return str(client.cluster("INFO").get("cluster_state", ""))
    finally:
        client.close()


@contextmanager
def redis_cluster(nodes: int = 3) -> Iterator[tuple[list[subprocess.Popen[bytes]], str]]:
    """Run a Redis Cluster of ``nodes`` masters (no replicas) on free loopback ports, its
    slots split evenly: yields the processes and the URL of the first node (a client
    finds the others from it)."""
    cli = _binary("redis-cli")
    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory())
        servers = [
            stack.enter_context(
                redis_server(
                    [
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", f"{workdir}/nodes-{i}.conf",
                        "--cluster-node-timeout", "2000",
                        # The bus on a port of its own: the default (port + 10000) may be
                        # taken, or above 65535.
                        "--cluster-port", str(free_port()),
                    ]
                )
            )
            for i in range(nodes)
        ]  # fmt: skip
        urls = [url for _, url in servers]
        addresses = [url.removeprefix("redis://").removesuffix("/0") for url in urls]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while not all(cluster_state(url) == "ok" for url in urls):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster on {addresses} did not reach cluster_state:ok")
            time.sleep(0.05)
        # Every node must also know every other's slots, or a client's first CLUSTER
        # SLOTS may come from a node that has not heard of them all yet.
        while True:
            client = RedisCluster.from_url(urls[0].removesuffix("/0"))
            try:
                if len(client.get_primaries()) == nodes:
                    break
            finally:
                client.close()
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster's nodes did not learn of each other")
            time.sleep(0.05)
        yield [proc for proc, _ in servers], f"redis://{addresses[0]}"
