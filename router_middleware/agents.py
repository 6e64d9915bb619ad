"""An agent middleware: ``create_agent`` keeps its model and gains the router's protection.

:class:`RouterMiddleware` routes each model call of a ``langchain.agents.create_agent``
agent through a router's policies: admission (breaker, cool-down, request bucket,
concurrency), retries that honour ``Retry-After``, the deadline, and failover to the
router's other providers. Needs the ``agents`` extra (``langchain``).

Invariants:

- Every provider is called through the agent's own model-call handler, with only the
  model swapped (``request.override(model=...)``): tools, response format and the inner
  middleware apply to a fallback exactly as to the agent's model, and a structured
  response is parsed by the agent as usual.
- The agent's own model serves as the provider named ``agent_provider`` (which the
  router's config lists, with its limits); the other providers are the router's chat
  models. A history another provider began is made fit for the one that serves.
- An outage raises the router's typed error (``AllProvidersFailedError``,
  ``NoProviderAvailableError``...); it never becomes an assistant message.

Example:
    >>> from langchain.agents import create_agent
    >>> from router_middleware import ResilientRouter
    >>> from router_middleware.testing import ToolCallingChatModel, http_error
    >>> backup = ToolCallingChatModel(script=["from the backup"])
    >>> router = ResilientRouter(
    ...     {"agent": backup, "backup": backup},
    ...     {"providers": [{"name": "agent", "models": [{"name": "m"}], "priority": 1},
    ...                    {"name": "backup", "models": [{"name": "m"}], "priority": 2}]},
    ... )
    >>> own = ToolCallingChatModel(script=[http_error(503)] * 3)
    >>> agent = create_agent(own, middleware=[RouterMiddleware(router, agent_provider="agent")])
    >>> agent.invoke({"messages": [("user", "hi")]})["messages"][-1].content
    'from the backup'
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware, ModelRequest, ModelResponse
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

from ._binding import Binding, as_message
from ._errors import InvalidProviderOutputError
from ._history import portable_history
from ._router import ResilientRouter
from ._run import ainvoke_run, invoke_run
from ._shape import StructuredAnswer, chat_model_of

__all__ = ["RouterMiddleware"]

Handler = Callable[[ModelRequest], ModelResponse]
AsyncHandler = Callable[[ModelRequest], Awaitable[ModelResponse]]


class RouterMiddleware(AgentMiddleware):
    """Route an agent's model calls through ``router``'s policies and providers.

    Args:
        router: the router whose limits, breakers, retries and providers apply.
        agent_provider: the router's provider served by the agent's own model; ``None``
            to serve every call from the router's providers. The router is built with a
            runnable for it as for any provider (the agent's own model will do): that one
            serves the router's calls made outside an agent.
        model: the logical model to route (the router's default when ``None``).
    """

    def __init__(
        self,
        router: ResilientRouter,
        *,
        agent_provider: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__()
        if agent_provider is not None:
            router.provider(agent_provider)  # raises UnknownProviderError, naming the others
        self.router = router
        self.agent_provider = agent_provider
        self.model = model

    def wrap_model_call(self, request: ModelRequest, handler: Handler) -> ModelResponse:
        def call(name: str, model: BaseChatModel) -> Any:
            return lambda _input: handler(_request_for(request, name, model))

        routed = self._per_request(request, call)
        # The handler's own model call relays its tokens; the answer is a ModelResponse.
        answer = invoke_run(routed, request.messages, None, self.model, {}, relay_tokens=False)
        return answer  # type: ignore[return-value]

    async def awrap_model_call(self, request: ModelRequest, handler: AsyncHandler) -> ModelResponse:
        def call(name: str, model: BaseChatModel) -> Any:
            async def acall(_input: Any) -> ModelResponse:
                return await handler(_request_for(request, name, model))

            return acall

        routed = self._per_request(request, call, is_async=True)
        answer = await ainvoke_run(
            routed, request.messages, None, self.model, {}, relay_tokens=False
        )
        return answer  # type: ignore[return-value]

    def _per_request(
        self,
        request: ModelRequest,
        call: Callable[[str, BaseChatModel], Any],
        *,
        is_async: bool = False,
    ) -> ResilientRouter:
        """The router with each provider's call made through the agent's handler."""
        router = self.router
        bindings: dict[str, Binding] = {}
        for name, binding in router.bindings.items():
            runnables = {}
            reasons = {}
            for served in binding.models:
                if name == self.agent_provider:
                    model: Any = request.model
                else:
                    model = chat_model_of(binding.runnable(served))
                if not isinstance(model, BaseChatModel):
                    reasons[served] = (
                        f"{type(model).__name__} is not a chat model an agent can call"
                    )
                    continue
                fn = call(name, model)
                runnables[served] = (
                    RunnableLambda(_not_sync, afunc=fn, name=name)
                    if is_async
                    else RunnableLambda(fn, name=name)
                )
            bindings[name] = Binding.calling(binding, runnables, _read_response, reasons)
        unsupported = {n: b.unsupported for n, b in bindings.items() if b.unsupported}
        return router.model_copy(update={"bindings": bindings, "unsupported": unsupported})


def _request_for(request: ModelRequest, provider: str, model: BaseChatModel) -> ModelRequest:
    messages = portable_history(request.messages, provider)
    return request.override(model=model, messages=list(messages))  # type: ignore[arg-type]


def _read_response(value: Any, provider: str) -> StructuredAnswer:
    """The handler's response as the answer; its message carries usage and metadata."""
    if isinstance(value, AIMessage):
        value = ModelResponse(result=[value])
    if not isinstance(value, ModelResponse):
        raise InvalidProviderOutputError(provider, f"returned {type(value).__name__}")
    messages = [m for m in value.result if isinstance(m, AIMessage)]
    raw = as_message(messages[-1] if messages else None, provider)
    return StructuredAnswer(raw, value, include_raw=False)


def _not_sync(_input: Any) -> Any:
    raise RuntimeError("the async model-call path was called synchronously")
