"""Driving the plan: the thin sync and async adapters around its one algorithm.

``drive`` and ``adrive`` run a request's plan (``Pipeline.run``), carrying out each step
it yields on a thread or on the event loop, until it yields :class:`~._steps.Deliver`;
the caller hands the answer over, then ``finish``/``afinish`` report how that ended and
carry out the plan's last steps. A call's outcome, an exception included, is *sent* to
the plan, which decides what it means; an exception raised while carrying out any other
step (a cancelled sleep, a callback that raised) is *thrown* into it, so it settles what
it holds before the exception goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForChainRun, CallbackManagerForChainRun
from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableConfig

from ._binding import Binding
from ._clock import Clock
from ._context import RequestContext
from ._execute import attempt_config, call_async, call_sync
from ._gates import Refusal
from ._lease import Lease
from ._metrics import usage_from_message
from ._pipeline import Plan
from ._shape import StructuredAnswer
from ._steps import Admit, Call, Deliver, Emit, Estimate, Pause, Sleep, Step, WaitForSlot
from ._streams import open_stream_async, open_stream_sync
from ._waiting import wait_for_slot, wait_for_slot_async

__all__ = [
    "adrive",
    "afinish",
    "annotate",
    "cost_tail",
    "delivered",
    "drive",
    "finish",
    "priced",
    "quiet",
]


def drive(
    plan: Plan,
    bindings: Mapping[str, Binding],
    ctx: RequestContext,
    clock: Clock,
    run: CallbackManagerForChainRun,
    send: BaseException | None = None,
) -> Deliver:
    """Run the plan on this thread until it delivers (or raises); ``send`` tells a plan
    that delivered how its stream broke, for it to resume the stream elsewhere."""
    step: Step = plan.send(send)  # next(plan) when it has not started
    while True:
        # Steps are final classes: ``type() is`` spares the ``__class__`` lookup that a
        # failed isinstance() makes, on the two steps every request takes.
        if type(step) is Call:
            try:
                result = _call(step, bindings, ctx, clock, run)
            except BaseException as exc:
                step = plan.send(exc)
                continue
            step = plan.send(result)
        elif type(step) is Deliver:
            return step
        else:
            step = _resume(plan, *_capture(step, clock, run))


def finish(
    plan: Plan, outcome: BaseException | None, clock: Clock, run: CallbackManagerForChainRun
) -> None:
    """Tell the plan how delivery ended and carry out its last steps."""
    try:
        step: Step = plan.send(outcome)
        while True:
            step = _resume(plan, *_capture(step, clock, run))
    except StopIteration:
        return


def _call(
    step: Call,
    bindings: Mapping[str, Binding],
    ctx: RequestContext,
    clock: Clock,
    run: CallbackManagerForChainRun,
) -> Any:
    lease = step.lease
    binding = bindings[lease.provider.name]
    runnable, payload, config, options = _arguments(lease, binding, ctx, run, step.value)
    if ctx.stream:
        return open_stream_sync(
            lease, runnable, payload, config, options, step.timeout, clock, step.deadline
        )
    return call_sync(lease, runnable, payload, config, options, step.timeout, binding.read)


def _resume(plan: Plan, answer: Any, error: BaseException | None) -> Step:
    """Hand a step's answer back to the plan, or throw in what carrying it out raised.

    A plain function: its ``StopIteration`` (the plan ended) reaches the async callers as
    is, where escaping a helper coroutine would turn it into a ``RuntimeError``.
    """
    return plan.send(answer) if error is None else plan.throw(error)


def _capture(
    step: Step, clock: Clock, run: CallbackManagerForChainRun
) -> tuple[Any, BaseException | None]:
    """Carry out a non-call step on this thread: its answer, or what it raised."""
    try:
        if isinstance(step, Emit):
            if run.handlers:
                run.get_child().on_custom_event(step.name, step.data, run_id=run.run_id)
        elif isinstance(step, WaitForSlot):
            return wait_for_slot(step.blocked, step.seconds), None
        elif isinstance(step, (Sleep, Pause)):
            clock.sleep(step.seconds)
        elif isinstance(step, Estimate):
            step.context.estimated_tokens()
        elif isinstance(step, Admit):
            return step.run(), None
        else:
            raise TypeError(f"unexpected routing step {step!r} after delivery")
    except BaseException as exc:
        return None, exc
    return None, None


async def adrive(
    plan: Plan,
    bindings: Mapping[str, Binding],
    ctx: RequestContext,
    clock: Clock,
    run: AsyncCallbackManagerForChainRun,
    send: BaseException | None = None,
) -> Deliver:
    """Run the plan on the event loop until it delivers (or raises); ``send`` as in
    :func:`drive`."""
    step: Step = plan.send(send)
    while True:
        if type(step) is Call:  # not isinstance(): as in drive()
            lease = step.lease
            try:
                binding = bindings[lease.provider.name]
                runnable, payload, config, options = _arguments(
                    lease, binding, ctx, run, step.value
                )
                if ctx.stream:
                    result: Any = await open_stream_async(
                        lease,
                        runnable,
                        payload,
                        config,
                        options,
                        step.timeout,
                        clock,
                        step.deadline,
                    )
                else:
                    result = await call_async(
                        lease, runnable, payload, config, options, step.timeout, binding.read
                    )
            except BaseException as exc:
                step = plan.send(exc)
                continue
            step = plan.send(result)
        elif type(step) is Deliver:
            return step
        else:
            step = _resume(plan, *await _acapture(step, clock, run))


async def afinish(
    plan: Plan,
    outcome: BaseException | None,
    clock: Clock,
    run: AsyncCallbackManagerForChainRun,
) -> None:
    """Async :func:`finish`."""
    try:
        step: Step = plan.send(outcome)
        while True:
            step = _resume(plan, *await _acapture(step, clock, run))
    except StopIteration:
        return


async def _acapture(
    step: Step, clock: Clock, run: AsyncCallbackManagerForChainRun
) -> tuple[Any, BaseException | None]:
    """Carry out a non-call step without blocking the loop: its answer, or what it raised."""
    try:
        if isinstance(step, Emit):
            if run.handlers:
                await run.get_child().on_custom_event(step.name, step.data, run_id=run.run_id)
        elif isinstance(step, WaitForSlot):
            return await wait_for_slot_async(step.blocked, step.seconds), None
        elif isinstance(step, (Sleep, Pause)):
            await clock.asleep(step.seconds)
        elif isinstance(step, Estimate):
            await asyncio.to_thread(step.context.estimated_tokens)
        elif isinstance(step, Admit):
            return await _admit_off_loop(step), None
        else:
            raise TypeError(f"unexpected routing step {step!r} after delivery")
    except BaseException as exc:
        return None, exc
    return None, None


async def _admit_off_loop(step: Admit) -> tuple[Lease, Refusal | None]:
    """Admission on a worker thread; cancelled meanwhile, what it took is given back."""
    admitted = asyncio.get_running_loop().run_in_executor(None, step.run)
    try:
        return await asyncio.shield(admitted)
    except BaseException:
        admitted.add_done_callback(_give_back)
        raise


def _give_back(admitted: asyncio.Future[tuple[Lease, Refusal | None]]) -> None:
    if not admitted.cancelled() and admitted.exception() is None:
        lease, refusal = admitted.result()
        if refusal is None:
            lease.cancel()


def _arguments(
    lease: Lease,
    binding: Binding,
    ctx: RequestContext,
    run: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
    value: Any = None,
) -> tuple[Any, Any, RunnableConfig, dict[str, Any]]:
    """The runnable, input (``value`` in place of the request's) config and options of
    one attempt."""
    payload, options = binding.arguments(
        ctx.input if value is None else value, lease.model, ctx.options
    )
    if ctx.stream and lease.model in binding.stream_usage and "stream_usage" not in options:
        options = {**options, "stream_usage": True}  # so stream metrics count tokens and cost
    config = attempt_config(ctx.config, run, lease.provider.name, lease.model, lease.attempt)
    return binding.runnable(lease.model), payload, config, options


def delivered(deliver: Deliver) -> Any:
    """The caller's answer, annotated with its cost too; the lease keeps the provider's
    message (its usage)."""
    result = deliver.result
    raw = result.raw if type(result) is StructuredAnswer else result
    deliver.lease.message = annotate(raw, deliver)
    if getattr(raw, "usage_metadata", None):
        priced(raw, deliver.lease)
    return result.value if raw is not result else result


def priced(message: Any, lease: Lease) -> None:
    """Add the cost of ``message`` (from its usage and the model's prices) to its
    ``response_metadata["router"]``, in the currency the prices are in."""
    metadata = getattr(message, "response_metadata", None)
    if isinstance(metadata, dict) and "router" in metadata:
        metadata["router"]["cost"] = _cost(message, lease)


def quiet(chunk: Any) -> bool:
    """A chunk with nothing to read (usage, a finish reason: a stream's usual last ones),
    which can be held back until the next one comes without delaying any text."""
    return not chunk.content and not getattr(chunk, "tool_call_chunks", None)


def cost_tail(final: Any, held: Any, lease: Lease) -> Any:
    """What ends a stream: its quiet last chunk ``held`` back (``None`` if none), carrying
    the cost of the whole stream (known only once its usage is in) under
    ``response_metadata["router"]``, which the chunks' sum merges with the first chunk's;
    a chunk without content for the cost when the stream ended on text; else nothing."""
    total = final if held is None else final + held
    if not getattr(total, "usage_metadata", None):
        return held
    cost = _cost(total, lease)
    if held is None:
        return AIMessageChunk(content="", id=final.id, response_metadata={"router": {"cost": cost}})
    held.response_metadata["router"] = {"cost": cost}
    return held


def _cost(message: Any, lease: Lease) -> dict[str, Any]:
    provider = lease.provider
    cost_in, cost_out = provider.price(lease.model, *usage_from_message(message))
    return {
        "input": cost_in,
        "output": cost_out,
        "total": cost_in + cost_out,
        "currency": provider.currency,
    }


def annotate(output: Any, deliver: Deliver) -> Any:
    """Record the serving provider, model and attempts in ``response_metadata["router"]``.

    In place: the message is the provider's fresh output, and a copy costs more than routing.
    """
    metadata = getattr(output, "response_metadata", None)
    if isinstance(metadata, dict):
        lease = deliver.lease
        metadata["router"] = {
            "provider": lease.provider.name,
            "model": lease.model,
            "attempts": deliver.trail,
        }
    return output
