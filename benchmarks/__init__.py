"""Benchmarks for cellkernel, measured next to reaktiv in one process.

Run ``python -m benchmarks`` from the repository root (see ``README.md``).
This module holds the shared measuring helpers: a ``Row`` of results, a
median-of-repetitions timer with warm-up, a scoped recursion-limit raise (used
for reaktiv only) and the table printer.
"""

from __future__ import annotations

import contextlib
import gc
import io
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_RECURSION_LIMIT",
    "Contestant",
    "Row",
    "format_table",
    "measure",
    "measure_interleaved",
    "quiet_stderr",
    "raised_recursion_limit",
    "time_once",
    "write_readme_block",
]

#: The interpreter's limit when the benchmarks start (1000 on CPython).
DEFAULT_RECURSION_LIMIT = sys.getrecursionlimit()

WARMUP = 3
REPEATS = 11
SAMPLE_SECONDS = 0.02


@dataclass
class Row:
    """One line of the results table; times are seconds per write (or per build)."""

    group: str
    shape: str
    ck: float | None
    rk: float | None = None
    ck_runs: str = ""
    rk_runs: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.ck is None or self.rk is None or self.rk == 0:
            return None
        return self.ck / self.rk


@dataclass
class Contestant:
    """One side of a comparison: a write step, its work counter, an optional recursion limit."""

    step: Callable[[int], None]
    counter: Callable[[], int] | None = None
    recursion_limit: int | None = None


def measure(
    step: Callable[[int], None],
    *,
    counter: Callable[[], int] | None = None,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
) -> tuple[float, int | None]:
    """Median seconds of ``step(i)`` over ``repeats`` calls, after ``warmup`` calls."""
    return measure_interleaved([Contestant(step, counter)], warmup=warmup, repeats=repeats)[0]


def measure_interleaved(
    contestants: list[Contestant],
    *,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    sample_seconds: float = SAMPLE_SECONDS,
) -> list[tuple[float, int | None]]:
    """Median seconds per ``step(i)`` of each contestant, sampled in alternation.

    Sample ``r`` times contestant A, then B, then A again at ``r + 1``…, so a
    change of machine load hits both sides alike (the benchmark machine is
    shared).  A sample is ``inner`` consecutive calls, ``inner`` calibrated per
    contestant so a sample lasts about ``sample_seconds`` (single calls of a few
    µs are dominated by timer and cache noise); the per-call time is the sample
    divided by ``inner``.  ``step`` gets a fresh integer each call, so every
    write changes a value.  The garbage collector is collected before and
    disabled during each sample (as ``timeit`` does).  A contestant's
    ``recursion_limit`` is set around its own calls only.  With a ``counter``,
    the work per call is returned too; it must be the same in every sample.
    """
    clock = time.perf_counter
    default_limit = sys.getrecursionlimit()
    n = 0
    inner = [1] * len(contestants)
    times: list[list[float]] = [[] for _ in contestants]
    counts: list[set[float]] = [set() for _ in contestants]
    enabled = gc.isenabled()
    try:
        for rep in range(warmup + repeats):
            for i, c in enumerate(contestants):
                sys.setrecursionlimit(max(default_limit, c.recursion_limit or 0))
                gc.collect()
                gc.disable()
                before = c.counter() if c.counter is not None else 0
                start = clock()
                for _ in range(inner[i]):
                    n += 1
                    c.step(n)
                elapsed = clock() - start
                after = c.counter() if c.counter is not None else 0
                if enabled:
                    gc.enable()
                sys.setrecursionlimit(default_limit)
                per_call = elapsed / inner[i]
                if rep < warmup:
                    inner[i] = max(1, min(10_000, round(sample_seconds / max(per_call, 1e-9))))
                else:
                    times[i].append(per_call)
                    if c.counter is not None:
                        counts[i].add((after - before) / inner[i])
    finally:
        sys.setrecursionlimit(default_limit)
        if enabled:
            gc.enable()
    out: list[tuple[float, int | None]] = []
    for i, c in enumerate(contestants):
        if c.counter is not None and len(counts[i]) != 1:
            raise AssertionError(f"work per write varies between samples: {sorted(counts[i])}")
        work = counts[i].pop() if c.counter is not None else None
        if work is not None and work != int(work):
            raise AssertionError(f"work per write is not a whole number: {work}")
        out.append((statistics.median(times[i]), None if work is None else int(work)))
    return out


def time_once(fn: Callable[[], object]) -> tuple[float, object]:
    """Seconds for one call of ``fn`` (for builds too large to repeat), and its result."""
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


@contextlib.contextmanager
def raised_recursion_limit(limit: int) -> Iterator[None]:
    """Raise ``sys.setrecursionlimit`` inside the block only (never lowers it)."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, limit))
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


@contextlib.contextmanager
def quiet_stderr() -> Iterator[io.StringIO]:
    """reaktiv prints effect exceptions to stderr instead of raising: capture them."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield buffer


def _fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_table(rows: list[Row]) -> str:
    """A Markdown table (readable as plain text too), with numbered notes under it."""
    header = ["group", "shape", "cellkernel", "reaktiv", "ck/rk", "ck runs", "rk runs"]
    body: list[list[str]] = []
    notes: list[str] = []
    for row in rows:
        shape = row.shape
        for note in row.notes:
            notes.append(note)
            shape += f" [{len(notes)}]"
        ratio = row.ratio
        body.append([
            row.group,
            shape,
            _fmt_time(row.ck),
            _fmt_time(row.rk),
            "—" if ratio is None else f"{ratio:.2f}",
            row.ck_runs or "—",
            row.rk_runs or "—",
        ])
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    right = {2, 3, 4, 5, 6}

    def line(cells: list[str]) -> str:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(
        ("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)
    ) + "|"
    out = [line(header), rule, *(line(r) for r in body)]
    if notes:
        out.append("")
        out.extend(f"[{i}] {text}" for i, text in enumerate(notes, 1))
    return "\n".join(out)


def write_readme_block(readme: Path, begin: str, end: str, text: str) -> None:
    """Replace what stands between the ``begin`` and ``end`` markers of ``readme`` with ``text``."""
    content = readme.read_text(encoding="utf-8")
    if begin not in content or end not in content:
        raise SystemExit(f"{readme} has no {begin} … {end} markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{text}\n{end}{tail}", encoding="utf-8")
