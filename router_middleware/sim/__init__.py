"""The simulator: the real router against simulated providers, on virtual time.

A :class:`Scenario` says what to run (the router's configuration, each provider's
:class:`Fault`, the traffic); :func:`simulate` runs it through a real
:class:`~router_middleware.ResilientRouter` and returns a :class:`SimulationReport`.
``llm-router simulate`` is this, from the command line.

Example:
    >>> import math
    >>> from router_middleware.sim import default_scenario, simulate
    >>> report = simulate(default_scenario(requests=30, duration_seconds=3.0, speed=math.inf))
    >>> report.requests["total"], report.injected[0]["fault"]
    (30, 'outage')
"""

# ``testing`` first: SimulatedProvider extends its ScriptedChatModel, and it re-exports
# SimulatedProvider, so it must be loaded before ``_provider`` whichever is imported first.
from .. import testing as _testing  # noqa: F401
from ._provider import SimulatedProvider, Window
from ._run import SimulationReport, simulate
from ._scenario import Fault, Scenario, default_scenario, parse_fault, scenario_for
from ._virtual import LoopClock, VirtualLoop, run_virtual

__all__ = [
    "Fault",
    "LoopClock",
    "Scenario",
    "SimulatedProvider",
    "SimulationReport",
    "VirtualLoop",
    "Window",
    "default_scenario",
    "parse_fault",
    "run_virtual",
    "scenario_for",
    "simulate",
]
