"""Import time of ``router_middleware`` over ``langchain_core.runnables``.

Two measures, each the median of ``--runs`` fresh interpreters run in interleaved order:

* wall time of ``python -c "import X"`` (minus ``python -c pass``), the cost a user sees;
* ``python -X importtime``: the cumulative time of the top-level import, and the modules
  ``router_middleware`` brings in beyond ``langchain_core.runnables``, by own time (the
  list to read when the target is missed).

Target: ``import router_middleware`` <= ``import langchain_core.runnables`` + 50 ms.

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
    "router_middleware": "import router_middleware",
}
LIMIT_MS = 50.0


def wall(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], cwd=ROOT, check=True)
    return (time.perf_counter() - start) * 1000


def importtime(module: str) -> dict[str, tuple[float, float]]:
    """``{module: (self_ms, cumulative_ms)}`` from one ``-X importtime`` run."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    out = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line[len("import time:") :].split("|")
        out[name.strip()] = (int(self_us) / 1000, int(cumulative_us) / 1000)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    walls: dict[str, list[float]] = defaultdict(list)
    names = list(TARGETS)
    for statement in TARGETS.values():  # warm the file system cache
        wall(statement)
    for r in range(args.runs):
        for name in names[r % 3 :] + names[: r % 3]:
            walls[name].append(wall(TARGETS[name]))
    base = statistics.median(walls["python (no import)"])
    wall_ms = {name: statistics.median(v) - base for name, v in walls.items() if name != names[0]}
    per_run_diff = [
        a - b for a, b in zip(walls["router_middleware"], walls["langchain_core.runnables"])
    ]

    cumulative: dict[str, list[float]] = defaultdict(list)
    extra_self: dict[str, list[float]] = defaultdict(list)
    for _ in range(args.importtime_runs):
        lc = importtime("langchain_core.runnables")
        rm = importtime("router_middleware")
        cumulative["langchain_core.runnables"].append(lc["langchain_core.runnables"][1])
        cumulative["router_middleware"].append(rm["router_middleware"][1])
        for module, (self_ms, _) in rm.items():
            if module not in lc:
                extra_self[module].append(self_ms)
    extra = sorted(
        ((m, statistics.median(v)) for m, v in extra_self.items()), key=lambda x: -x[1]
    )
    by_package: dict[str, float] = defaultdict(float)
    for module, ms in extra:
        by_package[module.split(".")[0]] += ms
    diff = statistics.median(per_run_diff)
    return {
        "wall_ms_above_bare_python": wall_ms,
        "router_minus_langchain_ms": diff,
        "importtime_cumulative_ms": {m: statistics.median(v) for m, v in cumulative.items()},
        "extra_modules": len(extra),
        "extra_self_ms_by_package": dict(sorted(by_package.items(), key=lambda x: -x[1])[:10]),
        "extra_top_modules_self_ms": dict(extra[:10]),
        "target_ms": LIMIT_MS,
        "pass": diff <= LIMIT_MS,
    }


def report(results: dict[str, Any]) -> str:
    cumulative = results["importtime_cumulative_ms"]
    rows = [
        [name, ms, cumulative.get(name, float("nan"))]
        for name, ms in results["wall_ms_above_bare_python"].items()
    ]
    lines = [table(["import", "wall ms (fresh python)", "-X importtime ms"], rows), ""]
    lines.append(
        table(
            ["router_middleware - langchain_core.runnables", "ms", "target", ""],
            [
                [
                    "median of per-run differences (wall)",
                    results["router_minus_langchain_ms"],
                    f"<= {results['target_ms']:g}",
                    verdict(results["pass"]),
                ]
            ],
        )
    )
    lines.append(f"\n{results['extra_modules']} modules beyond langchain_core.runnables; own time:")
    lines.append(
        table(
            ["package", "ms"],
            [[k, v] for k, v in results["extra_self_ms_by_package"].items()],
        )
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh interpreters per import")
    parser.add_argument("--importtime-runs", type=int, default=5)
    args = parser.parse_args()
    results = run(args)
    print(report(results))
    path = write_results("import_time", args, results)
    print(f"\nwrote {path.name}")


if __name__ == "__main__":
    main()
