"""Mechanism of one provider attempt that answers at once: its child run and its timeout.

The pipeline decides *which* provider and *whether* to try again; this module only runs
an attempt, sync or async, as a child run of the router's run (tagged with the provider
and the attempt number), and turns silence into :class:`ProviderTimeoutError`. Streams
are ``_streams``.

What a call holds is released only once the call has really ended (see ``_lease``): a
sync call preempted at its timeout runs on in its worker thread, which tells its lease
when it returns.
"""

from __future__ import annotations

import asyncio
import contextvars
import sys
import threading
from collections.abc import Callable
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import var_child_runnable_config

from ._binding import as_message
from ._errors import ProviderTimeoutError
from ._lease import Lease

__all__ = ["attempt_config", "call_async", "call_sync", "tighter", "within"]

if sys.version_info >= (3, 11):
    _timeout = asyncio.timeout
else:  # pragma: no cover - exercised on 3.10 only
    _timeout = None


def attempt_config(
    config: RunnableConfig,
    run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
    provider: str,
    model: str,
    number: int,
) -> RunnableConfig:
    """The config of one attempt: a child of the router's run, tagged for tracing.

    The tags and metadata ride in the config rather than on the child callback manager
    (where LangChain merges metadata dicts on every call): the provider's run gets them
    when it configures its callbacks, and so do runs nested inside it.
    """
    marks = _MARKS.get((provider, model, number))
    if marks is None:
        marks = _marks(provider, model, number)
    tags, metadata = marks
    out: RunnableConfig = {
        **config,
        "callbacks": run_manager.get_child(),
        "tags": [*config.get("tags", ()), *tags],
        "metadata": {**config.get("metadata", {}), **metadata},
    }
    out.pop("run_name", None)
    out.pop("run_id", None)
    return out


_Marks = tuple[tuple[str, ...], dict[str, Any]]

_MARKS: dict[tuple[str, str, int], _Marks] = {}
"""The tags and metadata of an attempt by provider, model and attempt number: formatted
once, not on every attempt (and copied into each config, never shared). Bounded by the
configured providers, their models and ``max_attempts``."""


def _marks(provider: str, model: str, number: int) -> _Marks:
    tags = (f"router:provider={provider}", f"router:attempt={number}")
    metadata = {"router_provider": provider, "router_model": model, "router_attempt": number}
    marks = _MARKS[provider, model, number] = (tags, metadata)
    return marks


# -- single answers ----------------------------------------------------------------------


def call_sync(
    lease: Lease,
    runnable: Runnable[Any, Any],
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
    read: Callable[[Any, str], Any] = as_message,
) -> Any:
    """Invoke one attempt on this thread; preempt it only if an attempt timeout is set.

    ``read`` turns the provider's output into the answer, or raises the provider's
    failure (a structured answer that does not validate). A sync call cannot be
    cancelled: on timeout it is abandoned in its worker thread, which keeps the
    attempt's slot until the call returns.
    """
    name = lease.provider.name
    token = var_child_runnable_config.set(config)
    try:
        if lease.provider.attempt_seconds is None or timeout is None:
            return read(runnable.invoke(value, config, **kwargs), name)
        return _in_thread(
            lease, timeout, lambda: read(runnable.invoke(value, config, **kwargs), name)
        )
    finally:
        var_child_runnable_config.reset(token)


async def call_async(
    lease: Lease,
    runnable: Runnable[Any, Any],
    value: Any,
    config: RunnableConfig,
    kwargs: dict[str, Any],
    timeout: float | None,
    read: Callable[[Any, str], Any] = as_message,
) -> Any:
    """Await one attempt, cancelling it if it outlives ``timeout``."""
    name = lease.provider.name
    token = var_child_runnable_config.set(config)
    try:
        if timeout is None:
            return read(await runnable.ainvoke(value, config, **kwargs), name)
        if _timeout is None:  # pragma: no cover - 3.10
            answer = await within(
                name, "attempt", timeout, runnable.ainvoke(value, config, **kwargs)
            )
            return read(answer, name)
        try:  # inline rather than through within(): one coroutine fewer per attempt
            async with _timeout(timeout):
                answer = await runnable.ainvoke(value, config, **kwargs)
        except TimeoutError as exc:
            if isinstance(exc, ProviderTimeoutError):
                raise
            raise ProviderTimeoutError(name, "attempt", timeout) from None
        return read(answer, name)
    finally:
        var_child_runnable_config.reset(token)


async def within(provider: str, phase: str, timeout: float, awaitable: Any) -> Any:
    try:
        if _timeout is not None:
            async with _timeout(timeout):
                return await awaitable
        return await asyncio.wait_for(awaitable, timeout)  # pragma: no cover - 3.10
    except TimeoutError as exc:
        if isinstance(exc, ProviderTimeoutError):
            raise
        raise ProviderTimeoutError(provider, phase, timeout) from None


def _in_thread(lease: Lease, timeout: float, fn: Callable[[], Any]) -> Any:
    done = threading.Event()
    box: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()

    def run() -> None:
        try:
            box.append((True, context.run(fn)))
        except BaseException as exc:  # handed to the caller's thread
            box.append((False, exc))
        finally:
            lease.call_ended()
            done.set()

    lease.detach()
    try:
        threading.Thread(
            target=run, name=f"router-attempt-{lease.provider.name}", daemon=True
        ).start()
    except BaseException:  # no thread, so no call: nothing will report its end
        lease.call_ended()
        raise
    if not done.wait(timeout):
        raise ProviderTimeoutError(lease.provider.name, "attempt", timeout)
    ok, value = box[0]
    if ok:
        return value
    raise value


def tighter(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else min(a, b)
