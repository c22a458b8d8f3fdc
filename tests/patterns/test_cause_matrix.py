"""Cause stability as a generated matrix: realistic patterns x edit classes (SPEC §6).

Each pattern is a module text; each edit rewrites it and names the cells it
changes directly.  The oracle is the downstream closure of those cells in the
pattern's dependency map: exactly those ids must change, every other id must
be kept, added cells must be new and removed ones gone.  Every case runs in
two modes:
* **one process**, as a notebook kernel or ``inspect-causes --against`` does.
  Both versions are imported under different module names into one runtime,
  and the edited version is re-run on the same cause; state set before the
  edit must survive wherever its id is kept.
* **fresh processes**, one per version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers.causes import load, named_ids

from cellkernel import Runtime

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent

Edit = Callable[[str], str]


def sub(old: str, new: str, count: int = 1) -> Edit:
    def edit(text: str) -> str:
        assert old in text, f"edit target {old!r} not in the pattern"
        return text.replace(old, new, count)
    return edit


def chain(*edits: Edit) -> Edit:
    def edit(text: str) -> str:
        for e in edits:
            text = e(text)
        return text
    return edit


@dataclass
class Case:
    edit: Edit
    changed: set[str] = field(default_factory=set)  # edited directly (closure added)
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)


@dataclass
class Subject:
    source: str
    pattern: str
    argument: dict[str, Any]
    deps: dict[str, list[str]]  # name -> names it reads (the downstream oracle)
    state: dict[str, Any]  # names of state cells -> a value to set before an edit
    cases: dict[str, Case]
    files: dict[str, str] = field(default_factory=dict)  # other modules beside it


COUNTER = '''
from typing import Any
from cellkernel import Cell, derive, fmt, handler, if_else, lift, pattern

RATE = 0.5
LIMIT = 10


def helper(v):
    return v + 1


@lift
def scale(x: int, k: int) -> int:
    return x * k


@handler
def bump(event: Any, count: Cell[int]) -> None:
    count.set(count.get() + 1)


@pattern
def P(count: int = 1, other: int = 2):
    scaled = scale(count, 3)
    rated = derive(other, lambda v: v * RATE)
    plus = derive(scaled, lambda v: helper(v))
    label = fmt("n={n}", n=plus)
    size = if_else(scaled, "big", "small")
    step = 7
    stepped = derive(count, lambda v: v + step)
    over = derive(rated, lambda v: v > LIMIT)
    return {"scaled": scaled, "rated": rated, "plus": plus, "label": label, "size": size,
            "stepped": stepped, "over": over, "bump": bump(count=count)}
'''

COUNTER_CASES = {
    "none": Case(lambda t: t),
    "comment in a lift": Case(sub("    return x * k",
                                  "    # scale it\n    return x * k  # k times")),
    "docstring": Case(sub("def scale(x: int, k: int) -> int:\n",
                          'def scale(x: int, k: int) -> int:\n    """Scale x by k."""\n')),
    "layout": Case(sub("    return x * k", "    return (x *\n            k)")),
    "literal argument": Case(sub("scale(count, 3)", "scale(count, 30)"), {"scaled"}),
    "fmt template": Case(sub('"n={n}"', '"N is {n}"'), {"label"}),
    "if_else literal": Case(sub('"big"', '"large"'), {"size"}),
    "global constant": Case(sub("RATE = 0.5", "RATE = 2.0"), {"rated"}),
    "second global constant": Case(sub("LIMIT = 10", "LIMIT = 11"), {"over"}),
    "global helper body": Case(sub("return v + 1", "return v + 2"), {"plus"}),
    "default": Case(sub("k: int) -> int", "k: int = 3) -> int"), {"scaled"}),
    "captured constant": Case(sub("step = 7", "step = 8"), {"stepped"}),
    "rename captured variable": Case(chain(sub("step = 7", "stride = 7"),
                                           sub("v + step", "v + stride"))),
    "rename local variable": Case(chain(sub("plus = derive", "plus2 = derive"),
                                        sub("n=plus)", "n=plus2)"),
                                        sub('"plus": plus', '"plus": plus2'))),
    "reorder independent statements": Case(chain(
        sub("    rated = derive(other, lambda v: v * RATE)\n", ""),
        sub("    scaled = scale(count, 3)\n",
            "    rated = derive(other, lambda v: v * RATE)\n    scaled = scale(count, 3)\n"))),
    "insert an unrelated node": Case(chain(
        sub("    step = 7\n", "    extra = derive(other, lambda v: v - 1)\n    step = 7\n"),
        sub('"over": over,', '"over": over, "extra": extra,')), added={"extra"}),
    "delete an unrelated node": Case(chain(
        sub("    over = derive(rated, lambda v: v > LIMIT)\n", ""),
        sub('"over": over, ', "")), removed={"over"}),
    "edit one body": Case(sub("v * RATE)", "v * RATE + 1)"), {"rated"}),
    "rename a function": Case(chain(sub("def scale(", "def scale_by("),
                                    sub("scale(count, 3)", "scale_by(count, 3)"))),
    "edit a handler": Case(sub("count.get() + 1", "count.get() + 2"), {"bump"}),
    # a named twin: both are then told apart by name (SPEC §6), so no id (or state) moves
    # to the other; the original's own id takes its name, as does what reads it
    "duplicate sibling after": Case(chain(
        sub("    rated = ", "    twin = scale(count, 3)\n    rated = "),
        sub('"over": over,', '"over": over, "twin": twin,')), {"scaled"}, added={"twin"}),
    "duplicate sibling before": Case(chain(
        sub("    scaled = ", "    twin = scale(count, 3)\n    scaled = "),
        sub('"over": over,', '"over": over, "twin": twin,')), {"scaled"}, added={"twin"}),
}

COUNTER_DEPS = {"scaled": [], "rated": [], "plus": ["scaled"], "label": ["plus"],
                "size": ["scaled"], "stepped": [], "over": ["rated"], "bump": [],
                "extra": []}

NESTED = '''
from cellkernel import Cell, derive, lift, pattern


@lift
def double(x: int) -> int:
    return x * 2


@pattern
def Inner(x: int = 0):
    st = Cell.of(0)
    d = double(x)
    e = derive(d, lambda v: v + 1)
    return {"st": st, "d": d, "e": e}


@pattern
def Outer(a: int = 1):
    inner = Inner(x=a)
    other = derive(a, lambda v: v + 1)
    after = derive(inner.e, lambda v: v * 10)
    return {"inner": inner, "other": other, "after": after}
'''

NESTED_CASES = {
    "none": Case(lambda t: t),
    "comment inside the nested pattern": Case(sub("lambda v: v + 1)\n    return {\"st\"",
                                                  "lambda v: v + 1)  # e\n    return {\"st\"")),
    "docstring of the nested pattern": Case(sub("def Inner(x: int = 0):\n",
                                                'def Inner(x: int = 0):\n    """Inner."""\n')),
    "edit a lift used inside": Case(sub("return x * 2", "return x * 3"), {"inner.d"}),
    "edit an inner lambda": Case(sub("derive(d, lambda v: v + 1)", "derive(d, lambda v: v + 2)"),
                                 {"inner.e"}),
    "insert an inner node": Case(chain(
        sub("    e = derive(d, lambda v: v + 1)\n",
            "    e = derive(d, lambda v: v + 1)\n    f = derive(x, lambda v: v - 1)\n"),
        sub('"e": e}', '"e": e, "f": f}')), added={"inner.f"}),
    "edit the outer node": Case(sub("derive(a, lambda v: v + 1)", "derive(a, lambda v: v + 5)"),
                                {"other"}),
    "edit the reader of the nested result": Case(sub("v * 10", "v * 100"), {"after"}),
}

NESTED_DEPS = {"inner": [], "other": [], "after": [], "inner.st": [], "inner.d": [],
               "inner.e": ["inner.d"], "inner.f": []}

TODO = '''
from cellkernel import derive, pattern


@pattern
def Todo(items: list = []):
    titles = items.map(lambda it: derive(it, lambda x: x["title"]))
    done = items.filter(lambda it: derive(it, lambda x: x["done"]))
    count = derive(done, lambda xs: len(xs))
    return {"titles": titles, "done": done, "count": count}
'''

TODO_ITEMS = [{"title": "a", "done": True}, {"title": "b", "done": False}]


def _children(name: str, inner: str) -> set[str]:
    return {f"{name}[{json.dumps(item, sort_keys=True)}].{inner}" for item in TODO_ITEMS}


TODO_CASES = {
    "none": Case(lambda t: t),
    "comment in a map callback": Case(sub('x["title"]))', 'x["title"]))  # title')),
    "edit a map callback": Case(sub('x["title"]))', 'x["title"].upper()))'),
                                _children("titles", "result")),
    "edit a filter predicate": Case(sub('x["done"]))', 'not x["done"]))'),
                                    _children("done", "result")),
    "edit the count": Case(sub("len(xs)", "len(xs) + 0"), {"count"}),
}

TWINS = '''
from cellkernel import Cell, derive, pattern


@pattern
def Twins(x: int = 1):
    left = Cell.of(0)
    right = Cell.of(0)
    a = derive(x, lambda v: v + 1)
    b = derive(x, lambda v: v + 1)
    return {"left": left, "right": right, "a": a, "b": b}
'''

TWINS_CASES = {
    "none": Case(lambda t: t),
    "swap identical state cells": Case(chain(
        sub("    left = Cell.of(0)\n", ""),
        sub("    right = Cell.of(0)\n", "    right = Cell.of(0)\n    left = Cell.of(0)\n"))),
    "swap identical lifts": Case(chain(
        sub("    a = derive(x, lambda v: v + 1)\n", ""),
        sub("    b = derive(x, lambda v: v + 1)\n",
            "    b = derive(x, lambda v: v + 1)\n    a = derive(x, lambda v: v + 1)\n"))),
    "edit an initial value": Case(sub("left = Cell.of(0)", "left = Cell.of(5)")),
    "rename one twin": Case(chain(sub("    b = derive", "    c = derive"),
                                  sub('"b": b}', '"c": c}')), removed={"b"}, added={"c"}),
}

HELPERS = '''''
def norm(text):
    return text.strip().lower()
'''

FORM = '''
from cellkernel import derive, if_else, lift, pattern
from ckm_helpers import norm


@lift
def valid(email: str) -> bool:
    return "@" in norm(email)


@pattern
def Form(email: str = " A@B ", name: str = "x"):
    ok = valid(email)
    clean = derive(email, lambda e: norm(e))
    shown = if_else(ok, clean, "invalid")
    greeting = derive(name, lambda n: "hi " + n)
    return {"ok": ok, "clean": clean, "shown": shown, "greeting": greeting}
'''

FORM_CASES = {
    "none": Case(lambda t: t),
    "edit a helper in another module": Case(lambda t: t, {"ok", "clean"}),  # see _other_files
    "move a helper into the module": Case(chain(
        sub("from ckm_helpers import norm\n", ""),
        sub("\n\n@lift", "\n\ndef norm(text):\n    return text.strip().lower()\n\n\n@lift", 1))),
    "edit an if_else literal": Case(sub('"invalid"', '"no"'), {"shown"}),
}

FORM_DEPS = {"ok": [], "clean": [], "shown": ["ok", "clean"], "greeting": []}

SUBJECTS = {
    "counter": Subject(COUNTER, "P", {"count": 2, "other": 3}, COUNTER_DEPS, {},
                       COUNTER_CASES),
    "nested": Subject(NESTED, "Outer", {"a": 1}, NESTED_DEPS, {"inner.st": 42}, NESTED_CASES),
    "todo": Subject(TODO, "Todo", {"items": TODO_ITEMS}, {}, {}, TODO_CASES),
    "form": Subject(FORM, "Form", {}, FORM_DEPS, {}, FORM_CASES, {"ckm_helpers": HELPERS}),
    "twins": Subject(TWINS, "Twins", {}, {}, {"left": 11, "right": 22}, TWINS_CASES),
}

#: a case whose edit is to another module of the subject, not to its own text
OTHER_FILE_EDITS: dict[tuple[str, str], dict[str, str]] = {
    ("form", "edit a helper in another module"): {
        "ckm_helpers": HELPERS.replace("text.strip().lower()", "text.strip().upper()")},
}


def _closure(deps: dict[str, list[str]], names: set[str]) -> set[str]:
    out = set(names)
    grew = True
    while grew:
        grew = False
        for name, reads in deps.items():
            if name not in out and out.intersection(reads):
                out.add(name)
                grew = True
    return out


def _expected(subject: Subject, case: Case, before: dict[str, str]) -> set[str]:
    return _closure(subject.deps, case.changed) & set(before)


def _write(tmp: Path, tag: str, subject: Subject, text: str, files: dict[str, str]) -> Path:
    folder = tmp / tag
    folder.mkdir()
    for name, body in files.items():
        (folder / f"{name}.py").write_text(body)
    path = folder / "subject.py"
    path.write_text(text)
    return path


def _fresh(path: Path, tag: str, subject: Subject) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path.parent), str(TESTS), str(REPO)])
    proc = subprocess.run(
        [sys.executable, str(TESTS / "helpers" / "causes.py"), str(path), f"ckm_{tag}",
         subject.pattern, "matrix", json.dumps(subject.argument)],
        capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["errors"] == []
    return out["ids"]  # type: ignore[no-any-return]


CASES = [(s, c) for s, subject in SUBJECTS.items() for c in subject.cases]


def _versions(tmp: Path, s: str, c: str) -> tuple[Subject, Case, Path, Path]:
    subject = SUBJECTS[s]
    case = subject.cases[c]
    v1 = _write(tmp, "v1", subject, subject.source, subject.files)
    other = OTHER_FILE_EDITS.get((s, c), {})
    v2 = _write(tmp, "v2", subject, case.edit(subject.source), {**subject.files, **other})
    return subject, case, v1, v2


def _check(subject: Subject, case: Case, before: dict[str, str], after: dict[str, str]) -> None:
    expected = _expected(subject, case, before)
    common = set(before) & set(after)
    changed = {n for n in common if before[n] != after[n]}
    assert changed == expected, f"changed {sorted(changed)}, expected {sorted(expected)}"
    gone = set(before) - set(after)
    new = set(after) - set(before)
    assert {n for n in gone if not n.startswith("#")} == \
        {n for n in case.removed if n in before}, f"removed {sorted(gone)}"
    assert {n for n in new if not n.startswith("#")} >= case.added, f"added {sorted(new)}"
    assert not set(after.values()) & {before[n] for n in gone}, "a removed id came back"


@pytest.mark.parametrize(("s", "c"), CASES)
def test_one_process(tmp_path: Path, s: str, c: str) -> None:
    subject, case, v1, v2 = _versions(tmp_path, s, c)
    sys.path.insert(0, str(v1.parent))
    rt = Runtime()
    try:
        first = load(str(v1), f"ckm_{s}_v1_{abs(hash(c))}")
        result = rt.run(getattr(first, subject.pattern), subject.argument, cause="matrix")
        before = named_ids(rt, result)
        for name, value in subject.state.items():
            rt.cell_at(before[name]).set(value)
        sys.path[0] = str(v2.parent)
        for name in subject.files:
            sys.modules.pop(name, None)  # the edited helper module, as a re-run cell sees it
        second = load(str(v2), f"ckm_{s}_v2_{abs(hash(c))}")
        result = rt.run(getattr(second, subject.pattern), subject.argument, cause="matrix")
        after = named_ids(rt, result)
        assert rt.errors == []
        _check(subject, case, before, after)
        for name, value in subject.state.items():
            if after.get(name) == before[name]:
                assert rt.cell_at(after[name]).get() == value, f"state of {name} was lost"
    finally:
        rt.close()
        sys.path.remove(str(v2.parent)) if str(v2.parent) in sys.path else None
        for name in subject.files:
            sys.modules.pop(name, None)


@pytest.mark.parametrize(("s", "c"), CASES)
def test_fresh_processes(tmp_path: Path, s: str, c: str) -> None:
    subject, case, v1, v2 = _versions(tmp_path, s, c)
    _check(subject, case, _fresh(v1, "a", subject), _fresh(v2, "b", subject))
