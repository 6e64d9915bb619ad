"""Declared capabilities: image input kept from providers that take none; config checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import HumanMessage

from router_middleware import ConfigurationError, NoProviderAvailableError, ResilientRouter
from router_middleware.testing import ScriptedChatModel
from tests.conftest import provider_config

IMAGE = HumanMessage(
    content=[
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
    ]
)


def _router(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., ScriptedChatModel]
) -> tuple[ResilientRouter, ScriptedChatModel, ScriptedChatModel]:
    blind, seeing = scripted(text="blind"), scripted(text="seeing")
    router = make_router(
        {"blind": blind, "seeing": seeing},
        [
            provider_config("blind", priority=1, capabilities={"vision": False}),
            provider_config("seeing", priority=2),
        ],
    )
    return router, blind, seeing


async def test_an_image_skips_a_provider_that_takes_none(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., ScriptedChatModel]
) -> None:
    router, blind, seeing = _router(make_router, scripted)
    assert router.invoke([IMAGE]).content == "seeing"
    assert (await router.ainvoke([IMAGE])).content == "seeing"
    assert (blind.calls, seeing.calls) == (0, 2)
    # Text still goes to the preferred provider.
    assert router.invoke("just text").content == "blind"


def test_no_provider_for_an_image_names_the_reason(
    make_router: Callable[..., ResilientRouter], scripted: Callable[..., ScriptedChatModel]
) -> None:
    router = make_router(
        {"blind": scripted()}, [provider_config("blind", capabilities={"vision": False})]
    )
    with pytest.raises(NoProviderAvailableError) as info:
        router.invoke([IMAGE])
    assert info.value.reasons == {"blind": "its config says it takes no image input"}


@pytest.mark.parametrize(
    ("capabilities", "field"),
    [
        ({"tools": "sometimes"}, "capabilities.tools"),
        ({"structured_output": ["xml"]}, "capabilities.structured_output"),
        ({"telepathy": True}, "capabilities.telepathy"),
    ],
)
def test_bad_capabilities_name_the_field(capabilities: dict[str, Any], field: str) -> None:
    config = {"providers": [provider_config("a", capabilities=capabilities)]}
    with pytest.raises(ConfigurationError) as info:
        ResilientRouter({"a": ScriptedChatModel()}, config)
    assert field in str(info.value)
