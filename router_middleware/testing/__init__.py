"""Fakes for testing code that uses the router: scripted and simulated chat providers.

:class:`ScriptedChatModel` is a real LangChain chat model (it opens LLM runs, streams
chunks and reports ``usage_metadata``) whose every call follows a script of behaviours:
answer, fail with a given error, be slow, hang, or break a stream part-way. Latency is
spent on an injectable clock, so with :class:`FakeClock` slow providers cost no time.

Example:
    >>> from router_middleware.testing import ScriptedChatModel, Fail, http_error
    >>> model = ScriptedChatModel(script=[Fail(http_error(503)), "fine"])
    >>> model.invoke("hi").content
    Traceback (most recent call last):
    ...
    router_middleware.testing.HTTPStatusError: HTTP 503
    >>> model.invoke("hi").content
    'fine'

:class:`ToolCallingChatModel` adds what agents need: ``bind_tools``, tool-call answers
(:class:`CallTools`), ``with_structured_output`` for every method (:class:`Structured`),
and a record of every request (:class:`CallRecord`):

    >>> from router_middleware.testing import CallTools, ToolCall, ToolCallingChatModel
    >>> model = ToolCallingChatModel(script=[CallTools([ToolCall("add", {"a": 1})]), "2"])
    >>> def add(a: int) -> int:
    ...     '''Add one.'''
    ...     return a + 1
    >>> bound = model.bind_tools([add])
    >>> bound.invoke("1 + 1?").tool_calls
    [{'name': 'add', 'args': {'a': 1}, 'id': 'call_1', 'type': 'tool_call'}]
    >>> bound.invoke("thanks").content, model.requests[-1].tools
    ('2', ['add'])
"""

from ._scripted import (
    Behaviour,
    Fail,
    FakeClock,
    Hang,
    HTTPStatusError,
    Reply,
    ScriptedChatModel,
    StreamBreak,
    http_error,
)
from ._tools import CallRecord, CallTools, Structured, ToolCall, ToolCallingChatModel

# Its tracebacks (and the doctests above) name it where users import it from.
HTTPStatusError.__module__ = __name__

__all__ = [
    "Behaviour",
    "CallRecord",
    "CallTools",
    "Fail",
    "FakeClock",
    "HTTPStatusError",
    "Hang",
    "LoopClock",
    "Reply",
    "ScriptedChatModel",
    "SimulatedProvider",
    "StreamBreak",
    "Structured",
    "ToolCall",
    "ToolCallingChatModel",
    "VirtualLoop",
    "Window",
    "http_error",
    "run_virtual",
]

# Last, because these build on the fakes above (``SimulatedProvider`` is a
# ``ScriptedChatModel``); they live with the simulator in ``router_middleware.sim``.
from ..sim._provider import SimulatedProvider, Window  # noqa: E402
from ..sim._virtual import LoopClock, VirtualLoop, run_virtual  # noqa: E402
