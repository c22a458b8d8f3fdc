"""``python -m benchmarks``: cellkernel next to reaktiv, one process, one table.

Options:

``--quick``        smaller sizes (map 1 000 / 2 000, deep chain 10 000) for a smoke run
``--deep N``       length of the deep chain (default 100 000; 0 skips it)
``--skip NAME``    skip a part: core, patterns, refer, snapshot, jupyter, load, postgres,
                   peers, collections (repeatable)
``--readme``       also write the table into ``benchmarks/README.md`` (between markers)

Order: the core and pattern shapes (the table so far is printed), then the other
benchmark modules of this package (``bench_refer``, ``bench_snapshot``,
``bench_jupyter``, ``bench_load``; owned elsewhere; each is run if it can be
imported and skipped with a note if not), then the deep chain, which leaves about
a gigabyte behind, and the full table once more.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import DEFAULT_RECURSION_LIMIT, Row, format_table

README = Path(__file__).resolve().parent / "README.md"
BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"

EXTRAS = ("refer", "snapshot", "jupyter", "load", "postgres", "peers", "collections")


def machine_note() -> str:
    try:
        from importlib.metadata import version

        reaktiv = version("reaktiv")
    except Exception:  # pragma: no cover - reaktiv is a test extra
        reaktiv = "not installed"
    load = ""
    if hasattr(os, "getloadavg"):
        load = " · load avg {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())
    return (
        f"{datetime.date.today().isoformat()} · {os.cpu_count()} cores · "
        f"Python {platform.python_version()} ({platform.python_implementation()}) · "
        f"reaktiv {reaktiv} · recursion limit {DEFAULT_RECURSION_LIMIT}{load}"
    )


def _extra_rows(name: str, quick: bool) -> str:
    """Run one of the other modules; return its output as text."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    if name == "refer":
        result = module.bench_refer()
        table = getattr(module, "_table", None)
        return table(result) if table is not None else json.dumps(result, indent=1)
    rows = module.run(quick=quick) if name in ("load", "peers", "collections") else module.run()
    if isinstance(rows, dict):
        rows = [rows]
    lines = []
    for row in rows or []:
        if isinstance(row, dict) and {"case", "value"} <= set(row):
            lines.append(f"{row['case']:<64} {row['value']:>14} {row.get('unit', '')}")
        else:
            lines.append(str(row))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--deep", type=int, default=None)
    parser.add_argument("--skip", action="append", default=[],
                        choices=["core", "patterns", *EXTRAS])
    parser.add_argument("--readme", action="store_true")
    args = parser.parse_args(argv)

    from benchmarks import bench_core, bench_patterns

    deep = args.deep if args.deep is not None else (10_000 if args.quick else 100_000)
    map_sizes = (1_000, 2_000) if args.quick else bench_patterns.MAP_SIZES
    started = time.perf_counter()
    note = machine_note()
    print(f"cellkernel benchmarks — {note}", flush=True)
    rows: list[Row] = []
    if "core" not in args.skip:
        rows += bench_core.run()
        print("core shapes:\n" + format_table(rows), flush=True)
    if "patterns" not in args.skip:
        rows += bench_patterns.run(deep=0, map_sizes=map_sizes)
        print("\ncore and pattern shapes:\n" + format_table(rows), flush=True)

    status = 0
    # What the shapes above left on the heap (registered patterns, stores) must not
    # tax the other modules' timings through the cyclic collector: freeze it.
    gc.collect()
    gc.freeze()
    try:
        for name in EXTRAS:
            if name in args.skip:
                continue
            print(f"\n== bench_{name} ==", flush=True)
            try:
                text = _extra_rows(name, args.quick)
            except ImportError as exc:
                text = f"skipped: benchmarks.bench_{name} not importable ({exc})"
            except Exception:  # keep going: the other parts are still worth having
                text = "FAILED:\n" + traceback.format_exc()
                status = 1
            print(text, flush=True)
    finally:
        gc.unfreeze()

    if "patterns" not in args.skip and deep:
        # last: it leaves about a gigabyte behind
        print(f"\n== chain of {deep:,} lifts ==", flush=True)
        rows.append(bench_patterns.bench_deep(deep))
    table = format_table(rows)
    print(f"\n== results ({note}) ==\n")
    print(table)
    print()
    print(
        "Per write: median of samples taken in alternation (cellkernel, reaktiv, cellkernel, …); "
        "ck/rk < 1 means cellkernel is faster. Runs: cellkernel actions run (scheduler.run_count); "
        "reaktiv Computed recomputes (+ effects)."
    )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.readme:
        end_load = ""
        if hasattr(os, "getloadavg"):
            end_load = " (at the start; {:.1f} {:.1f} {:.1f} at the end)".format(*os.getloadavg())
        write_readme(table, note + end_load)
    return status


def write_readme(table: str, note: str) -> None:
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{README} has no {BEGIN} … {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    block = f"{BEGIN}\nMachine: {note}\n\n{table}\n{END}"
    README.write_text(head + block + tail, encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
