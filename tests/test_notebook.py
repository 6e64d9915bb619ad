"""Jupyter: the quickstart and agents notebooks run top to bottom, and the HTML views render."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from router_middleware import FakeClock, ResilientRouter
from router_middleware._display import MetricsSnapshot, metrics_html, router_html
from router_middleware.testing import ScriptedChatModel, http_error

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOK = NOTEBOOKS / "quickstart.ipynb"


def executed_code_cells(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[Any], list[Any]]:
    """The notebook's code cells as saved, then as they ran top to bottom in a kernel."""
    nbformat = pytest.importorskip("nbformat", reason="needs the dev extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="needs the dev extra (nbclient)")
    pytest.importorskip("ipykernel", reason="needs the dev extra (ipykernel)")
    for name in list(os.environ):  # the kernel inherits the environment
        if name.upper().startswith("LLM_ROUTER_"):
            monkeypatch.delenv(name)
    saved = [cell for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "code"]
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, with the cell, if any cell fails

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    return saved, code


def test_quickstart_notebook_runs_with_outputs_of_the_kinds_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved, code = executed_code_cells(NOTEBOOK, monkeypatch)
    assert all(cell.execution_count and cell.outputs for cell in saved)  # saved executed
    assert [[o.output_type for o in cell.outputs] for cell in code] == [
        [o.output_type for o in cell.outputs] for cell in saved
    ]
    # The cells that end on the router and on its metrics display them.
    last_lines = ("router", "router.metrics()")
    shown = [cell.outputs for cell in code if cell.source.splitlines()[-1] in last_lines]
    assert len(shown) == 2
    assert all(
        any(o.output_type == "execute_result" and "text/html" in o.get("data", {}) for o in outputs)
        for outputs in shown
    )
    streamed = next(cell for cell in code if "chain.stream" in cell.source).outputs[0]["text"]
    assert streamed.count("|") > 3
    assert "||" not in streamed  # no empty chunk printed


def test_agents_notebook_runs_with_its_outputs_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    saved, code = executed_code_cells(NOTEBOOKS / "agents.ipynb", monkeypatch)
    assert all(cell.execution_count and cell.outputs for cell in saved)  # as it is read

    def text(cell: Any) -> str:
        return "".join(
            o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in cell.outputs
        )

    def ran(snippet: str) -> Any:
        return next(cell for cell in code if snippet in cell.source)

    assert "get_weather (call_1)" in text(ran("create_agent(model=router"))
    # The first answer failed over from primary's 503; the metadata says so.
    assert "{'provider': 'primary', 'model': 'chat', 'error': 'HTTPStatusError'}" in text(
        ran('response_metadata["router"])')
    )
    metrics = ran("router.metrics()").outputs
    assert any("text/html" in o.get("data", {}) for o in metrics)
    assert "'provider': 'fallback'" in text(ran("RouterMiddleware("))
    assert "Forecast(city='Oslo', sky='sunny', degrees=21)" in text(ran("with_structured_output"))


def test_router_html_shows_each_provider_and_its_breaker() -> None:
    router = ResilientRouter(
        {"<fast>": ScriptedChatModel(script=[http_error(503)]), "backup": ScriptedChatModel()},
        {
            "providers": [
                {"name": "<fast>", "priority": 1, "models": [{"name": "m"}],
                 "rate_limit": {"requests_per_second": 5}},
                {"name": "backup", "priority": 2, "models": [{"name": "m"}]},
            ],
            "strategy": "cost_priority_round_robin",
            "retry": {"attempts": 1},
            "circuit_breaker": {"threshold": 1},
        },
        clock=FakeClock(),
    )  # fmt: skip
    router.invoke("hi")
    html = router_html(router)
    assert "<fast>" not in html  # names are escaped
    assert "&lt;fast&gt;" in html
    assert html.count("<tr>") == 3  # the head and one row per provider
    assert ">open</span>" in html
    assert ">closed</span>" in html
    assert "5 rps" in html
    assert "cost_priority_round_robin" in html


def test_metrics_snapshot_is_a_dict_that_renders_as_a_table() -> None:
    router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    router.invoke("hi")
    snapshot = MetricsSnapshot(router.metrics())
    assert isinstance(snapshot, dict)
    assert json.loads(json.dumps(snapshot))["totals"]["total_requests"] == 1
    html = snapshot._repr_html_()
    assert html == metrics_html(snapshot)
    assert html.count("<tr>") == 2
    assert "total requests 1" in html
    assert "3/2" in html  # tokens in/out of the one answer


def test_resilience_notebook_runs_with_outputs_of_the_kinds_saved(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("matplotlib", reason="needs the notebook extra (matplotlib)")
    pytest.importorskip("pandas", reason="needs the notebook extra (pandas)")
    saved, code = executed_code_cells(NOTEBOOKS / "resilience.ipynb", monkeypatch)

    def kinds(cell: Any) -> list[tuple[str, tuple[str, ...]]]:
        return [(o.output_type, tuple(sorted(o.get("data", {})))) for o in cell.outputs]

    # Every cell shows what it showed when saved (values may move with matplotlib's version).
    assert [kinds(cell) for cell in code] == [kinds(cell) for cell in saved]
    assert all(cell.execution_count and cell.outputs for cell in saved)  # saved executed
    images = [cell for cell in code if any("image/png" in o.get("data", {}) for o in cell.outputs)]
    assert len(images) == 3  # latency, breakers, share
    assert "'failed': 0" in code[0].outputs[0]["data"]["text/plain"]  # the same seeded run
    frame = code[-1].outputs[0]["data"]
    assert "metrics_frame()" in code[-1].source
    assert "text/html" in frame
    assert all(name in frame["text/html"] for name in ("primary", "secondary", "slow-backup"))
