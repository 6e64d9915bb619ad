"""A simulation report for people: plain text, or rich tables on a terminal.

Both say the same, in this order: what was injected (which provider, which fault, from
when to when), how the requests fared, what each provider did (its own 429s apart from
the router's skips, cost in the prices' currency), when providers counted tokens, each
one's tokens, token limit and fullest 60 s window, why each failed request failed
(grouped by reason) and each breaker transition.

Example:
    >>> import io, math
    >>> from router_middleware.sim import default_scenario, simulate
    >>> report = simulate(default_scenario(requests=30, duration_seconds=3.0, speed=math.inf))
    >>> out = io.StringIO()
    >>> write_report(report, out)
    >>> print(out.getvalue().splitlines()[0])
    Scenario: 30 requests arriving evenly over 3 simulated seconds, at most 32 in flight (seed 0)
"""

from __future__ import annotations

import textwrap
from typing import Any, TextIO

from ._run import SimulationReport

__all__ = ["print_rich_report", "write_report"]

# Failure lines beyond this many reasons would bury the rest of the report.
_MAX_REASONS = 8


def write_report(report: SimulationReport, out: TextIO) -> None:
    """Write ``report`` to ``out`` as plain text."""

    def say(line: str = "") -> None:
        print(line, file=out)

    for line in _scenario_lines(report):
        say(line)
    say(f"Injected ({_TIMES}):")
    _table(_INJECTED_HEAD, [_injection_cells(i) for i in report.injected], out, indent="  ")
    say()
    for line in _summary(report):
        say(line)
    say()
    if report.replicas:
        say("Replicas:")
        _table(_REPLICA_HEAD, [_replica_cells(r) for r in report.replicas], out, indent="  ")
        say()
    rows = [_provider_cells(name, row) for name, row in report.providers.items()]
    _table(_provider_head(report), rows, out)
    for item in _legend():
        say(_wrap(item))
    say()
    if _counts_tokens(report):
        say("Tokens:")
        _table(_TOKENS_HEAD, [_token_cells(n, r) for n, r in report.providers.items()], out)
        for item in _token_legend():
            say(_wrap(item))
        for line in _token_lines(report):
            say(_wrap(line, indent=""))
        say()
    say("Failed requests:")
    for line in _failure_lines(report) or ["none"]:
        say("  " + line)
    say()
    say("Breaker transitions:")
    if not report.transitions:
        say("  none")
    _table(None, [_transition_cells(t) for t in report.transitions], out, indent="  ")


def print_rich_report(report: SimulationReport, console: Any) -> None:
    """Print ``report`` on a ``rich`` console, as tables."""
    from rich import box
    from rich.table import Table

    def table(title: str, head: list[tuple[str, ...]], caption: str | None = None) -> Any:
        t = Table(
            title=title, caption=caption, box=box.SIMPLE_HEAD, title_justify="left",
            caption_justify="left", padding=(0, 0, 0, 0), pad_edge=False, show_edge=False,
        )  # fmt: skip
        for i, lines in enumerate(head):
            t.add_column(
                "\n".join(lines),
                justify="right" if i in _numeric(head) else "left",
                no_wrap=lines[0] != "effect",
            )
        return t

    def say(line: str) -> None:
        console.print(line, highlight=False, markup=False)

    for line in _scenario_lines(report):
        say(line)
    injected = table(f"Injected ({_TIMES})", _INJECTED_HEAD)
    for i in report.injected:
        injected.add_row(*_injection_cells(i))
    console.print(injected)
    say("")
    for line in _summary(report):
        say(line)
    if report.replicas:
        replicas = table("Replicas", _REPLICA_HEAD)
        for r in report.replicas:
            replicas.add_row(*_replica_cells(r))
        console.print(replicas)
    colours = {"closed": "green", "half_open": "yellow", "open": "red"}
    head = _provider_head(report)
    # The breaker's final state colours the name: one column less, so 80 columns fit.
    legend = [
        *_legend(),
        "name colour: breaker at the end (green closed, yellow half-open, red open)",
    ]
    providers = table("Providers", head[:-1], "\n".join(legend))
    for name, row in report.providers.items():
        *cells, state = _provider_cells(name, row)
        cells[0] = f"[{colours.get(state, 'white')}]{name}[/]"
        providers.add_row(*cells)
    console.print(providers)
    say("")
    if _counts_tokens(report):
        tokens = table("Tokens", _TOKENS_HEAD, "\n".join(_token_legend()))
        for name, row in report.providers.items():
            tokens.add_row(*_token_cells(name, row))
        console.print(tokens)
        for line in _token_lines(report):
            say(line)
        say("")
    say("Failed requests:")
    for line in _failure_lines(report) or ["none"]:
        say("  " + line)
    say("")
    if not report.transitions:
        say("Breaker transitions: none")
        return
    timeline = table("Breaker transitions", [("at",), ("provider",), ("change",), ("reason",)])
    for t in report.transitions:
        at, provider, change, reason = _transition_cells(t)
        timeline.add_row(at, provider, f"[{colours.get(t['to'], 'white')}]{change}[/]", reason)
    console.print(timeline)


# -- what the parts say ----------------------------------------------------------------------

_TIMES = "t = simulated seconds from the start"


def _scenario_lines(report: SimulationReport) -> list[str]:
    s = report.scenario
    model = "any model" if s["model"] is None else f"model {s['model']!r}"
    lines = [
        f"Scenario: {s['requests']} requests arriving evenly over {s['duration_seconds']:g} "
        f"simulated seconds, at most {s['concurrency']} in flight (seed {s['seed']})",
        f"Router: strategy {s['strategy']}, {model}",
    ]
    replicas = s.get("replicas", 1)
    if replicas > 1:
        where = {
            "own memory": "each its own in-memory state (no limit shared)",
            "shared memory": "one in-memory store (limits shared, as on Redis)",
            "redis": "state on Redis (limits shared)",
        }[s["state"]]
        lines.append(
            f"Replicas: {replicas} routers, each sending that traffic to the same providers; "
            f"{where}"
        )
    mix = s.get("prompts")
    if mix:
        low, high = mix["prompt_tokens"]
        caps = [f"{m:,}" for m in mix["max_tokens"] if m is not None]
        if None in mix["max_tokens"]:
            caps.append("unset")
        listed = caps[0] if len(caps) == 1 else f"{', '.join(caps[:-1])} or {caps[-1]}"
        answers = mix["answer_tokens"]
        lines.append(
            f"Traffic: prompts of {low:,} to {high:,} tokens (log-uniform), max_tokens "
            f"{listed}; answers of {answers[0]:,} to {answers[1]:,} tokens, at most max_tokens"
        )
    return lines


_INJECTED_HEAD = [("provider",), ("fault",), ("when",), ("effect",), ("calls", "hit")]


_REPLICA_HEAD: list[tuple[str, ...]] = [
    ("replica",),
    ("reqs",),
    ("ok",),
    ("failed",),
    ("p50 s",),
    ("p95 s",),
    ("served by",),
]


def _replica_cells(r: dict[str, Any]) -> list[str]:
    served = ", ".join(f"{n} {c}" for n, c in r["served_by"].items() if c) or "-"
    return [
        str(r["replica"]),
        str(r["total"]),
        str(r["succeeded"]),
        str(r["failed"]),
        _num(r["latency_p50"]),
        _num(r["latency_p95"]),
        served,
    ]


def _injection_cells(i: dict[str, Any]) -> list[str]:
    when = "whole run" if i["start"] is None else f"t={i['start']:g}s to {i['end']:g}s"
    hits = "-" if i["hits"] is None else str(i["hits"])
    return [i["provider"], i["fault"], when, i["effect"], hits]


def _summary(report: SimulationReport) -> list[str]:
    r, s = report.requests, report.scenario
    tokens = s["tokens_per_answer"]
    unit = f" {s['currency']}, from" if s["currency"] else ", in the currency of"
    paid = (
        "on the tokens each provider reported"
        if tokens is None
        else f"each answer: {tokens['input']} input + {tokens['output']} output tokens"
    )
    return [
        f"Results: {r['succeeded']} of {r['total']} requests succeeded, {r['failed']} failed, "
        f"in {r['simulated_seconds']:.1f} simulated seconds ({report.wall_seconds:.1f} s real)",
        f"latency seen by callers: p50 {_num(r['latency_p50'])} s, p95 {_num(r['latency_p95'])} s",
        f"cost: {_money(r['cost'])}{unit} the config's prices per 1k tokens ({paid})",
    ]


def _provider_head(report: SimulationReport) -> list[tuple[str, ...]]:
    # Headers of up to three short lines keep the table within 80 columns.
    return [
        ("provider",), ("reqs",), ("ok",), ("failed",), ("429s", "from the", "provider"),
        ("skipped", "by router", "limits"), ("trips",), ("retries",), ("p50 s",), ("p95 s",),
        ("cost", f"({report.scenario['currency'] or 'config'})"), ("breaker",),
    ]  # fmt: skip


def _provider_cells(name: str, row: dict[str, Any]) -> list[str]:
    counts = ("requests", "successes", "failures", "throttled", "rate_limited", "breaker_trips")
    return [
        name,
        *(str(row[key]) for key in counts),
        str(row["retries"]),
        _num(row["latency_p50"]),
        _num(row["latency_p95"]),
        _money(row["cost"]),
        row["breaker_state"],
    ]


def _legend() -> list[str]:
    return [
        "reqs: the times a request turned to the provider (ok + failed + 429s + skipped "
        "+ cancelled)",
        "failed: its errors other than 429 (5xx, timeouts...); 429s: it answered 429 itself",
        "skipped: not called, the router held it back (its rate_limit or max_concurrent, or "
        "a cool-down after a 429's Retry-After)",
    ]


def _counts_tokens(report: SimulationReport) -> bool:
    # Only a run whose providers counted tokens has a token table to show.
    return bool(report.scenario.get("prompts"))


_TOKENS_HEAD = [
    ("provider",), ("input",), ("output",), ("limit", "tokens", "per min"),
    ("peak", "60 s", "window"), ("429s", "for", "tokens"), ("400s", "too", "long"),
    ("skipped", "token", "limit"), ("skipped", "context", "window"),
]  # fmt: skip


def _token_cells(name: str, row: dict[str, Any]) -> list[str]:
    injected, skipped = row["injected"], row.get("skipped_for", {})
    return [
        name,
        f"{row['input_tokens']:,}",
        f"{row['output_tokens']:,}",
        _count(row.get("tokens_per_minute")),
        _count(row.get("peak_window_tokens")),
        str(injected.get("token_limited", 0)),
        str(injected.get("too_long", 0)),
        str(skipped.get("token limit", 0)),
        str(skipped.get("context window", 0)),
    ]


def _token_legend() -> list[str]:
    return [
        "input, output: tokens each provider reported on its answers (usage_metadata)",
        "limit: the tokens per minute the provider itself enforces as OpenAI does: prompt + "
        "max_tokens charged on arrival, corrected to usage at the end, HTTP 429 with "
        "Retry-After when over; peak: the most its sliding 60 s window held (its own log)",
        "400s: prompts over its context window; skipped: requests the router kept from it, "
        "its token window full (token limit) or the prompt over its max_input_tokens "
        "(context window)",
    ]


def _token_lines(report: SimulationReport) -> list[str]:
    """A sentence per token-limited provider: did the router keep within its limit?"""
    lines = []
    for name, row in report.providers.items():
        limit = row.get("tokens_per_minute")
        if limit is None:
            continue
        peak, at = row["peak_window_tokens"], row["peak_window_at"]
        when = "" if at is None else f" (t={at:.1f}s)"
        throttled = row["injected"].get("token_limited", 0)
        skipped = row.get("skipped_for", {}).get("token limit", 0)
        lines.append(
            f"{name}: its 60 s window peaked at {peak:,} of {limit:,} tokens{when}; it "
            f"answered {throttled} 429s for tokens; the router skipped it {skipped} times "
            "for its token limit"
        )
    return lines


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _wrap(item: str, indent: str = "  ") -> str:
    return textwrap.fill(
        item, 92, initial_indent=indent, subsequent_indent=indent + "  ", break_on_hyphens=False
    )


def _failure_lines(report: SimulationReport) -> list[str]:
    """One line per reason: how many requests, the error, when they were sent."""
    groups: dict[tuple[str, str], list[float]] = {}
    for f in report.failures:
        groups.setdefault((f["error"], f["reason"]), []).append(f["sent_at"])
    lines = []
    for (error, reason), sent in list(groups.items())[:_MAX_REASONS]:
        n = len(sent)
        when = (
            f"1 request sent at t={sent[0]:.1f}s"
            if n == 1
            else f"{n} requests sent between t={min(sent):.1f}s and t={max(sent):.1f}s"
        )
        lines.append(f"{when} failed: {error}: {reason}")
    rest = list(groups.values())[_MAX_REASONS:]
    if rest:
        lines.append(
            f"{sum(map(len, rest))} more failed for {len(rest)} other reasons (--json lists each)"
        )
    return lines


def _transition_cells(t: dict[str, Any]) -> list[str]:
    return [f"t={t['at']:.3f}s", t["provider"], f"{t['from']} -> {t['to']}", t["reason"]]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _money(value: float) -> str:
    return f"{value:.4f}" if value == 0 or value >= 0.001 else f"{value:.2e}"


# -- plain tables ----------------------------------------------------------------------------


def _numeric(head: list[tuple[str, ...]]) -> set[int]:
    text = {"provider", "fault", "when", "effect", "breaker", "at", "change", "reason"}
    return {i for i, lines in enumerate(head) if lines[0] not in text}


def _table(
    head: list[tuple[str, ...]] | None, rows: list[list[str]], out: TextIO, indent: str = ""
) -> None:
    """Columns padded to their widest cell, numbers to the right, under a head of lines."""
    depth = max((len(h) for h in head or []), default=0)
    lines = [[h[i] if i < len(h) else "" for h in head or []] for i in range(depth)]
    right = set() if head is None else _numeric(head)
    widths = [max(map(len, col)) for col in zip(*lines, *rows, strict=True)]
    for line in [*lines, *rows]:
        cells = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        print((indent + "  ".join(cells)).rstrip(), file=out)
