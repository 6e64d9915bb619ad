"""router.watch(): a live table refreshed in place, from a daemon thread, with a fake display."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from router_middleware import FakeClock, ResilientRouter, RouterError
from router_middleware.testing import ScriptedChatModel, http_error


class FakeHandle:
    """IPython's DisplayHandle: records every update, and wakes tests waiting for one."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.updates: list[dict[str, str]] = []
        self.changed = threading.Condition()

    def update(self, obj: Any, **kwargs: Any) -> None:
        assert kwargs == {"raw": True}
        if self.fail:
            raise RuntimeError("frontend gone")
        with self.changed:
            self.updates.append(obj)
            self.changed.notify_all()

    def wait_for(self, ok: Callable[[list[dict[str, str]]], bool], timeout: float = 5.0) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: ok(self.updates), timeout), self.updates[-1:]


class FakeDisplay:
    """``IPython.display.display`` as ``watch`` calls it: one display, one handle."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.handle = FakeHandle(fail)

    def __call__(self, obj: Any, **kwargs: Any) -> FakeHandle:
        self.calls.append((obj, kwargs))
        return self.handle


class Blocking(BaseChatModel):
    """Answers once ``release`` is set; sets ``entered`` when a call starts."""

    entered: Any
    release: Any

    @property
    def _llm_type(self) -> str:
        return "blocking"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
        self.entered.set()
        assert self.release.wait(10)
        return ChatResult(generations=[ChatGeneration(message=AIMessage("late"))])


def flaky_and_backup(backup: BaseChatModel | None = None) -> ResilientRouter:
    """``flaky`` fails once with a 503 (its breaker opens), then ``backup`` answers."""
    return ResilientRouter(
        {
            "flaky": ScriptedChatModel(script=[http_error(503)]),
            "backup": backup or ScriptedChatModel(),
        },
        {
            "providers": [
                {"name": "flaky", "priority": 1, "models": [{"name": "m"}]},
                {"name": "backup", "priority": 2, "models": [{"name": "m"}],
                 "rate_limit": {"max_concurrent": 2}},
            ],
            "strategy": "cost_priority_round_robin",
            "retry": {"attempts": 1},
            "circuit_breaker": {"threshold": 1},
        },
        clock=FakeClock(),
    )  # fmt: skip


def test_table_shows_breaker_rate_and_recent_errors_after_failures() -> None:
    router = flaky_and_backup()
    display = FakeDisplay()
    watch = router.watch(interval=60, display=display)  # no tick: stop() renders once
    first = display.calls[0][0]
    assert "–" in first["text/plain"]  # no rate before a second reading
    router.invoke("hi")
    router.invoke("hi")
    watch.stop()
    (last,) = display.handle.updates
    html, text = last["text/html"], last["text/plain"]
    assert ">open</span>" in html
    assert ">closed</span>" in html
    flaky = next(line for line in text.splitlines() if line.startswith("flaky"))
    backup = next(line for line in text.splitlines() if line.startswith("backup"))
    assert "open" in flaky
    assert "transient" in flaky
    assert "s ago" in flaky
    assert "closed" in backup
    assert "0/2" in backup
    assert "transient" not in backup
    assert "0/∞" in flaky  # no max_concurrent
    rate = float(backup.split()[3])  # two requests over the stop's interval
    assert rate > 0
    assert "stopped" in text


def test_recent_errors_keep_the_last_n_newest_first() -> None:
    router = ResilientRouter(
        {"a": ScriptedChatModel(script=[http_error(503), http_error(429), TimeoutError()])},
        {"retry": {"attempts": 1}, "circuit_breaker": {"threshold": 10}},
        clock=FakeClock(),
    )
    display = FakeDisplay()
    with router.watch(interval=60, errors=2, display=display):
        for _ in range(3):
            with pytest.raises(RouterError):
                router.invoke("hi")
    text = display.handle.updates[-1]["text/plain"]
    row = next(line for line in text.splitlines() if line.startswith("a "))
    assert "transient" not in row  # the oldest fell out
    assert row.index("timeout") < row.index("rate_limited")


def test_in_flight_shows_while_a_call_runs() -> None:
    release, entered = threading.Event(), threading.Event()
    router = flaky_and_backup(Blocking(entered=entered, release=release))
    display = FakeDisplay()
    worker = threading.Thread(target=router.invoke, args=("hi",))
    with router.watch(interval=0.01, display=display):
        worker.start()
        assert entered.wait(5)
        display.handle.wait_for(lambda u: bool(u) and "1/2" in u[-1]["text/plain"])
        release.set()
        worker.join(5)
        display.handle.wait_for(lambda u: "0/2" in u[-1]["text/plain"])


def test_updates_happen_in_place_one_per_interval_and_stop_promptly() -> None:
    router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    display = FakeDisplay()
    threads = threading.active_count()
    watch = router.watch(interval=0.01, display=display)
    assert threading.active_count() == threads + 1
    assert watch.running
    assert "running" in repr(watch)
    display.handle.wait_for(lambda u: len(u) >= 3)
    started = time.monotonic()
    watch.stop()
    assert time.monotonic() - started < 1.0
    assert threading.active_count() == threads
    assert not watch.running
    # One display with an id, every refresh an update of it; the last one on stop.
    assert [kwargs for _, kwargs in display.calls] == [{"raw": True, "display_id": True}]
    made = len(display.handle.updates)
    assert watch.updates == made >= 4
    assert f"updates={made}" in repr(watch)
    assert "stopped" in repr(watch)
    watch.stop()  # idempotent
    time.sleep(0.05)
    assert len(display.handle.updates) == made  # nothing after stop


def test_stop_with_a_long_interval_is_immediate_and_removes_the_observer() -> None:
    router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    threads = threading.active_count()
    watch = router.watch(interval=3600, display=FakeDisplay())
    assert watch.recent in router.observers
    started = time.monotonic()
    with watch:
        pass
    assert time.monotonic() - started < 1.0
    assert threading.active_count() == threads
    assert watch.recent not in router.observers


def test_a_raising_display_is_logged_once_and_routing_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    display = FakeDisplay(fail=True)
    with (
        caplog.at_level(logging.ERROR, logger="router_middleware"),
        router.watch(interval=0.01, display=display) as watch,
    ):
        deadline = time.monotonic() + 5
        while watch.failures < 3 and time.monotonic() < deadline:
            assert router.invoke("hi").content
    assert watch.failures >= 3
    assert watch.updates == 0
    assert "failures=" in repr(watch)
    assert len([r for r in caplog.records if "could not update" in r.message]) == 1


def test_a_display_that_fails_at_once_leaves_no_thread_nor_observer() -> None:
    router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    threads, heard = threading.active_count(), router.observers.heard

    def broken(obj: Any, **kwargs: Any) -> None:
        raise RuntimeError("no frontend")

    with pytest.raises(RuntimeError):
        router.watch(display=broken)
    assert threading.active_count() == threads
    assert router.observers.heard == heard


def test_bad_arguments_are_refused() -> None:
    router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    with pytest.raises(ValueError, match="interval"):
        router.watch(interval=0, display=FakeDisplay())
    with pytest.raises(ValueError, match="errors"):
        router.watch(errors=0, display=FakeDisplay())


def test_without_ipython_watch_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "IPython", None)
    monkeypatch.setitem(sys.modules, "IPython.display", None)
    router = ResilientRouter({"a": ScriptedChatModel()}, clock=FakeClock())
    with pytest.raises(ImportError, match="needs IPython"):
        router.watch()


def test_in_a_kernel_the_view_is_displayed_and_updated_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nbformat = pytest.importorskip("nbformat", reason="needs the dev extra (nbformat)")
    nbclient = pytest.importorskip("nbclient", reason="needs the dev extra (nbclient)")
    pytest.importorskip("ipykernel", reason="needs the dev extra (ipykernel)")
    for name in list(os.environ):  # the kernel inherits the environment
        if name.upper().startswith("LLM_ROUTER_"):
            monkeypatch.delenv(name)
    source = """\
import time
from router_middleware import ResilientRouter
from router_middleware.testing import ScriptedChatModel
router = ResilientRouter({"a": ScriptedChatModel()})
with router.watch(interval=0.02) as watch:
    router.invoke("hi")
    deadline = time.monotonic() + 5
    while watch.updates < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
print(watch.updates >= 3, watch.failures)"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    outputs = notebook.cells[0].outputs
    shown = [o for o in outputs if o.output_type == "display_data"]
    assert len(shown) == 1  # the updates replaced it in place, none appended
    assert "stopped" in shown[0].data["text/plain"]
    assert "<table" in shown[0].data["text/html"]
    assert "True 0" in "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
