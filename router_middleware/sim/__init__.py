"""The simulator: the real router against simulated providers, on virtual time.

A :class:`Scenario` says what to run (the router's configuration, each provider's
:class:`Fault`, the traffic); :func:`simulate` runs it through a real
:class:`~router_middleware.ResilientRouter` and returns a :class:`SimulationReport`.
``llm-router simulate`` is this, from the command line. :func:`token_scenario`
(``llm-router simulate --tokens``) sends prompts of varied sizes (a :class:`PromptMix`)
to providers that enforce token limits; :func:`with_token_limits` makes any scenario's
providers enforce the token limits of their config. :func:`pictures` draws a run
(latency over time, breaker states, traffic share; the ``notebook`` extra), and
:func:`report_html` makes a self-contained page of them with the report's tables
(``llm-router simulate --plot/--html``).

Example:
    >>> import math
    >>> from router_middleware.sim import default_scenario, simulate, token_scenario
    >>> report = simulate(default_scenario(requests=30, duration_seconds=3.0, speed=math.inf))
    >>> report.requests["total"], report.injected[0]["fault"]
    (30, 'outage')
    >>> report = simulate(token_scenario(requests=60, duration_seconds=12.0, speed=math.inf))
    >>> report.providers["primary"]["tokens_per_minute"], report.providers["primary"]["throttled"]
    (100000, 0)
"""

# ``testing`` first: SimulatedProvider extends its ScriptedChatModel, and it re-exports
# SimulatedProvider, so it must be loaded before ``_provider`` whichever is imported first.
from .. import testing as _testing  # noqa: F401
from ._plot import Picture, pictures, report_html, save_png, write_html
from ._provider import SimulatedProvider, Window
from ._run import SimulationReport, simulate
from ._scenario import Fault, PromptMix, Scenario, default_scenario, parse_fault, scenario_for
from ._traffic import token_scenario, with_token_limits
from ._virtual import LoopClock, VirtualLoop, run_virtual

__all__ = [
    "Fault",
    "LoopClock",
    "Picture",
    "PromptMix",
    "Scenario",
    "SimulatedProvider",
    "SimulationReport",
    "VirtualLoop",
    "Window",
    "default_scenario",
    "parse_fault",
    "pictures",
    "report_html",
    "run_virtual",
    "save_png",
    "scenario_for",
    "simulate",
    "token_scenario",
    "with_token_limits",
    "write_html",
]
