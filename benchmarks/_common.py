"""Shared pieces of the benchmarks: zero-latency providers, statistics, tables and JSON.

Not a benchmark itself. Every script imports it as ``_common`` (scripts run as
``python benchmarks/<name>.py``, so this directory is on ``sys.path``).
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# A router rate limit that is enforced on every call but never refuses one in a benchmark.
UNLIMITED_RATE = {"requests_per_second": 1e9, "burst": 1_000_000_000, "max_concurrent": 100_000}


class ServiceUnavailable(Exception):
    """A provider error as SDKs raise it: HTTP 503, transient, worth retrying."""

    status_code = 503


class ConstantChatModel(BaseChatModel):
    """A chat model answering a constant, natively on both paths (no executor hop).

    ``latency`` is slept (``time.sleep`` / ``asyncio.sleep``) before answering; with
    ``yield_to_loop`` an async call with no latency still suspends once, as any call over
    a network does, so concurrent requests interleave. ``fail`` makes every call raise
    :class:`ServiceUnavailable`. Each answer is a fresh message, as a real provider's is.
    """

    reply: str = "ok"
    latency: float = 0.0
    yield_to_loop: bool = False
    fail: bool = False

    @property
    def _llm_type(self) -> str:
        return "constant-benchmark"

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:
        """Tools formatted once and bound, as partner packages do."""
        from langchain_core.utils.function_calling import convert_to_openai_tool

        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    def _result(self) -> ChatResult:
        if self.fail:
            raise ServiceUnavailable("HTTP 503")
        return ChatResult(generations=[ChatGeneration(message=AIMessage(self.reply))])

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency:
            time.sleep(self.latency)
        return self._result()

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.latency or self.yield_to_loop:
            await asyncio.sleep(self.latency)
        return self._result()


def router_provider(name: str, priority: int, model: str = "m", **extra: Any) -> dict[str, Any]:
    """A provider entry with a never-refusing rate limit (so the limiter runs every call)."""
    return {
        "name": name,
        "priority": priority,
        "models": [{"name": model}],
        "rate_limit": dict(UNLIMITED_RATE),
        **extra,
    }


# -- statistics -------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = p / 100 * (len(sorted_values) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (rank - lo)


def p50_p99(samples: Iterable[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return percentile(ordered, 50), percentile(ordered, 99)


def median(values: Iterable[float]) -> float:
    data = [v for v in values if v == v]  # drop NaN
    return statistics.median(data) if data else float("nan")


# -- environment and output ---------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any]:
    def run(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    return {"commit": run("rev-parse", "--short", "HEAD"), "dirty": bool(run("status", "-s"))}


def environment() -> dict[str, Any]:
    """Versions, machine and date, for every results file."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "git": _git(),
        "versions": {
            name: _version(name)
            for name in ("router-middleware", "langchain-core", "pydantic", "litellm")
        },
    }


# Taken when a benchmark starts: the code it measures is the code of that moment.
_STARTED = environment()


def write_results(
    name: str, args: Any, figures: Mapping[str, Any], script: str | None = None
) -> Path:
    """Write ``benchmarks/results/<name>.json``: the figures, the flags and the environment.

    ``script``: the benchmark's name when ``name`` is that of a partial run's file.
    """
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    data = {
        "benchmark": script or name,
        "command": "python " + " ".join([f"benchmarks/{script or name}.py", *sys.argv[1:]]),
        "settings": vars(args),
        "environment": _STARTED,
        **figures,
    }
    path.write_text(json.dumps(rounded(data), indent=1) + "\n")
    return path


def rounded(value: Any, digits: int = 4) -> Any:
    """Round floats in nested data, so results files stay small and readable."""
    if isinstance(value, float):
        return round(value, digits) if value == value else None
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain-text table with right-aligned columns (left for the first)."""
    cells = [[str(h) for h in headers]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    out = [line(cells[0]), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def block_network() -> None:
    """Make any IP connection or DNS lookup fail loudly: benchmarks never use the network.

    Local socket pairs (the event loop's self-pipe) are unaffected.
    """
    if getattr(socket.socket.connect, "_benchmark_guard", False):
        return
    connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise OSError(f"benchmark tried a network call to {address!r}")
        connect(self, address)

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        raise OSError(f"benchmark tried to resolve {host!r}")

    guarded_connect._benchmark_guard = True  # type: ignore[attr-defined]
    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.getaddrinfo = guarded_getaddrinfo
