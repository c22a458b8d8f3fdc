"""Load: SQLite commit rate across processes, event throughput, many instances.

Cases (each measured in a fresh child process, so peak RSS belongs to the case):

* ``commits``: 1, 2 and 4 writer processes on one SQLite file, each doing
  rt-level commits (``cell.set(k)`` outside any transaction: commit + settle) to
  its own cell for ``COMMIT_SECONDS``; the sustained total rate.
* ``events``: 100 000 events through one handler (memory store), queued in one
  ``rt.batch()`` and handled FIFO, one transaction each.
* ``instances``: 10 000 instances of a small pattern (a lift and an argument)
  started with ``rt.run`` one by one (within a time budget; the cost per
  instance is reported for the first and the last chunk, and stays flat since
  the instance list became an append-only log), and 10 000 instances made by
  one ``map``.

Peak RSS is sampled with psutil every 10 ms in the child (and cross-checked with
``VmHWM``; not ``ru_maxrss``, which Linux carries across ``exec`` from the parent).
Run: ``python benchmarks/bench_load.py [--quick]`` or through
``python -m benchmarks``, which calls ``run()``.  Rows are
``{"case", "value", "unit"}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from cellkernel import Cell, handler, lift, pattern
from cellkernel.runtime import Runtime

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent

COMMIT_SECONDS = 2.0
WRITERS = (1, 2, 4)
EVENTS = 100_000
INSTANCES = 10_000
INSTANCE_BUDGET_S = 40.0  # rt.run instances: stop early rather than run for many minutes
CHUNK = 500

Row = dict[str, Any]


# --------------------------------------------------------------------------- patterns


@lift
def _double(x: int) -> int:
    return x * 2


@handler
def _bump(event: Any, count: Cell[int]) -> None:
    count.set(count.get() + 1)


def _small() -> Any:
    @pattern
    def Small(value: int = 0) -> Any:
        return {"value": value, "doubled": _double(value)}

    return Small


def _bumper() -> Any:
    @pattern
    def Bumper(count: int = 0) -> Any:
        return {"count": count, "bump": _bump(count=count)}

    return Bumper


def _mapper() -> Any:
    @pattern
    def Many(items: list[int] | None = None) -> Any:
        # traced: ``items`` is the argument's ref, not the list the annotation describes
        mapped = cast("Cell[list[int]]", items).map(lambda x: _double(x))
        return {"items": items, "doubled": mapped}

    return Many


# --------------------------------------------------------------------------- child side


def _high_water_mark() -> int:
    """This process's peak RSS in bytes (``VmHWM``), or 0 where /proc is missing.

    Not ``getrusage().ru_maxrss``: Linux keeps that across ``exec``, so a child
    started by a big parent reports the parent's peak (every load row showed the
    same 462 MB). ``VmHWM`` belongs to the address space, which ``exec`` replaces.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return 0


class PeakRss:
    """Samples this process's RSS (psutil) on a thread until stopped."""

    def __init__(self, interval: float = 0.01) -> None:
        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        return {
            "peak_rss_mb": max(self.peak, _high_water_mark()) / 2**20,
            "baseline_rss_mb": self.baseline / 2**20,
        }


def _child_writer(db: str, seconds: str, index: str) -> None:
    rt = Runtime(store=f"sqlite:///{db}")
    cell = rt.get_cell(("bench-writer", int(index)))
    cell.set(0)
    print("ready", flush=True)
    sys.stdin.readline()
    k = 0
    end = time.perf_counter() + float(seconds)
    while time.perf_counter() < end:
        k += 1
        cell.set(k)
    rt.close()
    print(json.dumps({"commits": k}), flush=True)


def _child_events(n: str) -> None:
    total = int(n)
    rt = Runtime()
    result = rt.run(_bumper(), {"count": 0}, cause="bench-events")
    stream = result.key("bump")
    rss = PeakRss()
    start = time.perf_counter()
    with rt.batch():
        for _ in range(total):
            stream.send({})
    rt.idle()
    seconds = time.perf_counter() - start
    count = result.key("count").get()
    if count != total or rt.errors:
        raise SystemExit(f"events: count {count} != {total}, errors {rt.errors[:3]}")
    print(json.dumps({"seconds": seconds, **rss.stop()}), flush=True)


def _child_instances(n: str, budget: str) -> None:
    total, limit = int(n), float(budget)
    rt = Runtime()
    small = _small()
    rss = PeakRss()
    start = time.perf_counter()
    chunks: list[float] = []  # ms per instance, per chunk
    made = 0
    while made < total and time.perf_counter() - start < limit:
        t0 = time.perf_counter()
        for i in range(made, min(made + CHUNK, total)):
            rt.run(small, {"value": i}, cause=("bench-instance", i))
        chunks.append((time.perf_counter() - t0) * 1000 / (min(made + CHUNK, total) - made))
        made = min(made + CHUNK, total)
    seconds = time.perf_counter() - start
    last = rt.get_cell(("bench-instance", made - 1))
    if last.key("doubled").get() != 2 * (made - 1) or rt.errors:
        raise SystemExit(f"instances: wrong result, errors {rt.errors[:3]}")
    print(json.dumps({"made": made, "seconds": seconds, "chunks_ms": chunks, **rss.stop()}),
          flush=True)


def _child_map(n: str) -> None:
    total = int(n)
    rt = Runtime()
    rss = PeakRss()
    start = time.perf_counter()
    result = rt.run(_mapper(), {"items": list(range(total))}, cause="bench-map")
    doubled = result.key("doubled").get()
    seconds = time.perf_counter() - start
    if len(doubled) != total or doubled[-1] != 2 * (total - 1) or rt.errors:
        raise SystemExit(f"map: wrong result, errors {rt.errors[:3]}")
    t0 = time.perf_counter()
    result.key("items").push(total)
    one_more = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "push_one_s": one_more,
                      "instances": len(rt.runner.instances), **rss.stop()}), flush=True)


CHILDREN: dict[str, Callable[..., None]] = {
    "writer": _child_writer,
    "events": _child_events,
    "instances": _child_instances,
    "map": _child_map,
}


# --------------------------------------------------------------------------- parent side


def _spawn(*args: str, stdin: bool = False) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, str(HERE), "--child", *args],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def _child(*args: str, timeout: float = 900) -> dict[str, Any]:
    proc = _spawn(*args)
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{err}")
    result: dict[str, Any] = json.loads(out.splitlines()[-1])
    return result


def bench_commits(writers: int, seconds: float = COMMIT_SECONDS) -> float:
    """Total rt-level commits per second of ``writers`` processes on one SQLite file."""
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "load.db")
        Runtime(store=f"sqlite:///{db}").close()
        procs = [_spawn("writer", db, str(seconds), str(i), stdin=True) for i in range(writers)]
        try:
            for proc in procs:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
            total = 0
            for proc in procs:
                out, err = proc.communicate(timeout=seconds + 60)
                if proc.returncode != 0:
                    raise RuntimeError(f"writer failed:\n{err}")
                total += json.loads(out.splitlines()[-1])["commits"]
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        # every acknowledged commit is in the file
        rt = Runtime(store=f"sqlite:///{db}")
        stored = sum(rt.get_cell(("bench-writer", i)).get() for i in range(writers))
        rt.close()
        if stored != total:
            raise RuntimeError(f"commits: {total} acknowledged, {stored} stored")
    return total / seconds


def run(quick: bool = False) -> list[Row]:
    """All load cases; ``quick`` shrinks every size (for a smoke run)."""
    scale = 10 if quick else 1
    rows: list[Row] = []
    for writers in WRITERS:
        rate = bench_commits(writers, COMMIT_SECONDS / (4 if quick else 1))
        rows.append({"case": f"sqlite rt-level commits, {writers} writer process(es)",
                     "value": round(rate, 1), "unit": "commits/s"})

    n_events = EVENTS // scale
    events = _child("events", str(n_events))
    rows += [
        {"case": f"{n_events} events through one handler", "value": round(events["seconds"], 3),
         "unit": "s"},
        {"case": "event throughput, one handler", "value": round(n_events / events["seconds"], 1),
         "unit": "events/s"},
        {"case": f"{n_events} events: peak RSS", "value": round(events["peak_rss_mb"], 1),
         "unit": "MB"},
    ]

    n_instances = INSTANCES // scale
    inst = _child("instances", str(n_instances), str(INSTANCE_BUDGET_S / scale))
    rows += [
        {"case": f"rt.run instances started (of {n_instances}, {INSTANCE_BUDGET_S / scale:.0f} s "
                 "budget)", "value": inst["made"], "unit": "instances"},
        {"case": "rt.run instances: total time", "value": round(inst["seconds"], 2), "unit": "s"},
        {"case": "rt.run instances: cost per instance, first chunk",
         "value": round(inst["chunks_ms"][0], 2), "unit": "ms"},
        {"case": f"rt.run instances: cost per instance at {inst['made']}",
         "value": round(inst["chunks_ms"][-1], 2), "unit": "ms"},
        {"case": f"rt.run {inst['made']} instances: peak RSS",
         "value": round(inst["peak_rss_mb"], 1), "unit": "MB"},
    ]

    mapped = _child("map", str(n_instances))
    rows += [
        {"case": f"{n_instances} instances from one map", "value": round(mapped["seconds"], 2),
         "unit": "s"},
        {"case": f"map over {n_instances}: push one element",
         "value": round(mapped["push_one_s"], 3), "unit": "s"},
        {"case": f"{n_instances} map instances: peak RSS",
         "value": round(mapped["peak_rss_mb"], 1), "unit": "MB"},
        {"case": f"{n_instances} map instances: RSS per instance",
         "value": round((mapped["peak_rss_mb"] - mapped["baseline_rss_mb"]) * 1024 / n_instances,
                        2),
         "unit": "KB"},
    ]
    return rows


def main(argv: list[str]) -> None:
    if argv[:1] == ["--child"]:
        CHILDREN[argv[1]](*argv[2:])
        return
    for row in run(quick="--quick" in argv):
        print(f"{row['case']:<70} {row['value']:>12} {row['unit']}")


if __name__ == "__main__":
    main(sys.argv[1:])
