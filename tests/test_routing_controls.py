"""Per-request routing controls: providers pinned, excluded, or filtered by their tags.

Four providers, in priority order: paris (eu, paid), dublin (eu, free-tier), virginia
(us, paid), oregon (us, free-tier). Each behaviour runs through invoke, ainvoke, stream
and astream, and is measured in the provider fakes (who was called, what they received).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate

from router_middleware import (
    AllProvidersFailedError,
    FakeClock,
    InvalidInputError,
    LLMRequest,
    NoProviderAvailableError,
    ResilientRouter,
    Routing,
)
from router_middleware.testing import ToolCallingChatModel, http_error

from .conftest import provider_config
from .test_testing_tools import DATA, Weather, get_weather
from .test_tools_routing import ENTRIES, Entry, served_by, tool_loop

TAGS = {
    "paris": ["eu", "paid"],
    "dublin": ["eu", "free-tier"],
    "virginia": ["us", "paid"],
    "oregon": ["us", "free-tier"],
}
NAMES = list(TAGS)
CONTROLS = ["only_providers", "exclude_providers", "require_tags", "exclude_tags"]


@pytest.fixture(params=ENTRIES)
def entry(request: pytest.FixtureRequest) -> Entry:
    return Entry(request.param)


class World:
    """The four providers' fakes and a router over them (priority: paris first)."""

    def __init__(self, clock: FakeClock, *script: Any, **config: Any) -> None:
        self.fakes = {n: ToolCallingChatModel(script=list(script), clock=clock) for n in NAMES}
        configs = [
            provider_config(n, priority=i, tags=TAGS[n]) for i, n in enumerate(NAMES, start=1)
        ]
        config.setdefault("strategy", "cost_priority_round_robin")
        config.setdefault("retry", {"attempts": 2, "initial_backoff_seconds": 0.01})
        self.router = ResilientRouter(self.fakes, {"providers": configs, **config}, clock=clock)

    def called(self) -> dict[str, int]:
        """Calls per provider, for those called at all."""
        return {n: f.calls for n, f in self.fakes.items() if f.calls}

    def received(self) -> list[dict[str, Any]]:
        """The call options of every request any provider received."""
        return [r.kwargs for f in self.fakes.values() for r in f.requests]


@pytest.fixture
def world(clock: FakeClock) -> World:
    return World(clock)


@pytest.fixture
def failing(clock: FakeClock) -> World:
    """Every provider answers 503: a request tries each allowed one twice, then fails."""
    return World(clock, *[http_error(503)] * 4)


# Each control on its own, then combined: the providers allowed, in priority order.
CASES = [
    ({}, NAMES),
    ({"only_providers": ["virginia", "dublin"]}, ["dublin", "virginia"]),
    ({"exclude_providers": ["paris", "oregon"]}, ["dublin", "virginia"]),
    ({"require_tags": ["us"]}, ["virginia", "oregon"]),
    ({"require_tags": ["eu", "free-tier"]}, ["dublin"]),  # every tag, not any
    ({"exclude_tags": ["free-tier"]}, ["paris", "virginia"]),
    ({"exclude_tags": ["eu", "paid"]}, ["oregon"]),  # none of them
    ({"only_providers": ["paris", "oregon"], "exclude_providers": ["paris"]}, ["oregon"]),
    ({"require_tags": ["eu"], "exclude_tags": ["paid"]}, ["dublin"]),
    (
        {"only_providers": ["paris", "virginia", "oregon"], "require_tags": ["us"]},
        ["virginia", "oregon"],
    ),
    ({"exclude_providers": ["virginia"], "exclude_tags": ["eu"]}, ["oregon"]),
    ({"require_tags": []}, NAMES),  # an empty list narrows nothing
    ({"only_providers": None, "require_tags": None}, NAMES),  # None: not given
]
IDS = [",".join(sorted(c)) or "none" for c, _ in CASES]


@pytest.mark.parametrize(("controls", "allowed"), CASES, ids=IDS)
def test_the_first_allowed_provider_serves(world, entry, controls, allowed) -> None:
    assert served_by(entry.answer(world.router, **controls)) == allowed[0]
    assert world.called() == {allowed[0]: 1}


@pytest.mark.parametrize(("controls", "allowed"), CASES, ids=IDS)
def test_fallback_stays_within_the_allowed_providers(failing, entry, controls, allowed) -> None:
    with pytest.raises(AllProvidersFailedError) as info:
        entry.answer(failing.router, **controls)
    assert list(info.value.errors) == allowed
    assert failing.called() == dict.fromkeys(allowed, 2)  # each retried once, as configured


def test_a_failing_allowed_provider_hands_over_to_the_next_allowed(clock, entry) -> None:
    world = World(clock)
    world.fakes["paris"].script.extend([http_error(503)] * 2)
    message = entry.answer(world.router, only_providers=["oregon", "paris"])
    # dublin and virginia come before oregon by priority, but are not allowed.
    assert served_by(message) == "oregon"
    assert world.called() == {"paris": 2, "oregon": 1}
    trail = [t["provider"] for t in message.response_metadata["router"]["attempts"]]
    assert trail == ["paris", "paris", "oregon"]


# -- where the controls come from ------------------------------------------------------


def test_run_config_configurable_sets_them(world, entry) -> None:
    config = {"configurable": {"require_tags": ["us"], "exclude_tags": ["paid"]}}
    assert served_by(entry.answer(world.router, config=config)) == "oregon"


def test_run_config_metadata_sets_them_below_configurable(world, entry) -> None:
    config = {"metadata": {"require_tags": ["us"], "exclude_tags": ["paid"]}}
    assert served_by(entry.answer(world.router, config=config)) == "oregon"
    # configurable wins over metadata, field by field: require_tags from it, the rest not.
    config["configurable"] = {"require_tags": ["eu"]}
    assert served_by(entry.answer(world.router, config=config)) == "dublin"
    with pytest.raises(InvalidInputError, match=r"metadata\['require_tags'\]"):
        entry.answer(world.router, config={"metadata": {"require_tags": "eu"}})


def test_the_call_wins_over_the_run_config_field_by_field(world, entry) -> None:
    config = {"configurable": {"require_tags": ["us"], "exclude_tags": ["paid"]}}
    # require_tags from the call replaces the config's; exclude_tags stays the config's.
    message = entry.answer(world.router, config=config, require_tags=["eu"])
    assert served_by(message) == "dublin"
    message = entry.answer(world.router, config=config, require_tags=None)  # not given
    assert served_by(message) == "oregon"


def test_with_config_sets_them_for_a_runnable(world, entry) -> None:
    eu_only = world.router.with_config(configurable={"require_tags": ["eu"]})
    assert served_by(entry.answer(eu_only, exclude_providers=["paris"])) == "dublin"


def test_batch_passes_them_to_every_input(world) -> None:
    answers = world.router.batch(["a", "b"], require_tags=["us"], exclude_tags=["paid"])
    assert [served_by(m) for m in answers] == ["oregon", "oregon"]
    configs = [{"configurable": {"only_providers": [n]}} for n in ("dublin", "paris")]
    answers = asyncio.run(world.router.abatch(["a", "b"], configs))
    assert [served_by(m) for m in answers] == ["dublin", "paris"]


def test_bind_inside_a_chain(world, entry) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = prompt | world.router.bind(require_tags=["us"])
    assert served_by(entry.answer(chain, {"question": "where?"})) == "virginia"
    # The chain's run config reaches the router too; the bound call option wins.
    config = {"configurable": {"require_tags": ["eu"], "exclude_tags": ["paid"]}}
    assert served_by(entry.answer(chain, {"question": "where?"}, config=config)) == "oregon"
    assert all(not set(CONTROLS) & set(kwargs) for kwargs in world.received())


# -- what the providers receive --------------------------------------------------------


def test_the_controls_never_reach_a_provider(world, entry) -> None:
    config = {"configurable": {"exclude_tags": ["free-tier"]}}
    entry.answer(world.router, config=config, require_tags=["us"], temperature=0.5)
    entry.answer(world.router.bind(only_providers=["paris"], stop=["\n"]))
    [first], [second] = world.fakes["virginia"].requests, world.fakes["paris"].requests
    assert (first.kwargs, second.kwargs) == ({"temperature": 0.5}, {})
    assert second.options == {"stop": ["\n"]}  # the other options do reach it


def test_a_handler_gets_no_control_in_its_request(clock: FakeClock, entry) -> None:
    seen: list[LLMRequest] = []

    def handler(request: LLMRequest) -> str:
        seen.append(request)
        return "handled"

    configs = [provider_config("h", tags=["eu"]), provider_config("other", priority=0)]
    router = ResilientRouter({"h": handler, "other": handler}, {"providers": configs}, clock=clock)
    message = entry.answer(router, require_tags=["eu"], temperature=0.2, user="u1")
    assert served_by(message) == "h"
    assert (seen[0].metadata, seen[0].temperature) == ({"user": "u1"}, 0.2)


def test_execute_takes_the_controls(world) -> None:
    response = world.router.execute({"prompt": "hi"}, require_tags=["us"], exclude_tags=["paid"])
    assert response.provider == "oregon"
    answer = asyncio.run(world.router.aexecute(LLMRequest("hi"), only_providers=["dublin"]))
    assert answer.provider == "dublin"
    with pytest.raises(InvalidInputError, match="require_tags"):
        world.router.execute({"prompt": "hi"}, require_tags="eu")
    assert world.received() == [{}, {}]


# -- derived routers and the chat model ------------------------------------------------


def test_bound_tools_route_within_the_controls(clock: FakeClock, entry) -> None:
    world = World(clock)
    tools = world.router.bind_tools([get_weather], tool_choice="any")
    assert served_by(entry.answer(tools, exclude_tags=["eu"])) == "virginia"
    [record] = world.fakes["virginia"].requests
    assert (record.tools, record.tool_choice, record.kwargs) == (["get_weather"], "any", {})


def test_a_tool_loop_does_not_stick_to_an_excluded_provider(world, entry) -> None:
    tools = world.router.bind_tools([get_weather])
    assert served_by(entry.answer(tools, tool_loop("dublin"))) == "dublin"  # it sticks
    message = entry.answer(tools, tool_loop("dublin"), exclude_providers=["dublin"])
    assert served_by(message) == "paris"
    assert world.called() == {"dublin": 1, "paris": 1}


def test_structured_output_routes_within_the_controls(clock: FakeClock, entry) -> None:
    from router_middleware.testing import Structured

    world = World(clock, Structured(DATA))
    structured = world.router.with_structured_output(Weather)
    # A control reaching a structured chain's model would be refused there as an option.
    assert entry.answer(structured, require_tags=["us"]) == Weather(**DATA)
    assert world.called() == {"virginia": 1}


def test_the_chat_model_takes_the_controls(world, entry) -> None:
    chat = world.router.as_chat_model()
    assert served_by(entry.answer(chat, require_tags=["us"])) == "virginia"
    # bind_tools on a chat model drops bound call options (LangChain's RunnableBinding),
    # so an agent is narrowed through its run config.
    tools = chat.bind_tools([get_weather])
    config = {"configurable": {"only_providers": ["oregon"]}}
    assert served_by(entry.answer(tools, config=config)) == "oregon"
    assert world.received() == [{}, {}]


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["chat_model", "middleware"])
def test_an_agent_is_narrowed_through_its_run_config(world, kind, mode) -> None:
    from langchain.agents import create_agent

    from router_middleware.agents import RouterMiddleware

    if kind == "chat_model":
        agent = create_agent(world.router.as_chat_model(), tools=[get_weather])
    else:  # the agent's own model serves as provider paris
        middleware = RouterMiddleware(world.router, agent_provider="paris")
        agent = create_agent(world.fakes["paris"], [get_weather], middleware=[middleware])
    config = {"configurable": {"require_tags": ["eu"], "exclude_tags": ["paid"]}}
    state = {"messages": [HumanMessage("hi")]}
    if mode == "sync":
        result = agent.invoke(state, config)
    else:
        result = asyncio.run(agent.ainvoke(state, config))
    assert served_by(result["messages"][-1]) == "dublin"
    assert world.called() == {"dublin": 1}


# -- refused controls ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("controls", "names"),
    [
        ({"only_providers": ["paris", "lyon"]}, "only_providers names 'lyon'"),
        (
            {"exclude_providers": ["cork", "paris", "bonn"]},
            "exclude_providers names 'bonn', 'cork'",
        ),
    ],
)
def test_an_unknown_provider_name_is_refused(world, entry, controls, names) -> None:
    with pytest.raises(InvalidInputError) as info:
        entry.answer(world.router, **controls)
    assert names in str(info.value)
    assert "known providers: dublin, oregon, paris, virginia" in str(info.value)
    assert world.called() == {}


@pytest.mark.parametrize("key", CONTROLS)
def test_a_single_string_is_refused(world, entry, key) -> None:
    with pytest.raises(InvalidInputError, match=rf"^{key} must be a list.*write \['paris'\]"):
        entry.answer(world.router, **{key: "paris"})
    configured = {"configurable": {key: "paris"}}
    with pytest.raises(InvalidInputError, match=rf"^configurable\['{key}'\] must be a list"):
        entry.answer(world.router, config=configured)
    assert world.called() == {}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (["eu", 3], "holds 3 (int): each tag must be a non-empty str"),
        (["eu", ""], "holds '' (str): each tag must be a non-empty str"),
        ({"eu": True}, "must be a list of tags, not dict"),
        (7, "must be a list of tags, not int"),
    ],
)
def test_a_tag_that_is_no_non_empty_string_is_refused(world, value, says) -> None:
    with pytest.raises(InvalidInputError, match="^require_tags " + re.escape(says)):
        world.router.invoke("hi", require_tags=value)
    assert world.called() == {}


# -- nothing left ----------------------------------------------------------------------


def test_nothing_left_says_why_per_provider(world, entry) -> None:
    controls = {
        "exclude_providers": ["paris"],
        "require_tags": ["eu"],
        "exclude_tags": ["free-tier"],
    }
    with pytest.raises(NoProviderAvailableError) as info:
        entry.answer(world.router, **controls)
    assert info.value.reasons == {
        "paris": "excluded by the request",
        "dublin": "has excluded tag 'free-tier'",
        "virginia": "lacks tag 'eu'",
        "oregon": "lacks tag 'eu'",
    }
    with pytest.raises(NoProviderAvailableError) as info:
        entry.answer(world.router, only_providers=["dublin"], require_tags=["eu", "paid"])
    assert info.value.reasons == {
        "paris": "not among the request's only_providers",
        "dublin": "lacks tag 'paid'",
        "virginia": "not among the request's only_providers",
        "oregon": "not among the request's only_providers",
    }
    assert world.called() == {}


def test_a_named_provider_that_is_no_candidate_says_why(clock: FakeClock, entry) -> None:
    world = World(clock)
    world.router.disable("paris")
    with pytest.raises(NoProviderAvailableError) as info:
        entry.answer(world.router, only_providers=["paris"])
    assert info.value.reasons["paris"] == "disabled"
    assert info.value.reasons["dublin"] == "not among the request's only_providers"
    configs = [provider_config("a"), provider_config("b", models=("other",))]
    router = ResilientRouter(
        {"a": ToolCallingChatModel(), "b": ToolCallingChatModel()}, {"providers": configs}
    )
    with pytest.raises(NoProviderAvailableError) as info:
        entry.answer(router, model="m", only_providers=["b"])
    assert info.value.reasons == {
        "a": "not among the request's only_providers",
        "b": "does not serve model 'm'",
    }


# -- the value object and the hot path -------------------------------------------------


def test_routing_normalises_and_validates_what_it_is_given() -> None:
    routing = Routing(only=["a", "b", "a"], exclude={"c"}, tags=["eu"])  # type: ignore[arg-type]
    assert (routing.only, routing.exclude, routing.tags) == (("a", "b"), {"c"}, {"eu"})
    assert routing == Routing(only=("a", "b"), exclude=frozenset({"c"}), tags=frozenset({"eu"}))
    assert hash(routing) == hash(Routing(("a", "b"), frozenset("c"), frozenset({"eu"})))
    assert (Routing().empty, Routing(only=()).empty) == (True, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        routing.only = None  # type: ignore[misc]
    with pytest.raises(InvalidInputError, match=r"^exclude_tags holds None"):
        Routing(exclude_tags=frozenset({None}))  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"^only must be a list of provider names"):
        Routing(only="a")  # type: ignore[arg-type]


def test_a_request_without_controls_never_parses_any(
    world, entry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def parse(*args: Any) -> Any:
        raise AssertionError("parsed the controls of a request that has none")

    monkeypatch.setattr("router_middleware._run.requested", parse)
    config = {"configurable": {"thread_id": "t1", "model": "m"}}
    assert served_by(entry.answer(world.router, config=config, temperature=0)) == "paris"
    with pytest.raises(AssertionError, match="parsed the controls"):
        entry.answer(world.router, require_tags=["eu"])


def test_names_are_checked_against_the_reloaded_providers(
    world, make_router: Callable[..., ResilientRouter]
) -> None:
    configs = [provider_config(n, priority=i, tags=TAGS[n]) for i, n in enumerate(NAMES[:2], 1)]
    world.router.apply_config({"providers": configs})
    assert served_by(world.router.invoke("hi", exclude_providers=["paris"])) == "dublin"
    with pytest.raises(InvalidInputError, match=r"'virginia'.*known providers: dublin, paris$"):
        world.router.invoke("hi", only_providers=["virginia"])
