"""PostgreSQL store: commits/s with 1/2/4/8 writer processes and live-change latency, beside SQLite.

    .venv/bin/python -m benchmarks.bench_postgres [--seconds 2] [--url postgresql://...]

Each writer process opens its own ``Runtime`` and sets a cell of its own in a
loop (``cell.set(i)``: poll, one compare-and-swap commit, settle), so the
figure is what a user's writes cost, with every writer contending for the
store (SQLite: one file's write lock; PostgreSQL: the feed row that orders
commits).  Latency: a runtime on a running asyncio loop sinks a cell that
another runtime (another thread, its own connection) sets; measured from the
writer's commit returning to the sink running, with no call in between.

Without ``--url`` (or ``CELLKERNEL_BENCH_POSTGRES``) a throwaway server is
started from Debian's binaries as the tests do (``tests/store/postgres_server.py``);
without those, the PostgreSQL rows say why they are missing.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import importlib.util
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SERVER_MODULE = Path(__file__).resolve().parent.parent / "tests" / "store" / "postgres_server.py"
WRITERS = (1, 2, 4, 8)


def _writer(url: str, name: str, seconds: float, ready: Any, go: Any, out: Any) -> None:
    from cellkernel import Runtime

    with Runtime(url) as rt:
        cell = rt.get_cell(f"bench-writer-{name}")
        cell.set(0)
        ready.put(name)
        go.wait()
        n, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            n += 1
            cell.set(n)
        out.put(n)


def commits_per_second(url: str, writers: int, seconds: float) -> float:
    """Total commits/s of ``writers`` processes writing for ``seconds`` together."""
    ctx = multiprocessing.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_writer, args=(url, str(i), seconds, ready, go, out))
             for i in range(writers)]
    for p in procs:
        p.start()
    try:
        for _ in procs:
            ready.get(timeout=120)
        go.set()
        total: int = sum(out.get(timeout=seconds + 120) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    return total / seconds


def live_latency(url: str, rounds: int = 100) -> tuple[float, float]:
    """p50 and p95 (ms) from another runtime's commit returning to a sink here running."""
    from cellkernel import Runtime

    executor = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        reader = Runtime(url)  # made on the loop: live
        arrivals: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
        reader.get_cell("bench-live").sink(lambda v: arrivals.put_nowait((time.perf_counter(), v)))
        writer = await loop.run_in_executor(executor, Runtime, url)
        cell = writer.get_cell("bench-live")

        def commit(i: int) -> float:
            cell.set(i)
            return time.perf_counter()

        while not arrivals.empty():
            arrivals.get_nowait()
        latencies = []
        try:
            for i in range(1, rounds + 1):
                returned = await loop.run_in_executor(executor, commit, i)
                while True:
                    arrived, value = await asyncio.wait_for(arrivals.get(), 30)
                    if value == i:
                        break
                latencies.append(max(0.0, arrived - returned))
        finally:
            await loop.run_in_executor(executor, writer.close)
            reader.close()
        return latencies

    try:
        latencies = sorted(asyncio.run(main()))
    finally:
        executor.shutdown()
    p50 = statistics.median(latencies) * 1e3
    p95 = latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))] * 1e3
    return p50, p95


@contextlib.contextmanager
def postgres_url(given: str | None) -> Iterator[str]:
    """The server to measure: ``given``, or a throwaway one; raises LookupError if none."""
    if given:
        yield given
        return
    spec = importlib.util.spec_from_file_location("postgres_server", SERVER_MODULE)
    if spec is None or spec.loader is None:
        raise LookupError(f"cannot load {SERVER_MODULE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["postgres_server"] = module
    spec.loader.exec_module(module)
    with module.running_server() as server:
        if isinstance(server, str):
            raise LookupError(server)
        yield server.create_database("bench")


def run(seconds: float = 2.0, url: str | None = None) -> list[dict[str, Any]]:
    """Rows ``{"case", "value", "unit"}`` for ``python -m benchmarks``."""
    rows: list[dict[str, Any]] = []
    url = url or os.environ.get("CELLKERNEL_BENCH_POSTGRES")
    with tempfile.TemporaryDirectory() as tmp:
        for writers in WRITERS:
            db = Path(tmp) / f"bench-{writers}.db"
            rate = commits_per_second(f"sqlite://{db}", writers, seconds)
            rows.append({"case": f"sqlite: cell.set commits/s, {writers} writer process(es)",
                         "value": f"{rate:.0f}", "unit": "commits/s"})
    rows.append({"case": "sqlite: another runtime's commit reaches a running loop",
                 "value": "n/a", "unit": "(applied on the next call)"})
    try:
        with postgres_url(url) as pg:
            for writers in WRITERS:
                rate = commits_per_second(pg, writers, seconds)
                rows.append({"case": f"postgres: cell.set commits/s, {writers} writer process(es)",
                             "value": f"{rate:.0f}", "unit": "commits/s"})
            p50, p95 = live_latency(pg)
            rows.append({"case": "postgres: live arrival on a running loop, p50",
                         "value": f"{p50:.1f}", "unit": "ms"})
            rows.append({"case": "postgres: live arrival on a running loop, p95",
                         "value": f"{p95:.1f}", "unit": "ms"})
    except LookupError as exc:
        rows.append({"case": "postgres: skipped", "value": "-", "unit": str(exc)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_postgres",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--url", default=None, help="a PostgreSQL store url to measure")
    args = parser.parse_args(argv)
    for row in run(args.seconds, args.url):
        print(f"{row['case']:<64} {row['value']:>10} {row['unit']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
