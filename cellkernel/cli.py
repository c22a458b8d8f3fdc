"""The ``cellkernel`` command (also ``python -m cellkernel``).

``demo`` shows a live counter; ``inspect-causes`` (SPEC §6) runs a pattern
from a file and prints each cell's name, helper and id, and with
``--against`` which ids an edit kept, changed, added or removed — the quickest
way to see why state did or did not survive an edit.

Heavy modules (the builder, the runtime) are imported inside the commands so
``cellkernel --help`` answers at once.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import logging
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TextIO

from cellkernel import __version__
from cellkernel.data.identity import short_id
from cellkernel.patterns.builder import Pattern, handler, lift, pattern
from cellkernel.patterns.snapshot import module_short_name
from cellkernel.runtime import Runtime

if TYPE_CHECKING:
    from cellkernel.patterns.builder import Pattern
    from cellkernel.patterns.snapshot import GraphSnapshot, SnapshotDiff

#: The fixed run cause of ``inspect-causes``: both sides of ``--against`` get the
#: same result id, so every difference comes from the pattern itself.
INSPECT_CAUSE = "inspect-causes"

_COLORS = {"kept": "2", "changed": "33", "added": "32", "removed": "31"}
_counter = itertools.count(1)


class CliError(Exception):
    """A one-line failure: printed to stderr, and ``code`` becomes the exit status."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# arguments


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cellkernel",
        description="cellkernel: a reactive pattern runtime with stable, content-addressed cells.",
    )
    parser.add_argument("--version", action="version", version=f"cellkernel {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="a short live counter demo",
                               description="Run a Counter pattern and watch it react.")
    demo.add_argument("--steps", type=int, default=5, help="increments to send (default 5)")
    demo.add_argument("--delay", type=float, default=0.3,
                      help="seconds between increments (default 0.3)")

    inspect = commands.add_parser(
        "inspect-causes",
        help="print the cells a pattern creates, and what an edit changed",
        description=(
            "Run a pattern from a Python file in a fresh in-memory runtime (fixed cause "
            f"{INSPECT_CAUSE!r}, no argument) and print each cell's name, helper and short "
            "id. With --against, run a second (older) version the same way and mark each "
            "cell of FILE as kept, changed, added or removed relative to it."
        ),
    )
    inspect.add_argument("target", metavar="FILE[:PATTERN]",
                         help="a Python file; PATTERN defaults to the first pattern defined in it")
    inspect.add_argument("--against", metavar="FILE[:PATTERN]",
                         help="the version to compare with (the 'before')")
    inspect.add_argument("--nodes", action="store_true", help="list nodes as well as cells")
    inspect.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    inspect.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                         help="colour the status column (auto: on a terminal, unless NO_COLOR)")
    inspect.add_argument("--debug", action="store_true",
                         help="log every derived cause with its components to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cellkernel`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: keep main() returning
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        if args.command == "demo":
            return demo(steps=args.steps, delay=args.delay, out=sys.stdout)
        if args.command == "inspect-causes":
            return inspect_causes(args, out=sys.stdout)
        parser.print_help()
        return 2
    except CliError as exc:
        print(f"cellkernel: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


# ---------------------------------------------------------------------------
# demo


def demo(steps: int = 5, delay: float = 0.3, out: TextIO | None = None) -> int:
    """A Counter pattern: send increments and print what reacts (``make demo``)."""

    stream = out or sys.stdout

    def say(text: str) -> None:
        print(text, file=stream, flush=True)

    @lift
    def double(x: int) -> int:
        return x * 2

    # ``count: Any``, not ``Cell[int]``: annotations are strings in this module and a
    # local ``Cell`` import would not resolve.  ``Any`` state arrives as a Cell too.
    @handler
    def increment(event: Any, count: Any) -> None:
        count.set(count.get() + (event or {}).get("amount", 1))

    @pattern
    def Counter(count: int = 0) -> Any:
        return {"count": count, "doubled": double(count), "increment": increment(count=count)}

    say("cellkernel demo: a live Counter pattern")
    say("  doubled = double(count); a sink prints every new value of doubled")
    with Runtime() as rt:
        result = rt.run(Counter, {"count": 0}, cause="cellkernel-demo")
        say(f"run Counter(count=0)  count={result.count.get()}")
        stop = result.key("doubled").sink(lambda value: say(f"    sink: doubled = {value}"))
        try:
            for step in range(1, steps + 1):
                if delay > 0:
                    time.sleep(delay)
                say(f"send increment #{step}")
                result.increment.send({"amount": 1})
                say(f"    count = {result.count.get()}")
            say("set count = 100")
            result.count.set(100)
            say(f"    count = {result.count.get()}, doubled = {result.doubled.get()}")
        finally:
            stop()
        say("")
        say(rt.snapshot(result).summary())
        for error in rt.errors:
            say(f"error: {error}")
    return 1 if rt.errors else 0


# ---------------------------------------------------------------------------
# inspect-causes


@dataclass(frozen=True)
class Target:
    path: Path
    pattern: str | None

    @property
    def text(self) -> str:
        return f"{self.path}:{self.pattern}" if self.pattern else str(self.path)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def parse_target(text: str) -> Target:
    """``FILE[:PATTERN]``; a colon belongs to the path when that path exists as written."""
    path, sep, name = text.rpartition(":")
    if sep and path and _NAME.match(name) and not Path(text).exists():
        return Target(Path(path), name)
    return Target(Path(text), None)


def load_module(path: Path) -> ModuleType:
    """Import a Python file under a fresh module name (two versions can coexist).

    The file's directory is on ``sys.path`` while it runs, as for ``python FILE``,
    and its ``if __name__ == "__main__"`` block does not run.
    """
    if not path.is_file():
        raise CliError(f"no such file: {path}")
    stem = re.sub(r"\W", "_", path.stem)
    name = f"_cellkernel_inspect_{next(_counter)}_{stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CliError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise CliError(f"importing {path} failed: {type(exc).__name__}: {exc}", 1) from exc
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)
    return module


def find_pattern(module: ModuleType, target: Target) -> Pattern:
    """The pattern named ``target.pattern``, else the first one defined in the file."""

    found = [(k, v) for k, v in vars(module).items() if isinstance(v, Pattern)]
    if target.pattern is not None:
        head, _, rest = target.pattern.partition(".")
        value: Any = vars(module).get(head)
        for part in filter(None, rest.split(".")):
            value = getattr(value, part, None)
        if not isinstance(value, Pattern):
            value = next((v for _k, v in found if v.name == target.pattern), None)
        if not isinstance(value, Pattern):
            names = ", ".join(k for k, _v in found) or "none"
            raise CliError(f"no pattern {target.pattern!r} in {target.path} (patterns: {names})")
        return value
    own = [v for _k, v in found if v.fn is not None and v.fn.__module__ == module.__name__]
    candidates = own or [v for _k, v in found]
    if not candidates:
        raise CliError(f"no pattern in {target.path}")
    if len(candidates) > 1:
        print(f"cellkernel: note: {target.path} defines {len(candidates)} patterns; using "
              f"{candidates[0].name} (pick one with FILE:PATTERN)", file=sys.stderr)
    return candidates[0]


def snapshot_of(target: Target, debug: bool = False) -> GraphSnapshot:
    """Run the target pattern in a fresh in-memory runtime; its graph snapshot."""

    pattern = find_pattern(load_module(target.path), target)
    with Runtime(debug=debug) as rt:
        try:
            result = rt.run(pattern, None, cause=INSPECT_CAUSE)
        except Exception as exc:
            raise CliError(f"running {pattern.name} failed: {type(exc).__name__}: {exc}",
                           1) from exc
        for error in rt.errors:
            print(f"cellkernel: warning: {pattern.name}: node {error.node} failed: "
                  f"{type(error.error).__name__}: {error.error}", file=sys.stderr)
        snapshot: GraphSnapshot = rt.snapshot(result)
    return snapshot


def use_color(choice: str, stream: TextIO) -> bool:
    """``auto``: only on a terminal, and never when NO_COLOR is set or TERM is dumb."""
    if choice != "auto":
        return choice == "always"
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def inspect_causes(args: argparse.Namespace, out: TextIO) -> int:
    if args.debug:
        logging.basicConfig(stream=sys.stderr, format="%(name)s: %(message)s")
        logging.getLogger("cellkernel.causes").setLevel(logging.DEBUG)
    current = snapshot_of(parse_target(args.target), args.debug)
    if args.against is None:
        rows = _plain_rows(current, args.nodes)
    else:
        before = snapshot_of(parse_target(args.against), args.debug)
        rows = _diff_rows(before.diff(current), args.nodes)
    if args.json:
        json.dump(rows, out, indent=2)
        out.write("\n")
        return 0
    color = use_color(args.color, out)
    for line in format_rows(rows, color, with_status=args.against is not None):
        print(line, file=out)
    return 0


def _plain_rows(snapshot: GraphSnapshot, nodes: bool) -> list[dict[str, Any]]:

    labels = snapshot.cell_labels()
    rows: list[dict[str, Any]] = [
        {"kind": "cell", "name": labels[c.id], "helper": c.helper, "id": c.id}
        for c in snapshot.cells
    ]
    if nodes:
        rows += [{"kind": "node", "name": n.name or module_short_name(n.module.ref),
                  "helper": n.helper, "id": n.id} for n in snapshot.nodes]
    return rows


def _diff_rows(diff: SnapshotDiff, nodes: bool) -> list[dict[str, Any]]:
    return [
        {"status": e.status, "kind": e.kind, "name": e.name, "helper": e.helper, "id": e.id,
         "previous": e.previous}
        for e in diff.entries() if nodes or e.kind == "cell"
    ]


def format_rows(rows: list[dict[str, Any]], color: bool, with_status: bool) -> list[str]:
    """An aligned table; ANSI colours only touch the status column."""

    header = (["status"] if with_status else []) + ["name", "helper", "id"]
    with_kind = any(r["kind"] == "node" for r in rows)
    if with_kind:
        header.insert(1 if with_status else 0, "kind")
    with_was = any(r.get("previous") for r in rows)
    if with_was:
        header.append("was")
    table = [header]
    for r in rows:
        line = [r["status"]] if with_status else []
        if with_kind:
            line.append(r["kind"])
        line += [r["name"], r["helper"] or "-", short_id(r["id"])]
        if with_was:
            line.append(short_id(r["previous"]) if r.get("previous") else "")
        table.append(line)
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = []
    for index, row in enumerate(table):
        cells = [v.ljust(w) for v, w in zip(row, widths, strict=True)]
        if color and with_status and index > 0:
            code = _COLORS.get(row[0])
            if code:
                cells[0] = f"\x1b[{code}m{cells[0]}\x1b[0m"
        lines.append("  ".join(cells).rstrip())
    if with_status:
        counts = {s: sum(1 for r in rows if r["status"] == s) for s in _COLORS}
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
