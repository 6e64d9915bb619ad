"""The router's own chain run: how it starts, and when an invoke is routed as a stream.

Helpers of the run scaffold (``_run``): the chain run opened for every request, named
after the router (or the config's ``run_name``), and the check that turns an invoke
whose tokens a handler relays into a stream.

Example:
    >>> message_of(None).content
    ''
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForChainRun,
    BaseCallbackManager,
    CallbackManager,
    CallbackManagerForChainRun,
)
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.utils import message_chunk_to_message
from langchain_core.tracers._streaming import _StreamingCallbackHandler

from ._context import RequestContext
from ._shape import StructuredShape

if TYPE_CHECKING:
    from ._router import ResilientRouter

__all__ = ["astart", "message_of", "relays_tokens", "start"]


def start(
    router: ResilientRouter, ctx: RequestContext, manager: CallbackManager
) -> CallbackManagerForChainRun:
    config = ctx.config
    return manager.on_chain_start(
        None,
        ctx.input,
        name=config.get("run_name") or router.get_name(),
        run_id=config.pop("run_id", None),
    )


async def astart(
    router: ResilientRouter, ctx: RequestContext, manager: AsyncCallbackManager
) -> AsyncCallbackManagerForChainRun:
    config = ctx.config
    return await manager.on_chain_start(
        None,
        ctx.input,
        name=config.get("run_name") or router.get_name(),
        run_id=config.pop("run_id", None),
    )


def relays_tokens(router: ResilientRouter, manager: BaseCallbackManager) -> bool:
    """Whether a handler relays the tokens of an invoke (LangGraph's ``stream_mode=
    "messages"``), which makes chat models stream inside ``invoke``.

    Such an invoke is routed as a stream: a provider that fails before its first token
    fails over; one that fails after it raises, since its tokens already reached the
    reader (as ``stream()`` does). A structured answer is no stream of message chunks.
    Asked only when ``manager`` has handlers (most calls have none).
    """
    if isinstance(router.shape, StructuredShape):
        return False
    return any(isinstance(h, _StreamingCallbackHandler) for h in manager.handlers)


def message_of(final: Any) -> BaseMessage:
    """The message of a stream's summed chunks (an empty one for a stream of none)."""
    return AIMessage("") if final is None else message_chunk_to_message(final)
