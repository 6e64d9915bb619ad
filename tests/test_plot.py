"""The pictures of a simulation run: ``llm-router simulate --plot/--html`` and the plots."""

from __future__ import annotations

import itertools
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from router_middleware._cli import main
from router_middleware.sim import default_scenario, simulate

pytest.importorskip("matplotlib", reason="needs the notebook extra (matplotlib)")

from router_middleware.sim._plot import breaker_spans, pictures

FAST = ["--requests", "120", "--duration", "12", "--seed", "1"]
PNG = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The tags, images, tables and every URL an HTML page names."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.images: list[str] = []
        self.tables = 0
        self.urls: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in {"meta", "img", "br"}:  # void elements have no end tag
            self.open.append(tag)
        self.tables += tag == "table"
        for name, value in attrs:
            if name in {"src", "href"} and value is not None:
                (self.images if tag == "img" else self.urls).append(value)
                if not value.startswith("data:"):
                    self.urls.append(value)

    def handle_endtag(self, tag: str) -> None:
        assert self.open[-1:] == [tag], f"</{tag}> closes {self.open[-1:]}"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def decoded(png: bytes, tmp_path: Path) -> Any:
    from matplotlib import image

    path = tmp_path / "decoded.png"
    path.write_bytes(png)
    return image.imread(path)


def test_simulate_plot_writes_a_png_of_the_three_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.png"
    assert main(["simulate", *FAST, "--plot", str(out)]) == 0
    assert f"plots written to {out}" in capsys.readouterr().err
    data = out.read_bytes()
    assert data.startswith(PNG)
    pixels = decoded(data, tmp_path)
    height, width = pixels.shape[:2]
    assert height > 600  # three plots, one above the other
    assert width > 0
    assert pixels.std() > 0  # not a blank canvas


def test_simulate_html_is_self_contained_with_plots_and_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run.html"
    assert main(["simulate", *FAST, "--json", "--html", str(out)]) == 0
    assert capsys.readouterr().out.startswith("{")  # --json still prints the report
    page = Page()
    page.feed(out.read_text(encoding="utf-8"))
    page.close()
    assert page.open == []  # every element closed, in order
    assert page.urls == []  # nothing loaded from elsewhere
    assert len(page.images) == 3
    assert all(src.startswith("data:image/png;base64,iVBORw0KGgo") for src in page.images)
    assert page.tables == 3  # injected, providers, breaker transitions
    text = " ".join(page.text)
    for expected in ("primary", "slow-backup", "closed -> open", "Failed requests", "outage"):
        assert expected in text


def test_the_html_renders_in_headless_chromium(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a reader opens it: Chromium (installed by .ci/run where Debian has it) loads
    the page from disk and takes a screenshot, with no script error and no blank page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (.ci/run installs it where apt-get can)")
    page, shot = tmp_path / "run.html", tmp_path / "shot.png"
    assert main(["simulate", *FAST, "--html", str(page)]) == 0
    capsys.readouterr()
    # This machine's network is closed: no background traffic, no first-run tasks.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
    flags += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
    ran = subprocess.run(
        [browser, *flags, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--window-size=1000,1400", f"--screenshot={shot}", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert "Uncaught" not in ran.stderr  # no script error on the page
    pixels = decoded(shot.read_bytes(), tmp_path)
    assert pixels.shape[:2] == (1400, 1000)
    assert pixels.std() > 0.05  # plots and tables, not a blank page


def test_without_matplotlib_the_cli_names_the_extra(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    assert main(["simulate", *FAST, "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "router-middleware[notebook]" in err
    assert "simulating" not in err  # refused before the run
    assert not (tmp_path / "x.png").exists()


def test_without_matplotlib_the_plots_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    report = simulate(default_scenario(requests=10, duration_seconds=1.0, speed=math.inf))
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"router-middleware\[notebook\]"):
        pictures(report)


def test_breaker_spans_cover_the_run_and_follow_the_transitions() -> None:
    report = simulate(default_scenario(requests=120, duration_seconds=12.0, speed=math.inf))
    end = report.requests["simulated_seconds"]
    for name, spans in breaker_spans(report).items():
        assert spans[0][0] == 0.0
        assert spans[-1][1] == end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))  # no gaps
        changes = [t["to"] for t in report.transitions if t["provider"] == name]
        assert [state for _, _, state in spans[1:]] == changes
    assert "open" in [s for _, _, s in breaker_spans(report)["primary"]]


def test_the_timeline_records_every_finished_request() -> None:
    report = simulate(default_scenario(requests=120, duration_seconds=12.0, speed=math.inf))
    assert len(report.timeline) == report.requests["total"]
    served = [t["provider"] for t in report.timeline if t["provider"] is not None]
    assert len(served) == report.requests["succeeded"]
    assert {n: served.count(n) for n in report.providers} == report.requests["served_by"]
    assert all(t["latency"] >= 0 and t["at"] >= 0 for t in report.timeline)


def test_pictures_show_inline_in_jupyter() -> None:
    report = simulate(default_scenario(requests=20, duration_seconds=2.0, speed=math.inf))
    shown = pictures(report)
    assert [p._repr_png_()[:8] for p in shown] == [PNG] * 3
    assert "bytes of PNG" in repr(shown[0])


def test_the_report_keeps_the_router_out_of_its_json() -> None:
    report = simulate(default_scenario(requests=20, duration_seconds=2.0, speed=math.inf))
    assert report.router is not None
    assert report.router.metrics()["totals"]["total_requests"] >= 20
    assert "router" not in report.to_dict()
    assert "router" not in repr(report)
