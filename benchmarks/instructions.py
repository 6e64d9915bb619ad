"""Instructions per call of the router and of the inline floor, counted by callgrind.

Timings on a shared machine move by several percent between runs; instruction counts do
not (a run repeats to within ~0.1%), so they tell whether a change to the hot path helps.
The variants are ``overhead.py``'s own (``build_variants``): ``floor_inline``,
``router``, ``floor_inline_tools``, ``router_tools`` (and ``direct`` for reference).

One process measures one variant on one path: it builds the variants, warms the chosen
one up (both paths), freezes what is alive as ``overhead.py`` does, then makes ``--calls``
calls of it. Start-up, building and warm-up are the same whatever ``--calls`` is, so a run
with ``--calls 0`` subtracted from a run with N calls leaves N calls' instructions.

By hand, one variant (Python under callgrind runs ~50x slower, so N ~200)::

    valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \\
        .venv/bin/python benchmarks/instructions.py router sync --calls 200
    callgrind_annotate /tmp/cg.<pid> | head -60     # where the instructions go

Every variant and path, subtracted and as ratios (router / floor), ~3 min::

    .venv/bin/python benchmarks/instructions.py --all [--calls 200] [--jobs 2]

``PYTHONHASHSEED=0`` is set for the children, so string hashing (dict layouts) repeats.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import table
from overhead import build_variants

VARIANTS = ("direct", "floor_inline", "router", "floor_inline_tools", "router_tools")
MODES = ("sync", "async")
RATIOS = (("router", "floor_inline"), ("router_tools", "floor_inline_tools"))


def measure(name: str, mode: str, calls: int, warmup: int) -> None:
    """Build, warm up, then make ``calls`` calls of ``name`` on ``mode``'s path."""
    variants = {v.name: v for v in build_variants(with_litellm=False)[0]}
    variant = variants[name]
    loop = asyncio.new_event_loop()

    async def acalls(n: int) -> None:
        acall = variant.acall
        for _ in range(n):
            await acall()

    for _ in range(warmup):
        variant.call()
    loop.run_until_complete(acalls(warmup))
    gc.collect()
    gc.freeze()
    if mode == "sync":
        call = variant.call
        for _ in range(calls):
            call()
    else:
        loop.run_until_complete(acalls(calls))
    loop.close()


def _callgrind(name: str, mode: str, calls: int, warmup: int) -> int:
    """Total instructions of one run of this script under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            sys.executable,
            __file__,
            name,
            mode,
            f"--calls={calls}",
            f"--warmup={warmup}",
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        subprocess.run(command, check=True, env=env, capture_output=True)
        match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if match is None:
            raise RuntimeError(f"no instruction total in {out}")
        return int(match.group(1))


def measure_all(calls: int, warmup: int, jobs: int) -> dict[tuple[str, str], float]:
    """Instructions per call of every variant and path: (N calls - 0 calls) / N."""
    # One run first, natively, so that every module it imports is compiled: a run that
    # compiles a module (and writes its .pyc) costs more than one that reads it.
    subprocess.run(
        [sys.executable, __file__, "router", "sync", "--calls=0", "--warmup=1"], check=True
    )
    runs = [(v, m, n) for v in VARIANTS for m in MODES for n in (0, calls)]
    with ThreadPoolExecutor(jobs) as pool:
        totals = dict(
            zip(runs, pool.map(lambda r: _callgrind(r[0], r[1], r[2], warmup), runs), strict=True)
        )
    return {
        (v, m): (totals[v, m, calls] - totals[v, m, 0]) / calls for v in VARIANTS for m in MODES
    }


def report(per_call: dict[tuple[str, str], float]) -> str:
    rows = [[v, *(f"{per_call[v, m]:,.0f}" for m in MODES)] for v in VARIANTS]
    lines = [table(["variant", "sync instr/call", "async instr/call"], rows), ""]
    rows = [
        [f"{a} / {b}", *(f"{per_call[a, m] / per_call[b, m]:.3f}" for m in MODES)]
        for a, b in RATIOS
    ]
    lines.append(table(["ratio", "sync", "async"], rows))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", nargs="?", choices=VARIANTS)
    parser.add_argument("mode", nargs="?", choices=MODES)
    parser.add_argument("--calls", type=int, default=200, help="measured calls")
    parser.add_argument("--warmup", type=int, default=50, help="untimed calls per path first")
    parser.add_argument("--all", action="store_true", help="run every variant under callgrind")
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at once (--all)")
    args = parser.parse_args()
    if args.all:
        print(report(measure_all(args.calls, args.warmup, args.jobs)))
    elif args.variant and args.mode:
        measure(args.variant, args.mode, args.calls, args.warmup)
    else:
        parser.error("give a variant and a mode, or --all")


if __name__ == "__main__":
    main()
