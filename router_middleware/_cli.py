"""The ``llm-router`` command: inspect the configuration, and watch the router work.

``rich`` (the ``cli`` extra) draws the progress bar and tables when stdout is a
terminal; otherwise, and without it, output is plain text.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from ._errors import ConfigurationError
from .settings import RouterSettings, env_reference
from .settings._origin import Origin
from .sim import (
    Fault,
    Scenario,
    SimulationReport,
    default_scenario,
    parse_fault,
    scenario_for,
    simulate,
    token_scenario,
    with_token_limits,
)
from .sim._report import print_rich_report, write_report

__all__ = ["main"]

OK, INVALID, USAGE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llm-router`` with ``argv`` (``sys.argv[1:]`` when ``None``); return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return USAGE
    try:
        code: int = args.run(args)
    except ConfigurationError as exc:
        _problems(exc.problems, args)
        return INVALID
    except _UsageError as exc:
        print(f"llm-router: error: {exc}", file=sys.stderr)
        return USAGE
    return code


class _UsageError(Exception):
    """Options that parse but make no sense (a bad ``--fault``, zero requests)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-router", description="Configure and exercise a resilient LLM router."
    )
    commands = parser.add_subparsers(title="commands")
    config = commands.add_parser("config", help="inspect the configuration").add_subparsers(
        title="config commands"
    )

    def sources(p: argparse.ArgumentParser) -> None:
        p.add_argument("--env-file", type=Path, help="read this .env file (default: ./.env)")
        p.add_argument(
            "--config-file", type=Path, help="read this file (as LLM_ROUTER_CONFIG_FILE)"
        )

    show = config.add_parser(
        "show", help="the effective configuration and where each value came from"
    )
    sources(show)
    show.add_argument("--json", action="store_true", help="machine-readable output")
    show.set_defaults(run=_show)
    check = config.add_parser("check", help="validate; exit 1 listing every problem")
    sources(check)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(run=_check)
    reference = config.add_parser("reference", help="print the environment variable reference")
    reference.set_defaults(run=_reference)

    sim = commands.add_parser(
        "simulate",
        help="run the router against simulated providers",
        description="Run the real router against simulated providers and report what it did. "
        "With a configuration (env, .env or file) each configured provider is simulated; "
        "without, a built-in scenario of three providers is used.",
    )
    sources(sim)
    # No defaults here: each scenario has its own (--tokens spans two minutes).
    sim.add_argument("--requests", type=int, help="requests to send (600)")
    sim.add_argument("--concurrency", type=int, help="requests in flight at most (32)")
    sim.add_argument(
        "--duration", type=float, help="simulated seconds the arrivals span (60; --tokens: 120)"
    )
    sim.add_argument(
        "--tokens",
        action="store_true",
        help="token limits: prompts of varied sizes and max_tokens, each provider enforcing "
        "the token limits of its config (tokens_per_minute, max_input_tokens) with 429s and "
        "400s; without a configuration, a provider with a tokens-per-minute limit, one with a "
        "small context window and one without limits",
    )
    sim.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE,...",
        help="replace provider NAME's behaviour; keys: latency[_ms], latency_p95[_ms], "
        "failure_rate, hang_rate, outage=START-END, rate_limit_burst=START-END, retry_after, "
        "tokens_per_minute, max_input_tokens",
    )
    sim.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="run N routers (replicas of one deployment), each sending the traffic to the "
        "same simulated providers, whose own limits count every replica's calls; each keeps "
        "its own in-memory state unless --shared or --state-url",
    )
    state = sim.add_mutually_exclusive_group()
    state.add_argument(
        "--shared",
        action="store_true",
        help="the replicas share one in-memory store (limits shared, as on Redis)",
    )
    state.add_argument(
        "--state-url",
        metavar="redis://...",
        help="the replicas share state on this Redis, on the simulated clock (keys under a "
        "prefix of the run's own, deleted at the end; needs the redis extra)",
    )
    sim.add_argument("--seed", type=int, default=0, help="the same seed gives the same counts")
    sim.add_argument(
        "--speed",
        type=_speed,
        help="simulated seconds per real second, or 'max' (default: 10 on a terminal, else max)",
    )
    sim.add_argument("--model", help="the model to request (default: the configured default)")
    sim.add_argument("--no-config", action="store_true", help="ignore any configuration")
    sim.add_argument("--json", action="store_true", help="machine-readable output")
    sim.add_argument(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="also draw latency over time, breaker states and traffic share to this PNG "
        "(needs the notebook extra: matplotlib)",
    )
    sim.add_argument(
        "--html",
        type=Path,
        metavar="FILE.html",
        help="also write a self-contained HTML page of the plots and the report's tables",
    )
    sim.set_defaults(run=_simulate)
    return parser


def _speed(text: str) -> float:
    if text == "max":
        return math.inf
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("speed must be > 0 or 'max'")
    return value


def _settings(args: argparse.Namespace) -> RouterSettings:
    values: dict[str, Any] = {}
    if args.env_file is not None:
        values["_env_file"] = args.env_file
    if args.config_file is not None:
        values["config_file"] = args.config_file
    return RouterSettings(**values)


def _origin(origin: Origin) -> str:
    return "command line" if origin.source == "init" else str(origin)


def _problems(problems: Sequence[str], args: argparse.Namespace) -> None:
    if getattr(args, "json", False):
        print(json.dumps({"valid": False, "problems": list(problems)}, indent=2))
        return
    print(f"invalid router configuration ({len(problems)} problem(s)):", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)


# -- config ----------------------------------------------------------------------------------


def _show(args: argparse.Namespace) -> int:
    settings = _settings(args)
    rows = [(path, value, _origin(origin)) for path, value, origin in settings.explain()]
    if args.json:
        config = settings.shown()
        sources = {path: origin for path, _, origin in rows}
        print(json.dumps({"valid": True, "config": config, "sources": sources}, indent=2))
        return OK
    console = _rich_console()
    if console is not None:
        from rich.table import Table

        table = Table("setting", "value", "source", title="Effective router configuration")
        for path, value, origin in rows:
            style = "dim" if origin == "default" else ""
            table.add_row(path, json.dumps(value), origin, style=style)
        console.print(table)
        return OK
    _plain_table(["setting", "value", "source"], [[p, json.dumps(v), o] for p, v, o in rows])
    return OK


def _reference(args: argparse.Namespace) -> int:
    print(env_reference(), end="")
    return OK


def _check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    cfg = settings.to_router_config()
    names = [p.name for p in cfg.providers]
    if args.json:
        print(json.dumps({"valid": True, "problems": [], "providers": names}, indent=2))
    else:
        listed = ", ".join(names) if names else "none configured"
        print(f"configuration is valid: strategy {cfg.strategy}; providers: {listed}")
    return OK


# -- simulate --------------------------------------------------------------------------------


def _scenario(args: argparse.Namespace) -> Scenario:
    faults: dict[str, Fault] = dict(parse_fault(spec) for spec in args.fault)
    given = {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "duration_seconds": args.duration,
    }
    traffic: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    traffic["seed"] = args.seed
    traffic["replicas"] = args.replicas
    traffic["shared_state"] = args.shared
    traffic["state_url"] = args.state_url
    # Pace the run for someone watching it; a pipe or a file gets the result at once.
    traffic["speed"] = args.speed or (10.0 if sys.stdout.isatty() and not args.json else math.inf)
    settings = None if args.no_config else _settings(args)
    if settings is not None and settings.providers:
        cfg = settings.to_router_config()
        scenario = scenario_for(cfg, faults, model=args.model or cfg.default_model, **traffic)
    else:
        make = token_scenario if args.tokens else default_scenario
        scenario = make(model=args.model, **traffic)
        if faults:
            scenario = replace(scenario, faults={**scenario.faults, **faults})
    # Last, so that a --fault replacing a provider's behaviour keeps its config's limits.
    return with_token_limits(scenario) if args.tokens else scenario


def _simulate(args: argparse.Namespace) -> int:
    try:
        scenario = _scenario(args)
    except ConfigurationError:
        raise
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    if args.plot or args.html:
        _can_plot()  # before the run, not after it
    console = None if args.json else _rich_console()
    if console is not None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        columns = ("simulating", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task("simulate", total=scenario.requests)
            report = simulate(scenario, lambda done, _: bar.update(task, completed=done))
        print_rich_report(report, console)
        _pictures(report, args)
        return OK
    report = simulate(scenario, None if args.json else _plain_progress(sys.stderr))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        write_report(report, sys.stdout)
    _pictures(report, args)
    return OK


def _can_plot() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise _UsageError(
            "--plot and --html need matplotlib: pip install 'router-middleware[notebook]'"
        ) from None


def _pictures(report: SimulationReport, args: argparse.Namespace) -> None:
    """Write the ``--plot`` PNG and the ``--html`` page, saying where on stderr."""
    from .sim._plot import save_png, write_html

    if args.plot:
        save_png(report, args.plot)
        print(f"plots written to {args.plot}", file=sys.stderr)
    if args.html:
        write_html(report, args.html)
        print(f"HTML report written to {args.html}", file=sys.stderr)


def _plain_progress(out: TextIO) -> Callable[[int, int], None]:
    step = [0]

    def show(done: int, total: int) -> None:
        tenth = done * 10 // total
        if tenth > step[0]:
            step[0] = tenth
            print(f"simulating: {done}/{total} requests ({tenth * 10}%)", file=out, flush=True)

    return show


def _plain_table(head: list[str], rows: list[list[str]], out: TextIO | None = None) -> None:
    out = out or sys.stdout
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    for row in [head, *rows]:
        print(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(), file=out
        )


def _rich_console() -> Any:
    """A rich console when stdout is a terminal and rich is installed, else ``None``."""
    if not sys.stdout.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console()
