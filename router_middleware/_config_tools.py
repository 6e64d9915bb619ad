"""Configuration of tools and structured output: what a provider can do, and tool loops.

Capabilities are detected where LangChain can tell (a ``bind_tools`` that raises
``NotImplementedError``, a model profile that says ``tool_calling: False``); a provider's
config declares them where it cannot (whether ``tool_choice`` is enforced, whether strict
schemas or images are taken). ``None`` means "detect", ``True`` "assume it can", ``False``
"never send it such requests".

Example:
    >>> caps = CapabilitiesConfig(tool_choice=False)
    >>> caps.tools is None, caps.tool_choice
    (True, False)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._config_base import ConfigModel

__all__ = ["CapabilitiesConfig", "StructuredOutputConfig", "ToolLoopConfig"]

StructuredMethod = Literal["function_calling", "json_schema", "json_mode"]


class CapabilitiesConfig(ConfigModel):
    """What a provider can do, where detection cannot tell; ``None`` detects."""

    tools: bool | None = Field(None, description="Whether it calls tools.")
    tool_choice: bool | None = Field(
        None, description="Whether it enforces a forced `tool_choice` (`any`, a tool's name)."
    )
    strict: bool | None = Field(None, description="Whether it takes strict tool schemas.")
    parallel_tool_calls: bool | None = Field(
        None, description="Whether it takes the `parallel_tool_calls` option."
    )
    vision: bool | None = Field(None, description="Whether it takes image input.")
    structured_output: list[StructuredMethod] | None = Field(
        None, description="The structured-output methods it implements; none to detect."
    )
    prefill: bool | None = Field(
        None,
        description="Whether it continues a partial assistant message (prefill), so a broken "
        "stream can resume on it from where it broke; none to detect (`ChatAnthropic`).",
    )


class StructuredOutputConfig(ConfigModel):
    """What an answer that does not parse or validate against the schema means."""

    counts_for_breaker: bool = Field(
        True, description="Whether an answer that fails to parse counts toward the breaker."
    )
    retry: bool = Field(
        False, description="Whether to ask the same provider again before failing over."
    )


class ToolLoopConfig(ConfigModel):
    """Tool loops: the turn after a tool result."""

    stick_to_provider: bool = Field(
        True,
        description="Prefer the provider that made the tool calls for the turn after them.",
    )
