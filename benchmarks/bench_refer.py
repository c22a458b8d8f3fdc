"""Throughput of ``cellkernel.data.identity.refer`` vs npm ``merkle-reference`` on causes.

Every derived cell id hashes a cause, so this is a hot path. The same cause objects
are hashed by Python here and by ``benchmarks/js/bench_refer.mjs`` under node in the
same invocation; the CIDs must agree and the time ratio python/js is reported.

Run: ``python benchmarks/bench_refer.py``. The JS half is skipped (with a message)
when node/npm are missing; ``npm ci`` runs once if ``benchmarks/js/node_modules`` is absent.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cellkernel.data import identity
from cellkernel.data.identity import refer

JS_DIR = Path(__file__).resolve().parent / "js"
CAUSE_COUNT = 2000
MIN_SECONDS = 1.0


def make_causes(count: int = CAUSE_COUNT) -> list[dict[str, Any]]:
    """Distinct cause objects shaped like the runner's derived-cell causes."""
    parents = [str(refer({"process": p})) for p in range(50)]
    impls = [refer({"impl": i}).digest.hex() for i in range(20)]
    helpers = ["lift", "handler", "map", "derive", "ifElse"]
    causes: list[dict[str, Any]] = []
    for i in range(count):
        causes.append(
            {
                "parent": "of:" + parents[i % len(parents)],
                "helper": helpers[i % len(helpers)],
                "impl": impls[i % len(impls)],
                "inputs": ["of:" + parents[(i * 7) % len(parents)], "of:" + parents[(i + 3) % 50]],
                "index": i % 64,
                "config": None if i % 3 else {"debounce": i % 5, "label": f"step {i}"},
            }
        )
    return causes


def _measure(op: Callable[[Any], object], causes: list[dict[str, Any]], *, cold: bool) -> float:
    for c in causes:  # warm up
        op(c)
    calls = 0
    elapsed = 0.0
    clock = time.perf_counter
    caches = (identity._str_cache, identity._int_cache, identity._float_cache)
    while elapsed < MIN_SECONDS:
        if cold:
            for c in causes:
                for cache in caches:
                    cache.clear()
                start = clock()
                op(c)
                elapsed += clock() - start
        else:
            start = clock()
            for c in causes:
                op(c)
            elapsed += clock() - start
        calls += len(causes)
    return calls / elapsed


def _run_js(causes: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str | None]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None:
        return None, "node not found: JavaScript half skipped"
    if not (JS_DIR / "node_modules" / "merkle-reference").is_dir():
        if npm is None:
            return None, "npm not found and benchmarks/js/node_modules missing: JS half skipped"
        setup = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=JS_DIR, capture_output=True, text=True
        )
        if setup.returncode != 0:
            return None, f"npm ci failed in benchmarks/js: {setup.stderr.strip()[-500:]}"
    proc = subprocess.run(
        [node, "bench_refer.mjs"],
        cwd=JS_DIR,
        input=json.dumps({"causes": causes, "min_seconds": MIN_SECONDS}),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return None, f"node bench failed: {proc.stderr.strip()[-500:]}"
    result: dict[str, Any] = json.loads(proc.stdout)
    return result, None


def bench_refer() -> dict[str, Any]:
    """Ops/s of refer (and refer + id string) in Python and JavaScript, and their time ratio."""
    causes = make_causes()
    py_cids = [str(refer(c)) for c in causes]
    result: dict[str, Any] = {
        "name": "refer",
        "causes": len(causes),
        "python_ops_per_s": _measure(refer, causes, cold=False),
        "python_id_ops_per_s": _measure(lambda c: "of:" + str(refer(c)), causes, cold=False),
        "python_cold_ops_per_s": _measure(refer, causes, cold=True),
    }
    js, skipped = _run_js(causes)
    result["js_skipped"] = skipped
    if js is not None:
        result["js_version"] = js["version"]
        result["js_ops_per_s"] = js["refer_ops_per_s"]
        result["js_id_ops_per_s"] = js["id_ops_per_s"]
        result["cids_match"] = js["cids"] == py_cids
        # python_time / js_time per operation
        result["ratio"] = js["refer_ops_per_s"] / result["python_ops_per_s"]
        result["ratio_id"] = js["id_ops_per_s"] / result["python_id_ops_per_s"]
        result["ratio_cold"] = js["refer_ops_per_s"] / result["python_cold_ops_per_s"]
    return result


def run(report: Callable[[dict[str, Any]], object] = print) -> dict[str, Any]:
    """Benchmark-suite entry point: hands the result dict to ``report`` and returns it."""
    result = bench_refer()
    report(result)
    return result


def _table(result: dict[str, Any]) -> str:
    rows = [("operation", "python ops/s", "js ops/s", "python/js time")]

    def fmt(x: float | None) -> str:
        return "-" if x is None else f"{x:,.0f}"

    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    rows.append(
        (
            "refer(cause)",
            fmt(result["python_ops_per_s"]),
            fmt(result.get("js_ops_per_s")),
            ratio(result.get("ratio")),
        )
    )
    rows.append(
        (
            "'of:' + id",
            fmt(result["python_id_ops_per_s"]),
            fmt(result.get("js_id_ops_per_s")),
            ratio(result.get("ratio_id")),
        )
    )
    rows.append(
        (
            "refer, cold leaf caches",
            fmt(result["python_cold_ops_per_s"]),
            fmt(result.get("js_ops_per_s")),
            ratio(result.get("ratio_cold")),
        )
    )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{result['causes']} distinct cause objects; ratio <= 1 means Python is faster."]
    if result.get("js_skipped"):
        notes.append(result["js_skipped"])
    else:
        notes.append(
            f"merkle-reference {result['js_version']} on node; CIDs match: {result['cids_match']}"
        )
    return "\n".join(lines + notes)


if __name__ == "__main__":
    print(_table(bench_refer()))
