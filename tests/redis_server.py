"""A real ``redis-server`` for the shared-state tests, started on a free port.

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
from contextlib import contextmanager

import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def redis_server(
    extra: Sequence[str] = (), port: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """Run ``redis-server`` on ``port`` (a free loopback one by default): yields the
    process and its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
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
