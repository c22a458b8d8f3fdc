"""Compiled plans for pure lifts over scalars: a run without a transaction (issue 20).

Most lifts in a graph are small pure functions of scalar inputs (``x + 1``).
For them the general run — a transaction, read journal, working copies, a
commit — costs twenty times the function.  A plan is worked out once per node
from its bindings: which document and key each argument is read from, which
are constants.  A run then loads those documents, calls the function, and
lands a scalar result with the store's ``land_value`` (the same
compare-and-swap), or does nothing when the result is unchanged.

A plan is made only when the function provably reaches nothing but its
arguments (``pure_function``), so skipping the transaction and the runtime
frame is invisible to it.  Anything a plan does not cover at run time — an
input that is not a scalar, a failing schema check, a non-scalar result —
hands over to the general run (``NOT_PLANNED``), which reads the inputs again
and uses the result already computed, so the function still runs once.
"""

from __future__ import annotations

import dis
import functools
import inspect
import weakref
from collections.abc import Callable, Sequence
from types import BuiltinFunctionType, CodeType, FunctionType, ModuleType
from typing import Any, cast

from cellkernel.data.links import is_link, parse_link
from cellkernel.data.schema import SURE_TYPES
from cellkernel.data.values import MISSING
from cellkernel.reactive.cells import is_scalar_record
from cellkernel.reactive.scheduler import NOT_PLANNED
from cellkernel.store.documents import INT_FLOOR, INT_LIMIT, Change, Document, landable

__all__ = ["NOTHING", "NOT_PLANNED", "NO_STASH", "LiftPlan", "Stash", "follow_links", "landable",
           "lift_plan", "pure_function"]

#: an empty ``Stash``
NOTHING: Any = object()

#: builtins a pure lift may call: none reaches outside its arguments
SAFE_BUILTINS = frozenset({
    "abs", "all", "any", "bin", "bool", "chr", "dict", "divmod", "enumerate", "filter",
    "float", "format", "frozenset", "hex", "int", "isinstance", "len", "list", "map", "max",
    "min", "oct", "ord", "pow", "range", "repr", "reversed", "round", "set", "sorted", "str",
    "sum", "tuple", "zip", "ArithmeticError", "Exception", "IndexError", "KeyError",
    "TypeError", "ValueError", "ZeroDivisionError",
})
_GLOBAL_OPS = frozenset({"LOAD_GLOBAL", "LOAD_NAME"})
_WRITE_GLOBAL_OPS = frozenset({"STORE_GLOBAL", "DELETE_GLOBAL", "STORE_NAME", "DELETE_NAME"})
_REFUSED_OPS = frozenset({"IMPORT_NAME", "IMPORT_FROM", "IMPORT_STAR", "LOAD_CLASSDEREF",
                          "LOAD_BUILD_CLASS"})


#: standard modules a pure lift may use by name (``math.floor(x)``): every function in
#: them reaches nothing but its arguments (``operator`` is left out: ``attrgetter`` takes
#: a dotted dunder path as a string)
SAFE_MODULES = frozenset({"math", "cmath", "statistics", "itertools", "string"})

#: a global name not bound in the function's module
_UNBOUND: Any = object()

#: the immutable types a module-level constant a pure lift reads may hold
_CONSTANT_TYPES = (int, float, complex, str, bytes, bool, type(None))

#: a function's own verdict: whether it is pure apart from the helper functions it calls,
#: and each global name it reads with the value it was bound to when judged (a function
#: there held weakly: a recursive helper would otherwise keep its own entry alive)
_Verdict = tuple[bool, tuple[tuple[str, Any], ...]]

#: function -> its own verdict (weak: a dropped function takes its entry along)
_pure: weakref.WeakKeyDictionary[Any, _Verdict] = weakref.WeakKeyDictionary()


def pure_function(fn: Any) -> bool:
    """Whether ``fn`` reaches only its arguments, its own constants and ``SAFE_BUILTINS``,
    and the module-level names it reads: ``SAFE_MODULES`` and their functions, immutable
    constants, and functions held to this same rule (followed iteratively, cycles
    included).

    No closure, no imports, no generator or coroutine, no assignment to a global, no
    underscore attribute (``x.__class__`` leads anywhere); nested code (lambdas,
    comprehensions) is held to the same rule.  Each function is judged once, and its
    verdict stands while every global it reads is still bound to the same object: a
    rebound name (a re-run notebook cell) is judged again.
    """
    if type(fn) is not FunctionType:
        return False
    helpers = _own_verdict(fn)
    if not helpers:  # (nearly every lift: no helper to follow)
        return helpers is not None
    seen = {fn, *helpers}
    pending = list(helpers)
    while pending:
        helpers = _own_verdict(pending.pop())
        if helpers is None:
            return False
        for helper in helpers:
            if helper not in seen:
                seen.add(helper)
                pending.append(helper)
    return True


def _own_verdict(fn: FunctionType) -> list[FunctionType] | None:
    """The helper functions ``fn`` calls, or None if ``fn`` itself is not pure."""
    known = _pure.get(fn)
    if known is not None:
        helpers = _still_bound(fn.__globals__, known[1])
        if helpers is not None:
            return helpers if known[0] else None
    pure, bound = _pure[fn] = _judge(fn)
    if not pure:
        return None
    return _still_bound(fn.__globals__, bound)  # (None if rebound meanwhile: not pure now)


def _still_bound(namespace: dict[str, Any], bound: tuple[tuple[str, Any], ...]
                 ) -> list[FunctionType] | None:
    """The helpers of a verdict whose every global is bound as it was, else None."""
    helpers: list[FunctionType] = []
    for name, value in bound:
        current = namespace.get(name, _UNBOUND)
        if current is value:
            continue
        if type(value) is not weakref.ref or value() is not current:
            return None
        helpers.append(cast("FunctionType", current))
    return helpers


def _judge(fn: FunctionType) -> _Verdict:
    """``fn``'s own verdict (its helpers are judged by ``pure_function``'s walk)."""
    namespace = fn.__globals__
    names = _global_names(fn.__code__)
    values = [namespace.get(name, _UNBOUND) for name in names]
    # a helper (a function judged in its turn) is held weakly; everything else as it is
    bound = tuple((name, weakref.ref(value) if type(value) is FunctionType
                   and getattr(value, "__module__", None) not in SAFE_MODULES else value)
                  for name, value in zip(names, values, strict=True))
    if fn.__closure__ or fn.__kwdefaults__ or not _pure_code(fn.__code__):
        return False, bound
    if inspect.isgeneratorfunction(fn) or inspect.iscoroutinefunction(fn):
        return False, bound
    if any(d is not None and type(d) not in (int, float, str, bool) for d in fn.__defaults__ or ()):
        return False, bound
    for name, value in zip(names, values, strict=True):
        if value is _UNBOUND:
            if name not in SAFE_BUILTINS:
                return False, bound
        elif type(value) is ModuleType:
            if value.__name__ not in SAFE_MODULES:
                return False, bound
        elif type(value) is BuiltinFunctionType:
            if getattr(value, "__module__", None) not in SAFE_MODULES:
                return False, bound  # (``from math import floor`` passes)
        elif type(value) is FunctionType:
            continue  # a helper (judged by the walk), or ``from statistics import mean``
        elif not _immutable_constant(value):
            return False, bound
    return True, bound


def _immutable_constant(value: Any) -> bool:
    """A scalar, or tuples and frozensets of them however nested (walked iteratively)."""
    pending = [value]
    while pending:
        current = pending.pop()
        if type(current) in (tuple, frozenset):
            pending.extend(current)
        elif type(current) not in _CONSTANT_TYPES:
            return False
    return True


def _nested(code: CodeType) -> list[CodeType]:
    """``code`` and every code object nested in it (lambdas, comprehensions), iteratively."""
    found = [code]
    for current in found:  # grows while walked
        found.extend(c for c in current.co_consts if type(c) is CodeType)
    return found


@functools.lru_cache(maxsize=4096)
def _pure_code(code: CodeType) -> bool:
    for current in _nested(code):
        for ins in dis.get_instructions(current):
            if ins.opname in _REFUSED_OPS:
                return False
            if ins.opname in _WRITE_GLOBAL_OPS:
                return False
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD", "STORE_ATTR", "DELETE_ATTR") and (
                str(ins.argval).startswith("_")
            ):
                return False
    return True


@functools.lru_cache(maxsize=4096)
def _global_names(code: CodeType) -> tuple[str, ...]:
    """The names ``code`` (and its nested code) looks up as globals, sorted."""
    return tuple(sorted({ins.argval for current in _nested(code)
                         for ins in dis.get_instructions(current) if ins.opname in _GLOBAL_OPS}))


class Stash:
    """A result a plan computed and handed to the general run (so ``fn`` runs once)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: Any = NOTHING

    def take(self) -> Any:
        value, self.value = self.value, NOTHING
        return value


@functools.lru_cache(maxsize=4096)
def _inline_checks(
    checks: tuple[tuple[int, Callable[[Any], bool]], ...], reads: frozenset[int],
) -> tuple[tuple[int, tuple[type, ...], Callable[[Any], bool]], ...]:
    """The checks of read arguments, each with the exact types that always pass it.

    Shared by every node of one function (a cache), so a node pays nothing for it.
    """
    return tuple((i, getattr(check, SURE_TYPES, ()), check) for i, check in checks if i in reads)


#: a read argument without a schema check: (no sure types, no check)
_UNCHECKED: tuple[tuple[type, ...], None] = ((), None)


#: one argument: (space, entity_id, key, a deeper path or None for the root) of a read,
#: or a constant
Spec = tuple[str | None, Any, Any]


#: the stash of a lift without a plan: nothing ever puts a value in it
NO_STASH = Stash()


class LiftPlan(Stash):
    """One lift node's plan: ``plan(load_key, land_value)`` -> changes, [] or ``NOT_PLANNED``.

    A slotted object rather than a closure: one per node, a few hundred bytes less.
    Constants sit in ``template`` already (and were checked once, here); a run
    copies it and fills in what ``reads`` names: (position, document key, key or deeper
    path, the types that always pass the argument's check, the check).
    """

    __slots__ = ("action", "checks", "fn", "last_link", "out_key", "reads", "records",
                 "refusals", "template")

    def __init__(self, fn: Callable[..., Any], specs: list[Spec],
                 checks: Sequence[tuple[int, Callable[[Any], bool]]], refusals: Any, space: str,
                 out_id: str) -> None:
        self.fn = fn
        self.template = [target if sp is None else None for sp, target, _k in specs]
        # per read: (position, document key, key or deeper path, the exact types that
        # always pass its schema check, the check or None)
        read_at = [i for i, (sp, _t, _k) in enumerate(specs) if sp is not None]
        inline = {i: (sure, check)
                  for i, sure, check in _inline_checks(tuple(checks), frozenset(read_at))}
        self.reads = tuple((i, (specs[i][0], specs[i][1]), specs[i][2],
                            *inline.get(i, _UNCHECKED)) for i in read_at)
        #: a constant the schema refuses: every run is the general one, which says so
        self.checks = tuple((i, (), check) for i, check in checks
                            if i < len(specs) and specs[i][0] is None and not check(specs[i][1]))
        self.refusals = refusals
        #: (space, entity id) of the output document, the key each run loads it by
        self.out_key = (space, out_id)
        #: the result it computed before handing the run over (it is its node's ``Stash``)
        self.value = NOTHING
        #: the node's action: a link to a document is followed only into documents its
        #: subscription reads already (the last general run's)
        self.action: Any = None
        #: whether a link into a document of scalars may be followed (``follow_links``)
        self.records = False
        #: the last link followed and its parse (a map child's element link is met each run)
        self.last_link: tuple[Any, Any] = (None, None)

    def __call__(self, load: Callable[[tuple[str, str]], Document | None],
                 land: Callable[..., list[Change]]) -> Any:
        if self.checks:
            return NOT_PLANNED  # a refused constant: the general run says so
        args = self.template.copy()
        read: list[tuple[tuple[str, str], Document]] = []
        for i, doc_key, key, sure, check in self.reads:
            doc = load(doc_key)
            if doc is None:
                return NOT_PLANNED
            value: Any = doc.value
            if key is not None:
                if type(value) is not dict:
                    return NOT_PLANNED
                value = value.get(key, MISSING)  # (a deeper path, a tuple: MISSING here)
            t = type(value)
            if t is not int and t is not str and t is not float and t is not bool:
                if value is MISSING and type(key) is tuple:  # a deeper path: plain containers
                    value = _walk(doc.value, key)
                    t = type(value)
                if t is not int and t is not str and t is not float and t is not bool:
                    if t is not dict or self.action is None:
                        return NOT_PLANNED  # links, containers, nothing: the general read
                    # a record's own document
                    value = self._document(value, doc_key[0], load, read)
                    if value is NOT_PLANNED:
                        return NOT_PLANNED
                    t = type(value)
            if check is not None and t not in sure and not check(value):
                return NOT_PLANNED  # the general run records the refusal
            args[i] = value
            read.append((doc_key, doc))
        if self.refusals.failing is not None:
            return NOT_PLANNED  # and clears it
        result = self.fn(*args)
        out_key = self.out_key
        before = load(out_key)
        current = before.value if before is not None else MISSING
        t = type(result)
        if type(current) is dict or not (
            (INT_FLOOR < result < INT_LIMIT) if t is int else t is not float and landable(result)
        ):
            # a container, a float (the general write normalises 68.0 to 68), or over a
            # link or a stream: the general write, with the result computed already --
            # unless it holds a document's dict handed in here, which the general run
            # hands in as a ``DocDict`` (written back as a link, not copied): it runs again
            if len(read) == len(self.reads) or not _holds_any(result, args):
                self.value = result
            return NOT_PLANNED
        if type(current) is t and current == result:
            return []
        return land(out_key[0], out_key[1], before, result, read)

    def _document(self, link: dict[str, Any], sp: str,
                  load: Callable[[tuple[str, str]], Document | None],
                  read: list[tuple[tuple[str, str], Document]]) -> Any:
        """The scalar, or a copy of the document of scalars, ``link`` points to, or
        ``NOT_PLANNED``.

        A scalar is what the general read gives too.  A record is, there, a
        ``DocDict``; here a plain dict, which the function cannot tell apart
        since it never names ``.cell`` (``follow_links``: ``records``).  Only a
        whole-document link without a schema, and only into a document the
        node's subscription reads already: otherwise the general run follows it
        and subscribes to what it finds.
        """
        last = self.last_link
        if link is last[0]:
            inner = last[1]
        else:
            if not is_link(link):
                return NOT_PLANNED
            try:
                inner = parse_link(link, sp)
            except ValueError:
                return NOT_PLANNED  # the general read says what is malformed
            self.last_link = (link, inner)
        if inner.path or inner.schema is not None:
            return NOT_PLANNED
        if (inner.space, inner.id, ()) not in self.action.reads:
            return NOT_PLANNED
        key = (inner.space, inner.id)
        doc = load(key)
        if doc is None:
            return NOT_PLANNED
        target: Any = doc.value
        if type(target) is not dict:
            t = type(target)
            if t is int or t is str or t is float or t is bool:
                read.append((key, doc))
                return target
            return NOT_PLANNED
        if not self.records or not is_scalar_record(target):
            return NOT_PLANNED  # a link, a stream or nested values: the general read
        read.append((key, doc))
        return dict(target)  # (its own copy: the function may change it)


def _holds_any(result: Any, args: list[Any]) -> bool:
    """Whether ``result`` is, or holds at any depth, one of the dicts in ``args`` (iterative)."""
    handed = {id(a) for a in args if type(a) is dict}
    stack = [result]
    while stack:
        value = stack.pop()
        if id(value) in handed:
            return True
        if type(value) is dict:
            stack.extend(value.values())
        elif type(value) is list or type(value) is tuple:
            stack.extend(value)
    return False


def follow_links(fn: Callable[..., Any]) -> bool:
    """Whether a plan may hand ``fn`` a document's values as a plain dict (never names ``.cell``).

    The general run hands it a ``DocDict``, whose ``cell`` reaches the runtime;
    a pure function that never names that attribute cannot tell the two apart.
    """
    code = getattr(fn, "__code__", None)
    return type(code) is CodeType and "cell" not in _attribute_names(code)


@functools.lru_cache(maxsize=4096)
def _attribute_names(code: CodeType) -> frozenset[str]:
    """Every name ``code`` (and its nested code) may use as an attribute."""
    return frozenset(name for current in _nested(code) for name in current.co_names)


def _walk(value: Any, path: tuple[str | int, ...]) -> Any:
    """The value at ``path`` through plain dicts (str keys) and lists (int indices).

    ``MISSING`` wherever the general read could see it differently: a key of
    another kind, an index out of range, or anything else on the way (a link is
    a dict whose only key is ``"/"``, which no planned path names).
    """
    for part in path:
        t = type(value)
        if t is dict and type(part) is str:
            value = value.get(part, MISSING)
        elif t is list and type(part) is int and 0 <= part < len(value):
            value = value[part]
        else:
            return MISSING
    return value


def lift_plan(
    fn: Callable[..., Any],
    specs: list[Spec],
    checks: Sequence[tuple[int, Callable[[Any], bool]]],
    refusals: Any,
    space: str,
    out_id: str,
) -> LiftPlan:
    """The plan of one lift node (see ``LiftPlan``)."""
    return LiftPlan(fn, specs, checks, refusals, space, out_id)
