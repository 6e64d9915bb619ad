"""Import time of ``router_middleware`` over ``langchain_core.runnables``.

Two measures, each the median of ``--runs`` fresh interpreters run in interleaved order:

* wall time of ``python -c "<import>"`` (minus ``python -c pass``), the cost a user sees;
* ``python -X importtime``: the cumulative time of the top-level import, and the modules
  ``router_middleware`` brings in beyond a baseline, by own time (the list to read when
  the target is missed).

Target: ``import router_middleware`` <= ``import langchain_core.runnables`` + 50 ms.

``langchain_core.runnables`` is a lazy package: importing it loads none of its classes,
and the first ``from langchain_core.runnables import Runnable`` pays for
``langchain_core.runnables.base`` and, through the tracers, ``langsmith``. So the
differences are also reported over what any LangChain program that uses a ``Runnable``,
or a chat model, has already imported: the router's own share of the import time.

Run: ``.venv/bin/python benchmarks/import_time.py`` (``--runs 5`` for a quick run).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from typing import Any

from _common import ROOT, table, verdict, write_results

TARGETS = {
    "python (no import)": "pass",
    "langchain_core.runnables": "import langchain_core.runnables",
    "Runnable": "from langchain_core.runnables import Runnable",
    "BaseChatModel": "from langchain_core.language_models import BaseChatModel",
    "router_middleware": "import router_middleware",
}
BASELINES = ("langchain_core.runnables", "Runnable", "BaseChatModel")
LIMIT_MS = 50.0


def wall(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True)
    return (time.perf_counter() - start) * 1000


def importtime(statement: str) -> dict[str, tuple[float, float]]:
    """``{module: (self_ms, cumulative_ms)}`` from one ``-X importtime`` run.

    The key ``""`` holds the statement's total: the cumulative times of the top-level
    imports (interpreter start-up included; subtract the bare interpreter's).
    """
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    out = {}
    total = 0.0
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|")
        if not name[1:].startswith(" "):  # one space after the bar: a top-level import
            total += int(cumulative_us) / 1000
        out[name.strip()] = (int(self_us) / 1000, int(cumulative_us) / 1000)
    out[""] = (0.0, total)
    return out


def _extra(
    runs: list[tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]]]],
) -> tuple[int, dict[str, float]]:
    """Modules in the router's import and not the baseline's: own ms summed by package."""
    per_module: dict[str, list[float]] = defaultdict(list)
    for base, router in runs:
        for module, (self_ms, _) in router.items():
            if module not in base:
                per_module[module].append(self_ms)
    by_package: dict[str, float] = defaultdict(float)
    for module, values in per_module.items():
        by_package[module.split(".")[0]] += statistics.median(values)
    top = sorted(by_package.items(), key=lambda x: -x[1])[:10]
    return len(per_module), dict(top)


def run(args: argparse.Namespace) -> dict[str, Any]:
    walls: dict[str, list[float]] = defaultdict(list)
    names = list(TARGETS)
    for statement in TARGETS.values():  # warm the file system cache
        wall(statement)
    for r in range(args.runs):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            walls[name].append(wall(TARGETS[name]))
    bare = statistics.median(walls[names[0]])
    wall_ms = {name: statistics.median(v) - bare for name, v in walls.items() if name != names[0]}
    router_over = {
        base: statistics.median(
            a - b for a, b in zip(walls["router_middleware"], walls[base], strict=True)
        )
        for base in BASELINES
    }

    trees: dict[str, list[dict[str, tuple[float, float]]]] = defaultdict(list)
    for _ in range(args.importtime_runs):
        for name in names:
            trees[name].append(importtime(TARGETS[name]))
    totals = {name: statistics.median(t[""][1] for t in trees[name]) for name in names}
    cumulative = {name: totals[name] - totals[names[0]] for name in names[1:]}
    own = defaultdict(list)
    for tree in trees["router_middleware"]:
        for module, (self_ms, _) in tree.items():
            if module.startswith("router_middleware"):
                own[module].append(self_ms)
    own_ms = dict(
        sorted(((m, statistics.median(v)) for m, v in own.items()), key=lambda x: -x[1])[:10]
    )
    extra = {}
    for base in BASELINES:
        count, packages = _extra(list(zip(trees[base], trees["router_middleware"], strict=True)))
        extra[base] = {"modules": count, "own_ms_by_package": packages}
    return {
        "wall_ms_above_bare_python": wall_ms,
        "router_over_ms": router_over,
        "importtime_cumulative_ms": cumulative,
        "extra_over": extra,
        "router_modules_own_ms": own_ms,
        "target_ms": LIMIT_MS,
        "pass": router_over["langchain_core.runnables"] <= LIMIT_MS,
    }


def report(results: dict[str, Any]) -> str:
    cumulative = results["importtime_cumulative_ms"]
    rows = [
        [TARGETS[name], ms, cumulative.get(name, float("nan"))]
        for name, ms in results["wall_ms_above_bare_python"].items()
    ]
    lines = [table(["statement", "wall ms (fresh python)", "-X importtime ms"], rows), ""]
    over = results["router_over_ms"]
    target_rows = []
    for base, ms in over.items():
        target = f"<= {results['target_ms']:g}" if base == "langchain_core.runnables" else "(info)"
        mark = verdict(results["pass"]) if base == "langchain_core.runnables" else ""
        target_rows.append([TARGETS[base], ms, target, mark])
    lines.append(table(["import router_middleware over", "ms", "target", ""], target_rows))
    for base in ("langchain_core.runnables", "BaseChatModel"):
        info = results["extra_over"][base]
        lines.append(
            f"\n{info['modules']} modules beyond `{TARGETS[base]}`; their own time by package:"
        )
        lines.append(
            table(["package", "ms"], [[k, v] for k, v in info["own_ms_by_package"].items()])
        )
    lines.append("\nrouter_middleware's own modules (own time):")
    lines.append(
        table(["module", "ms"], [[k, v] for k, v in results["router_modules_own_ms"].items()])
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=11, help="fresh interpreters per import")
    parser.add_argument("--importtime-runs", type=int, default=3)
    args = parser.parse_args()
    results = run(args)
    print(report(results))
    path = write_results("import_time", args, results)
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    main()
