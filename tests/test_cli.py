"""The ``llm-router`` command, called in-process through ``main(argv)``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from router_middleware import _cli
from router_middleware._cli import main
from router_middleware.settings import env_reference

FAST = ["--requests", "120", "--duration", "12"]  # not a terminal: unpaced


pytestmark = pytest.mark.usefixtures("clean_env")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_ROUTER_STRATEGY", "cost_priority_round_robin")
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__OPENAI__MODELS", '[{"name": "gpt-4o-mini"}]')
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__OPENAI__PRIORITY", "1")
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__LOCAL__MODELS", '[{"name": "gpt-4o-mini"}]')
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__LOCAL__PRIORITY", "2")


def break_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_ROUTER_STRATEGY", "fastest")
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__A__PRIORITY", "-1")


# -- config --------------------------------------------------------------------------------


def test_check_a_valid_configuration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch)
    code, out, _ = run(capsys, "config", "check")
    assert code == 0
    assert out == (
        "configuration is valid: strategy cost_priority_round_robin; providers: local, openai\n"
    )
    code, out, _ = run(capsys, "config", "check", "--json")
    assert (code, json.loads(out)) == (
        0,
        {"valid": True, "problems": [], "providers": ["local", "openai"]},
    )


def test_check_lists_every_problem_and_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    break_config(monkeypatch)
    code, out, err = run(capsys, "config", "check")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "invalid router configuration (3 problem(s)):",
        "  - strategy: unknown strategy; expected one of round_robin, "
        "cost_priority_round_robin, weighted, least_busy, lowest_latency, usage_based "
        "[env LLM_ROUTER_STRATEGY]",
        "  - providers.a.priority: Input should be greater than or equal to 0 "
        "[env LLM_ROUTER_PROVIDERS__A__PRIORITY]",
        "  - providers.a.models: Field required [set LLM_ROUTER_PROVIDERS__A__MODELS; "
        "providers.a is from env LLM_ROUTER_PROVIDERS__A__PRIORITY]",
    ]
    code, out, _ = run(capsys, "config", "check", "--json")
    data = json.loads(out)
    assert (code, data["valid"], len(data["problems"])) == (1, False, 3)


def test_show_json_gives_values_and_sources(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    configure(monkeypatch)
    (tmp_path / ".env").write_text("LLM_ROUTER_MAX_ATTEMPTS=4\n")
    file = tmp_path / "router.toml"
    file.write_text("[retry]\nattempts = 5\n")
    code, out, _ = run(capsys, "config", "show", "--json", "--config-file", str(file))
    data = json.loads(out)
    assert code == 0
    assert data["config"]["providers"]["openai"]["priority"] == 1.0
    assert (data["config"]["max_attempts"], data["config"]["retry"]["attempts"]) == (4, 5)
    assert (
        data["sources"]["providers.openai.priority"] == "env LLM_ROUTER_PROVIDERS__OPENAI__PRIORITY"
    )
    assert data["sources"]["max_attempts"] == ".env LLM_ROUTER_MAX_ATTEMPTS"
    assert data["sources"]["retry.attempts"] == f"file {file}"
    assert data["sources"]["config_file"] == "command line"
    assert data["sources"]["circuit_breaker.threshold"] == "default"


def test_show_plain_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch)
    code, out, _ = run(capsys, "config", "show")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["setting", "value", "source"]
    assert any(
        line.split() == ["strategy", '"cost_priority_round_robin"', "env", "LLM_ROUTER_STRATEGY"]
        for line in lines
    )


def test_show_with_an_invalid_configuration_fails(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    break_config(monkeypatch)
    code, out, err = run(capsys, "config", "show")
    assert (code, out) == (1, "")
    assert "strategy: unknown strategy; expected one of" in err
    assert "fastest" not in err


CANARY = "sk-CANARY-91d0"


@pytest.mark.parametrize("command", ["check", "show"])
@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_config_commands_never_print_a_dotenv_value(
    command: str,
    json_flag: list[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``config check`` printed ``LLM_ROUTER_CONFIG_FILE=<the value>: cannot read the file``."""
    (tmp_path / ".env").write_text(
        f"LLM_ROUTER_CONFIG_FILE={CANARY}\nLLM_ROUTER_DEFAULT_MODEL={CANARY}\n"
        'LLM_ROUTER_PROVIDERS__A__MODELS=\'[{"name": "m"}]\'\n'
    )
    code, out, err = run(capsys, "config", command, *json_flag)
    assert code == 1
    assert CANARY not in out + err
    text = out + err
    assert "LLM_ROUTER_CONFIG_FILE: cannot read the file" in text
    assert "default_model: no provider serves this model" in text
    assert "[.env]" in text
    assert "[.env LLM_ROUTER_DEFAULT_MODEL]" in text


def test_show_never_prints_the_config_json_document(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("LLM_ROUTER_CONFIG_JSON='{\"max_attempts\": 7}'\n")
    for flags in ([], ["--json"]):
        code, out, _ = run(capsys, "config", "show", *flags)
        assert code == 0
        assert "7" in out  # the value it set is shown, with its origin
        assert "config_json" not in out
        assert '{"max_attempts": 7}' not in out


def test_reference_prints_the_env_reference(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "config", "reference")
    assert (code, out) == (0, env_reference())


# -- simulate -------------------------------------------------------------------------------


def test_simulate_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "simulate", "--json", "--seed", "3", *FAST)
    report = json.loads(out)
    assert (code, err) == (0, "")
    assert report["requests"]["total"] == 120
    assert set(report["providers"]) == {"primary", "secondary", "slow-backup"}
    assert (report["scenario"]["seed"], report["scenario"]["speed"]) == (3, None)  # unpaced
    assert report["transitions"][0]["provider"] == "primary"
    # The facts the plain report prints are in the JSON too.
    assert report["injected"][0] == {
        "provider": "primary", "fault": "outage", "start": 3.0, "end": 6.0,
        "effect": "every call fails fast with HTTP 503", "fate": "outage",
        "hits": report["providers"]["primary"]["injected"]["outage"],
    }  # fmt: skip
    assert report["scenario"]["currency"] == "USD"
    for row in report["providers"].values():
        assert {"throttled", "rate_limited", "cost"} <= set(row)
    assert report["requests"]["cost"] > 0
    assert len(report["failures"]) == report["requests"]["failed"]
    _, again, _ = run(capsys, "simulate", "--json", "--seed", "3", *FAST)
    repeat = json.loads(again)
    assert repeat.pop("wall_seconds") >= 0
    report.pop("wall_seconds")
    assert repeat == report  # the same seed, the same counts


def test_simulate_the_configured_providers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch)
    code, out, _ = run(capsys, "simulate", "--json", *FAST, "--fault", "local:failure_rate=1")
    report = json.loads(out)
    assert code == 0
    assert set(report["providers"]) == {"openai", "local"}
    assert report["scenario"]["model"] is None  # no default model: any provider serves
    assert report["scenario"]["faults"]["openai"]["outage"] == [3.0, 6.0]  # preferred: outage
    assert report["providers"]["local"]["successes"] == 0
    assert report["providers"]["local"]["injected"]["failure"] > 0
    assert report["scenario"]["currency"] is None  # a config's prices have no stated currency
    code, out, _ = run(capsys, "simulate", *FAST, "--fault", "local:failure_rate=1")
    lines = out.splitlines()
    local = next(line for line in lines if line.startswith("  local "))
    assert local.split()[:6] == ["local", "random", "failures", "whole", "run", "100%"]
    assert any(
        line.startswith("cost: 0.0000, in the currency of the config's prices") for line in lines
    )
    assert "(config)" in lines[lines.index(next(x for x in lines if x.startswith("provider "))) + 1]
    code, out, _ = run(capsys, "simulate", "--json", "--no-config", *FAST)
    assert set(json.loads(out)["providers"]) == {"primary", "secondary", "slow-backup"}


def test_simulate_plain_output(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys, "simulate", *FAST, "--fault", "primary:outage=2-6", "--speed", "400"
    )
    assert code == 0
    lines = out.splitlines()
    # First what was injected: the traffic, then each provider's faults and when.
    assert lines[:3] == [
        "Scenario: 120 requests arriving evenly over 12 simulated seconds, at most 32 in flight "
        "(seed 0)",
        "Router: strategy cost_priority_round_robin, any model",
        "Injected (t = simulated seconds from the start):",
    ]
    injected = lines[5 : lines.index("")]
    assert [line.split()[:5] for line in injected[:2]] == [
        ["primary", "outage", "t=2s", "to", "6s"],
        ["primary", "latency", "whole", "run", "answers"],  # --fault replaced its failures
    ]
    assert "every call fails fast with HTTP 503" in injected[0]
    burst = next(line for line in injected if "429 burst" in line)
    assert burst.split()[:5] == ["secondary", "429", "burst", "t=7.56s", "to"]
    assert "every call gets HTTP 429 with Retry-After 3s" in burst
    # Then the results: cost with its unit, the provider's 429s apart from the router's skips.
    results = lines.index(next(line for line in lines if line.startswith("Results: ")))
    assert lines[results].startswith("Results: 120 of 120 requests succeeded, 0 failed, in ")
    assert lines[results + 2].startswith("cost: ")
    assert lines[results + 2].endswith(
        " USD, from the config's prices per 1k tokens (each answer: 60 input + 150 output tokens)"
    )
    top = lines.index(next(line for line in lines if line.startswith("provider ")))
    head = [line.split() for line in lines[top : top + 3]]
    assert head == [
        ["provider", "reqs", "ok", "failed", "429s", "skipped", "trips", "retries", "p50", "s",
         "p95", "s", "cost", "breaker"],
        ["from", "the", "by", "router", "(USD)"],
        ["provider", "limits"],
    ]  # fmt: skip
    assert any(line.startswith("  skipped: not called, the router held it back") for line in lines)
    assert lines[lines.index("Failed requests:") + 1] == "  none"
    assert "Breaker transitions:" in lines
    assert any("  primary  closed -> open" in line for line in lines)
    assert err.splitlines()[-1] == "simulating: 120/120 requests (100%)"


def test_simulate_explains_each_failed_request(capsys: pytest.CaptureFixture[str]) -> None:
    down = [f"--fault={name}:outage=2-6" for name in ("primary", "secondary", "slow-backup")]
    code, out, _ = run(capsys, "simulate", "--no-config", *FAST, *down)
    assert code == 0
    lines = out.splitlines()
    results = next(line for line in lines if line.startswith("Results: "))
    assert results.startswith("Results: 96 of 120 requests succeeded, 24 failed, in ")
    failed = lines[lines.index("Failed requests:") + 1 : lines.index("Breaker transitions:") - 1]
    assert failed[0] == (
        "  3 requests sent between t=2.0s and t=2.2s failed: AllProvidersFailedError: "
        "primary raised HTTPStatusError: HTTP 503; secondary raised HTTPStatusError: HTTP 503; "
        "slow-backup raised HTTPStatusError: HTTP 503"
    )
    assert (
        "  18 requests sent between t=2.5s and t=4.2s failed: NoProviderAvailableError: "
        "no provider could take it: primary circuit open; secondary circuit open; "
        "slow-backup circuit open"
    ) in failed
    assert sum(int(line.split()[0]) for line in failed) == 24  # every failure, once
    _, out, _ = run(capsys, "simulate", "--json", "--no-config", *FAST, *down)
    failures = json.loads(out)["failures"]
    assert len(failures) == 24
    assert failures[0] == {
        "request": 20, "sent_at": 2.0, "failed_at": failures[0]["failed_at"],
        "error": "AllProvidersFailedError",
        "reason": "primary raised HTTPStatusError: HTTP 503; secondary raised "
        "HTTPStatusError: HTTP 503; slow-backup raised HTTPStatusError: HTTP 503",
    }  # fmt: skip
    assert failures[0]["failed_at"] >= 2.0


def test_simulate_with_rich_on_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=80, color_system=None)
    monkeypatch.setattr(_cli, "_rich_console", lambda: console)
    code, _, _ = run(capsys, "simulate", *FAST)
    text = screen.getvalue()
    assert code == 0
    assert "Scenario: 120 requests arriving evenly over 12 simulated seconds" in text
    assert "Injected" in text
    assert "t=3s to 6s" in text
    assert "Providers" in text
    for label in ("429s", "from the", "skipped", "by router", "(USD)", "Failed requests:"):
        assert label in text
    assert "…" not in text  # nothing cut short at 80 columns
    assert "Breaker transitions" in text
    assert "closed -> open" in text
    screen.truncate(0)
    screen.seek(0)
    code, _, _ = run(capsys, "simulate", "--tokens", *FAST)
    text = screen.getvalue()
    assert code == 0
    assert "Traffic: prompts of 30 to 6,000 tokens" in text
    for label in ("Tokens", "per min", "60 s", "window", "context", "100,000"):
        assert label in text
    assert "primary: its 60 s window peaked at " in text
    assert "…" not in text


def test_simulate_tokens_plain(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "--tokens", *FAST)
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == [
        "Scenario: 120 requests arriving evenly over 12 simulated seconds, at most 32 in flight "
        "(seed 0)",
        "Router: strategy cost_priority_round_robin, any model",
        "Traffic: prompts of 30 to 6,000 tokens (log-uniform), max_tokens 128, 256, 512, 1,024 "
        "or unset; answers of 40 to 800 tokens, at most max_tokens",
    ]
    limit = next(line for line in lines if " token limit " in line)
    assert limit.split()[:5] == ["primary", "token", "limit", "whole", "run"]
    assert "over 100,000 tokens" in limit
    window = next(line for line in lines if " context window " in line)
    assert window.split()[:3] == ["small-window", "context", "window"]
    assert lines[lines.index(next(x for x in lines if x.startswith("Results: ")))].startswith(
        "Results: 120 of 120 requests succeeded, 0 failed"
    )
    top = lines.index("Tokens:") + 1
    assert [line.split() for line in lines[top : top + 3]] == [
        ["provider", "input", "output", "limit", "peak", "429s", "400s", "skipped", "skipped"],
        ["tokens", "60", "s", "for", "too", "token", "context"],
        ["per", "min", "window", "tokens", "long", "limit", "window"],
    ]
    primary = lines[top + 3].split()
    assert primary[0] == "primary"
    assert primary[3] == "100,000"
    peak = int(primary[4].replace(",", ""))
    assert 90_000 <= peak <= 100_000
    assert primary[5:7] == ["0", "0"]  # no 429 for tokens, no 400
    assert int(primary[7]) > 0  # skipped for its token limit
    small = lines[top + 4].split()
    assert (small[0], small[3], small[5], small[6]) == ("small-window", "-", "0", "0")
    assert int(small[8]) > 0  # long prompts skipped it
    sentence = next(line for line in lines if line.startswith("primary: its 60 s window"))
    assert sentence.startswith(f"primary: its 60 s window peaked at {peak:,} of 100,000 tokens")
    assert "it answered 0 429s" in sentence + lines[lines.index(sentence) + 1]
    assert lines.index("Tokens:") < lines.index("Failed requests:")


def test_simulate_tokens_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "--tokens", "--json", *FAST)
    report = json.loads(out)
    assert code == 0
    assert report["scenario"]["prompts"]["prompt_tokens"] == [30, 6000]
    assert report["scenario"]["tokens_per_answer"] is None
    primary, small = report["providers"]["primary"], report["providers"]["small-window"]
    assert primary["tokens_per_minute"] == 100_000
    assert primary["throttled"] == 0
    assert 0 < primary["peak_window_tokens"] <= 100_000
    assert primary["skipped_for"]["token limit"] > 0
    assert small["skipped_for"]["context window"] > 0
    assert small["injected"] == {"ok": small["successes"]}
    faults = {(i["provider"], i["fault"]): i for i in report["injected"]}
    assert faults["primary", "token limit"]["hits"] == 0
    # A --fault replaces the provider's behaviour, not the limits of its config.
    fault = "--fault=primary:failure_rate=0.1"
    _, out, _ = run(capsys, "simulate", "--tokens", "--json", *FAST, fault)
    assert json.loads(out)["scenario"]["faults"]["primary"]["tokens_per_minute"] == 100_000


def test_simulate_tokens_with_a_configuration(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch)
    monkeypatch.setenv("LLM_ROUTER_PROVIDERS__OPENAI__RATE_LIMIT__TOKENS_PER_MINUTE", "20000")
    monkeypatch.setenv(
        "LLM_ROUTER_PROVIDERS__LOCAL__MODELS", '[{"name": "gpt-4o-mini", "max_input_tokens": 1000}]'
    )
    code, out, _ = run(capsys, "simulate", "--tokens", "--json", *FAST)
    report = json.loads(out)
    assert code == 0
    faults = report["scenario"]["faults"]
    # Each provider enforces what its config says; the default roles stay.
    assert faults["openai"]["tokens_per_minute"] == 20_000
    assert faults["openai"]["outage"] == [3.0, 6.0]
    assert faults["local"]["max_input_tokens"] == 1000
    openai, local = report["providers"]["openai"], report["providers"]["local"]
    assert "token_limited" not in openai["injected"]
    assert openai["skipped_for"]["token limit"] > 0
    assert openai["peak_window_tokens"] <= 20_000
    assert "too_long" not in local["injected"]
    assert local["skipped_for"]["context window"] > 0


def test_a_token_limit_the_router_is_not_told(capsys: pytest.CaptureFixture[str]) -> None:
    fault = "primary:tokens_per_minute=5000,latency=0.3"
    code, out, _ = run(capsys, "simulate", "--json", "--no-config", *FAST, "--fault", fault)
    report = json.loads(out)
    assert code == 0
    assert report["scenario"]["prompts"] is not None  # a token limit brings token traffic
    primary = report["providers"]["primary"]
    assert primary["tokens_per_minute"] == 5000
    # Its own 429s (a retry after a short Retry-After may meet another one).
    assert primary["injected"]["token_limited"] >= primary["throttled"] >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["simulate", "--fault", "primary:nonsense=1"], "unknown part 'nonsense=1'"),
        (["simulate", "--fault", "ghost:failure_rate=1"], "faults for unknown provider(s): ghost"),
        (["simulate", "--requests", "0"], "requests and concurrency must be >= 1"),
        (["simulate", "--tokens", "--concurrency", "0"], "requests and concurrency must be >= 1"),
        (
            ["simulate", "--fault", "primary:tokens_per_minute=0"],
            "tokens_per_minute must be a whole number >= 1",
        ),
    ],
)
def test_simulate_usage_errors(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err


def test_bad_speed_and_no_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["simulate", "--speed", "0"])
    assert exit_.value.code == 2
    code, _, err = run(capsys)
    assert code == 2
    assert "simulate" in err


def test_python_dash_m(tmp_path: Path) -> None:
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("LLM_ROUTER_")}
    env["LLM_ROUTER_MAX_ATTEMPTS"] = "0"
    done = subprocess.run(
        [sys.executable, "-m", "router_middleware", "config", "check"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "max_attempts: Input should be greater than or equal to 1" in done.stderr
