"""HTML views of a router and its metrics, for Jupyter's ``_repr_html_``.

Example:
    >>> snapshot = MetricsSnapshot({"providers": {}, "totals": {"total_requests": 0}})
    >>> "<table" in snapshot._repr_html_(), snapshot["totals"]["total_requests"]
    (True, 0)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._router import ResilientRouter

__all__ = ["MetricsSnapshot", "metrics_html", "router_html"]

_STATE_COLOURS = {"closed": "#1a7f37", "half_open": "#9a6700", "open": "#cf222e"}

_COLUMNS = (
    ("requests", "total_requests"),
    ("ok", "successful_requests"),
    ("failed", "failed_requests"),
    ("429s (provider)", "throttled"),
    ("skipped (router limits)", "rate_limited_requests"),
    ("trips", "circuit_breaker_trips"),
    ("retries", "retries"),
    ("p50", "latency_p50"),
    ("p95", "latency_p95"),
    ("tokens in/out", None),
    ("cost", "cost"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return escape(str(value))


def _state(state: str) -> str:
    colour = _STATE_COLOURS.get(state, "inherit")
    return f'<span style="color:{colour};font-weight:600">{escape(state)}</span>'


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], caption: str) -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<table><caption style="text-align:left">{caption}</caption>'
        f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"
    )


def metrics_html(snapshot: Mapping[str, Any]) -> str:
    """A table of ``router.metrics()``: one row per provider, then the totals."""
    providers: Mapping[str, Mapping[str, Any]] = snapshot.get("providers", {})
    rows = []
    for name, m in providers.items():
        cells = [escape(name), _state(str(m.get("circuit_breaker_state", "?")))]
        for _, key in _COLUMNS:
            if key is None:
                cells.append(f"{_cell(m.get('input_tokens'))}/{_cell(m.get('output_tokens'))}")
            else:
                cells.append(_cell(m.get(key)))
        rows.append(cells)
    totals = snapshot.get("totals", {})
    caption = "Router metrics: " + ", ".join(
        f"{escape(k.replace('_', ' '))} {_cell(v)}" for k, v in totals.items()
    )
    return _table(["provider", "breaker", *(c for c, _ in _COLUMNS)], rows, caption)


def router_html(router: ResilientRouter) -> str:
    """A table of the router's providers: state, models, priority, limits and traffic."""
    rows = []
    for name, p in router.providers.items():
        m = p.metrics
        rate = m.success_rate
        limit = p.config.rate_limit
        rows.append(
            [
                escape(name),
                "yes" if p.enabled else "<b>disabled</b>",
                _state(p.circuit_breaker_state),
                escape(", ".join(p.models)),
                _cell(p.priority),
                _cell(limit.requests_per_second) + " rps / " + _cell(limit.max_concurrent),
                _cell(p.limiter.in_flight),
                _cell(m.total_requests),
                "–" if rate is None else f"{rate:.0%}",
                _cell(m.cost),
            ]
        )
    head = [
        "provider",
        "enabled",
        "breaker",
        "models",
        "priority",
        "limit",
        "in flight",
        "requests",
        "success",
        "cost",
    ]
    strategy = escape(router.router_config.strategy)
    return _table(head, rows, f"<b>ResilientRouter</b> · strategy <code>{strategy}</code>")


class MetricsSnapshot(dict[str, Any]):
    """``router.metrics()``: a plain JSON-ready dict that Jupyter shows as a table."""

    def _repr_html_(self) -> str:
        return metrics_html(self)
