"""Driving the pipeline: the thin sync and async adapters around its one algorithm.

``drive`` and ``adrive`` run a request's plan (``_pipeline.Pipeline.run``), carrying out
each step it yields (an attempt, a sleep, a wait for a slot, a custom event) on a thread
or on the event loop, until an attempt succeeds or the plan raises.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig

from ._clock import Clock
from ._execute import attempt_config, attempt_input
from ._pipeline import CALL, EVENT, SLEEP, Pipeline, Served
from ._waiting import wait_for_slot, wait_for_slot_async

__all__ = ["adrive", "annotate", "drive"]

_T = TypeVar("_T")


def drive(
    pipeline: Pipeline,
    attempt: Callable[..., _T],
    value: Any,
    config: RunnableConfig,
    run: CallbackManagerForChainRun,
    model: str | None,
    kwargs: dict[str, Any],
) -> tuple[_T, Served]:
    """Run the pipeline on this thread until ``attempt`` succeeds (or the plan raises)."""
    plan = pipeline.run(model)
    step = next(plan)
    while True:
        if step[0] == CALL:
            try:
                result = attempt(*_call_args(step, value, config, run, kwargs))
            except BaseException as exc:
                step = plan.send(exc)
                continue
            return result, _finish(plan)
        step = plan.send(_wait_or_emit(pipeline.clock, step, run))


async def adrive(
    pipeline: Pipeline,
    attempt: Callable[..., Awaitable[_T]],
    value: Any,
    config: RunnableConfig,
    run: AsyncCallbackManagerForChainRun,
    model: str | None,
    kwargs: dict[str, Any],
) -> tuple[_T, Served]:
    """Run the pipeline on the event loop until ``attempt`` succeeds (or the plan raises)."""
    plan = pipeline.run(model)
    step = next(plan)
    while True:
        if step[0] == CALL:
            try:
                result = await attempt(*_call_args(step, value, config, run, kwargs))
            except BaseException as exc:
                step = plan.send(exc)
                continue
            return result, _finish(plan)
        step = plan.send(await _await_or_emit(pipeline.clock, step, run))


def _call_args(
    step: tuple[Any, ...],
    value: Any,
    config: RunnableConfig,
    run: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
    kwargs: dict[str, Any],
) -> tuple[Any, ...]:
    """The arguments of one attempt function for a ``CALL`` step (see ``_execute``)."""
    _, provider, model, number, timeout = step
    payload, options = attempt_input(provider, value, model, kwargs)
    return (
        provider,
        model,
        payload,
        attempt_config(config, run, provider.name, model, number),
        options,
        timeout,
    )


def _wait_or_emit(clock: Clock, step: tuple[Any, ...], run: CallbackManagerForChainRun) -> Any:
    """Carry out a non-call step on this thread; returns what the pipeline expects back."""
    if step[0] == EVENT:
        _emit(run, step[1], step[2])
    elif step[0] == SLEEP or step[2] is None:
        clock.sleep(step[1])
    else:
        return wait_for_slot(step[2], step[1])
    return None


async def _await_or_emit(
    clock: Clock, step: tuple[Any, ...], run: AsyncCallbackManagerForChainRun
) -> Any:
    """Carry out a non-call step without blocking the loop."""
    if step[0] == EVENT:
        await _aemit(run, step[1], step[2])
    elif step[0] == SLEEP or step[2] is None:
        await clock.asleep(step[1])
    else:
        return await wait_for_slot_async(step[2], step[1])
    return None


def _finish(plan: Any) -> Served:
    try:
        plan.send(None)
    except StopIteration as stop:
        return cast(Served, stop.value)
    raise RuntimeError("routing plan did not finish after a successful attempt")


def annotate(output: _T, served: Served) -> _T:
    """Record the serving provider, model and attempts in ``response_metadata["router"]``.

    In place: the message is the provider's fresh output, and a copy costs more than routing.
    """
    metadata = getattr(output, "response_metadata", None)
    if isinstance(metadata, dict):
        metadata["router"] = served.metadata()
    return output


def _emit(run: CallbackManagerForChainRun, name: str, data: Any) -> None:
    if run.handlers:
        run.get_child().on_custom_event(name, data, run_id=run.run_id)


async def _aemit(run: AsyncCallbackManagerForChainRun, name: str, data: Any) -> None:
    if run.handlers:
        await run.get_child().on_custom_event(name, data, run_id=run.run_id)
