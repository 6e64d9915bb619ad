"""Pictures of a simulation run: latency over time, breaker states, traffic share; and a
self-contained HTML page of them with the report's tables.

matplotlib (the ``notebook`` extra) is imported only when a picture is drawn. Figures are
drawn on matplotlib's Agg canvas directly, never through ``pyplot``: no global backend is
switched (a Jupyter kernel keeps its own), and no window or display is ever needed.

Example:
    >>> import math
    >>> from router_middleware.sim import default_scenario, simulate
    >>> report = simulate(default_scenario(requests=30, duration_seconds=3.0, speed=math.inf))
    >>> [p.title for p in pictures(report)]
    ['Latency over time', 'Breaker state', 'Share of traffic']
    >>> pictures(report)[0].png()[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    >>> report_html(report).startswith("<!DOCTYPE html>")
    True
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._report import (
    _INJECTED_HEAD,
    _TIMES,
    _failure_lines,
    _injection_cells,
    _legend,
    _provider_cells,
    _provider_head,
    _scenario_lines,
    _summary,
    _transition_cells,
)
from ._run import SimulationReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["Picture", "pictures", "report_html", "save_png", "write_html"]

# The breaker's states as the rich report colours them.
STATE_COLOURS = {"closed": "#2ca02c", "half_open": "#ffbf00", "open": "#d62728"}
_FAILED = "#7f7f7f"


def _figure(width: float, height: float) -> Figure:
    """A figure on its own Agg canvas; an ImportError naming the extra without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(
            "plotting a simulation needs matplotlib: pip install 'router-middleware[notebook]'"
        ) from exc
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png")
    return out.getvalue()


class Picture:
    """One rendered plot: its ``title`` and PNG bytes; Jupyter shows it inline.

    Example:
        >>> Picture("empty", b"\\x89PNG").png()
        b'\\x89PNG'
    """

    def __init__(self, title: str, png: bytes) -> None:
        self.title = title
        self._bytes = png

    def png(self) -> bytes:
        """The PNG file's bytes."""
        return self._bytes

    def _repr_png_(self) -> bytes:
        return self._bytes

    def __repr__(self) -> str:
        return f"<Picture {self.title!r}: {len(self._bytes):,} bytes of PNG>"


# -- the three plots -------------------------------------------------------------------------


def _latency(ax: Axes, report: SimulationReport) -> None:
    """Each answer's latency at the time it ended, by provider; failures on the same axis,
    and the injected faults' windows shaded, so a slow or failing stretch has its cause."""
    for i in report.injected:
        if i["start"] is not None:
            ax.axvspan(i["start"], i["end"], color="#d62728", alpha=0.08, lw=0)
    for name in report.providers:
        done = [t for t in report.timeline if t["provider"] == name]
        if done:
            ax.scatter([t["at"] for t in done], [t["latency"] for t in done], s=8, label=name)
    failed = [t for t in report.timeline if t["provider"] is None]
    if failed:
        xs, ys = [t["at"] for t in failed], [t["latency"] for t in failed]
        ax.scatter(xs, ys, s=14, marker="x", color=_FAILED, label="failed")
    ax.set_xlabel("simulated seconds")
    ax.set_ylabel("latency (s)")
    ax.set_title("Latency over time (shaded: injected faults)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="small")


def breaker_spans(report: SimulationReport) -> dict[str, list[tuple[float, float, str]]]:
    """Each provider's breaker states as ``(start, end, state)`` spans over the run.

    Example:
        >>> import math
        >>> from router_middleware.sim import default_scenario, simulate
        >>> report = simulate(default_scenario(requests=60, duration_seconds=6.0, speed=math.inf))
        >>> [state for _, _, state in breaker_spans(report)["primary"]]
        ['closed', 'open', 'half_open', 'closed']
    """
    end = float(report.requests["simulated_seconds"])
    spans: dict[str, list[tuple[float, float, str]]] = {}
    for name in report.providers:
        changes = [t for t in report.transitions if t["provider"] == name]
        at, state = 0.0, changes[0]["from"] if changes else "closed"
        spans[name] = []
        for t in changes:
            spans[name].append((at, t["at"], state))
            at, state = t["at"], t["to"]
        spans[name].append((at, max(end, at), state))
    return spans


def _breakers(ax: Axes, report: SimulationReport) -> None:
    """One band per provider, coloured by its breaker state over time."""
    from matplotlib.patches import Patch

    names = list(report.providers)
    for y, (_, spans) in enumerate(breaker_spans(report).items()):
        bars = [(start, end - start) for start, end, _ in spans]
        colours = [STATE_COLOURS.get(state, _FAILED) for _, _, state in spans]
        ax.broken_barh(bars, (y - 0.35, 0.7), facecolors=colours)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()  # the first provider on top, as in the tables
    ax.set_xlabel("simulated seconds")
    ax.set_title("Breaker state")
    legend = [Patch(color=c, label=s.replace("_", "-")) for s, c in STATE_COLOURS.items()]
    # Beside the bands, not over them: a band is the picture's whole content.
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")


def _share(ax: Axes, report: SimulationReport) -> None:
    """The requests each provider answered, and those that failed, as a share of all."""
    served = report.requests["served_by"]
    labels = [*served, "failed"]
    counts = [*served.values(), report.requests["failed"]]
    total = max(1, report.requests["total"])
    colours = [f"C{i}" for i in range(len(served))] + [_FAILED]
    bars = ax.barh(labels, counts, color=colours)
    ax.bar_label(bars, labels=[f"{c} ({100 * c / total:.0f}%)" for c in counts], padding=3)
    ax.invert_yaxis()
    ax.set_xlim(0, max(counts, default=0) * 1.25 + 1)
    ax.set_xlabel("requests")
    ax.set_title("Share of traffic (who answered)")


_PLOTS: list[tuple[str, Callable[[Any, SimulationReport], None], float]] = [
    ("Latency over time", _latency, 3.2),
    ("Breaker state", _breakers, 2.2),
    ("Share of traffic", _share, 2.4),
]


def pictures(report: SimulationReport) -> list[Picture]:
    """The three plots of ``report``, each its own PNG (latency, breakers, share)."""
    drawn = []
    for title, draw, height in _PLOTS:
        figure = _figure(8.0, height)
        draw(figure.add_subplot(), report)
        drawn.append(Picture(title, _png(figure)))
    return drawn


def save_png(report: SimulationReport, path: str | Path) -> None:
    """Write the three plots of ``report``, one above the other, to the PNG file ``path``."""
    heights = [height for _, _, height in _PLOTS]
    figure = _figure(8.0, sum(heights))
    axes = figure.subplots(len(_PLOTS), 1, height_ratios=heights)
    for ax, (_, draw, _) in zip(axes, _PLOTS, strict=True):
        draw(ax, report)
    Path(path).write_bytes(_png(figure))


# -- the HTML page ---------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 60em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
.legend { color: #555; font-size: 0.9em; }
"""


def _html_table(head: list[tuple[str, ...]] | None, rows: list[list[str]]) -> str:
    numeric = {i for i, h in enumerate(head or []) if h[0] not in _TEXT_COLUMNS}
    out = ["<table>"]
    if head is not None:
        cells = "".join(f"<th>{html.escape(' '.join(h))}</th>" for h in head)
        out.append(f"<tr>{cells}</tr>")
    for row in rows:
        cells = "".join(
            f'<td class="n">{html.escape(c)}</td>' if i in numeric else f"<td>{html.escape(c)}</td>"
            for i, c in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


_TEXT_COLUMNS = {"provider", "fault", "when", "effect", "breaker", "at", "change", "reason"}


def report_html(report: SimulationReport) -> str:
    """A self-contained HTML page: the plots as embedded PNGs, the report's tables as HTML.
    It loads nothing from elsewhere, so it opens anywhere, offline."""

    def para(lines: list[str], cls: str = "") -> str:
        attr = f' class="{cls}"' if cls else ""
        return "".join(f"<p{attr}>{html.escape(line)}</p>\n" for line in lines)

    parts = ["<h1>Router simulation</h1>", para(_scenario_lines(report))]
    for picture in pictures(report):
        data = base64.b64encode(picture.png()).decode("ascii")
        alt = html.escape(picture.title)
        parts.append(f'<h2>{alt}</h2>\n<img alt="{alt}" src="data:image/png;base64,{data}">')
    parts += [
        f"<h2>Injected ({html.escape(_TIMES)})</h2>",
        _html_table(_INJECTED_HEAD, [_injection_cells(i) for i in report.injected]),
        "<h2>Results</h2>",
        para(_summary(report)),
        _html_table(
            _provider_head(report),
            [_provider_cells(name, row) for name, row in report.providers.items()],
        ),
        para(_legend(), "legend"),
        "<h2>Failed requests</h2>",
        para(_failure_lines(report) or ["none"]),
        "<h2>Breaker transitions</h2>",
        _html_table(
            [("at",), ("provider",), ("change",), ("reason",)],
            [_transition_cells(t) for t in report.transitions],
        )
        if report.transitions
        else para(["none"]),
    ]
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>Router simulation</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def write_html(report: SimulationReport, path: str | Path) -> None:
    """Write :func:`report_html` of ``report`` to ``path``."""
    Path(path).write_text(report_html(report), encoding="utf-8")
