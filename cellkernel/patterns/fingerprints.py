"""Implementation fingerprints: the hash that names a function's behaviour (SPEC §6).

A Python implementation is named ``module:qualname`` and fingerprinted by a
SHA-256 over everything that decides what it does, and nothing else:

* its normalised source: the AST, so comments, whitespace and the function's
  own name don't count; a leading docstring is dropped; captured variables are
  renamed by position (``$cap0``, ``$cap1``, ... in order of first use), so
  renaming one changes nothing;
* its *behaviour inputs*: captured constants (by that position), defaults and
  keyword defaults, and the module-level globals it reads (``LOAD_GLOBAL``):
  constants by value, functions and classes of user code by their own
  fingerprint (recursively, cycle-safe), library functions and classes and
  modules by name, factories by their implementation hash.

The parse of a function's source is cached per code object and file (equal
code objects compile from sources that differ at most in comments and
layout); the behaviour inputs are read afresh on every fingerprint, so a
redefinition with another default or a changed global never reuses an old
hash.  Which fingerprinted code stored data may run is decided in
``registry`` alone.
"""

from __future__ import annotations

import ast
import copy
import dis
import hashlib
import inspect
import json
import os
import sys
import sysconfig
import textwrap
import types
from collections.abc import Callable
from typing import Any, NamedTuple

#: the key under which a carried module lists its captured names (not hashed:
#: the hash covers captures by position; the names let carried source be renamed)
FREE_KEY = "free"


class Fingerprint(NamedTuple):
    """A function's hash, its source text (if any), and what a carried module needs."""

    digest: str
    source: str | None
    #: behaviour inputs (hashed) plus ``FREE_KEY`` (captured names, not hashed)
    carried: dict[str, Any]


class _Parsed(NamedTuple):
    text: str
    source: str | None
    #: captured variable names, in order of first use in the body
    free: tuple[str, ...]


_MAX_CACHE = 8192
_parsed: dict[tuple[types.CodeType, str], _Parsed] = {}
_global_names: dict[types.CodeType, tuple[str, ...]] = {}
_LIBRARY_DIRS = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
#: where code counts as library code: named, not fingerprinted (cellkernel itself included)
_LIBRARY_ROOTS = tuple(os.path.realpath(p) + os.sep for p in
                       (*_LIBRARY_DIRS, os.path.dirname(os.path.dirname(__file__))))


# ---------------------------------------------------------------------------
# the normalised text


class _Normaliser(ast.NodeTransformer):
    """Drop docstrings and rename captured variables to ``$capN`` (order of first use)."""

    def __init__(self, free: frozenset[str]) -> None:
        self.free = free
        self.order: list[str] = []

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.free:
            if node.id not in self.order:
                self.order.append(node.id)
            return ast.copy_location(ast.Name(f"$cap{self.order.index(node.id)}", node.ctx), node)
        return node

    def _strip_docstring(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        body = node.body
        if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
        self.generic_visit(node)
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._strip_docstring(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._strip_docstring(node)


def normalise_node(node: ast.AST, free: tuple[str, ...] | list[str] = ()
                   ) -> tuple[str, tuple[str, ...]]:
    """The normalised text of a function or lambda node, and its captures in order of use."""
    copied = copy.deepcopy(node)  # the caller's tree stays as parsed
    target: ast.AST = ast.Expression(copied) if isinstance(copied, ast.Lambda) else copied
    normaliser = _Normaliser(frozenset(free))
    target = normaliser.visit(target)
    if isinstance(target, ast.FunctionDef | ast.AsyncFunctionDef):
        body = ast.dump(target.args) + "".join(ast.dump(s) for s in target.body)
        kind = "async" if isinstance(target, ast.AsyncFunctionDef) else "def"
        return f"{kind}:{body}", tuple(normaliser.order)
    assert isinstance(target, ast.Expression)
    return "lambda:" + ast.dump(target.body), tuple(normaliser.order)


def text_digest(normalised: str, carried: dict[str, Any] | None) -> str:
    """SHA-256 of a normalised text plus its behaviour inputs (``FREE_KEY`` excluded)."""
    hashed = {k: v for k, v in (carried or {}).items() if k != FREE_KEY}
    key = json.dumps(hashed, sort_keys=True, default=str)
    return hashlib.sha256(f"{normalised}\0{key}".encode()).hexdigest()


def _function_node(fn: types.FunctionType, source: str) -> ast.AST | None:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    code = fn.__code__
    candidates: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == fn.__name__:
            candidates.append(node)
        elif isinstance(node, ast.Lambda) and fn.__name__ == "<lambda>":
            names = [a.arg for a in node.args.args]
            if names == list(code.co_varnames[: code.co_argcount]):
                candidates.append(node)
    return candidates[0] if len(candidates) == 1 else None


def source_of(fn: Callable[..., Any]) -> str | None:
    """The function's own source text, dedented, or None when unavailable."""
    try:
        return textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError, IndentationError, SyntaxError):
        return None


def _parse(fn: types.FunctionType) -> _Parsed:
    code = fn.__code__
    key = (code, code.co_filename)
    found = _parsed.get(key)
    if found is not None:
        return found
    source = source_of(fn)
    node = _function_node(fn, source) if source is not None else None
    if node is not None:
        text, order = normalise_node(node, code.co_freevars)
        free = order + tuple(n for n in code.co_freevars if n not in order)
    else:  # no usable source: the code object (stable within one Python version)
        text = f"code:{code.co_code.hex()}:{code.co_names}:{_const_repr(code.co_consts)}"
        free = code.co_freevars
    if len(_parsed) >= _MAX_CACHE:
        _parsed.clear()
    found = _parsed[key] = _Parsed(text, source, free)
    return found


def _const_repr(consts: tuple[Any, ...]) -> str:
    parts = []
    stack: list[Any] = list(reversed(consts))
    while stack:
        c = stack.pop()
        if isinstance(c, types.CodeType):
            parts.append(f"code({c.co_code.hex()},{c.co_names})")
            stack.extend(reversed(c.co_consts))
        else:
            parts.append(repr(c))
    return "(" + ",".join(parts) + ")"


# ---------------------------------------------------------------------------
# behaviour inputs


def _globals_read(code: types.CodeType) -> tuple[str, ...]:
    """Names the code (and code nested in it) loads as globals, in first-use order."""
    found = _global_names.get(code)
    if found is not None:
        return found
    names: list[str] = []
    stack = [code]
    while stack:
        current = stack.pop()
        for ins in dis.get_instructions(current):
            if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") and isinstance(ins.argval, str) \
                    and ins.argval not in names:
                names.append(ins.argval)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    if len(_global_names) >= _MAX_CACHE:
        _global_names.clear()
    found = _global_names[code] = tuple(names)
    return found


def _is_library(obj: Any) -> bool:
    """Code outside the user's own: the standard library, site-packages, cellkernel."""
    code = getattr(obj, "__code__", None)
    path = getattr(code, "co_filename", None)
    if path is None:
        module = getattr(obj, "__module__", None)
        path = getattr(sys.modules.get(module or ""), "__file__", None)
    if not isinstance(path, str) or path.startswith("<"):
        return False  # a notebook cell, an exec'd string: user code
    return os.path.realpath(path).startswith(_LIBRARY_ROOTS)


def _class_stand_in(cls: type) -> Any:
    name = f"{cls.__module__}.{cls.__qualname__}"
    if _is_library(cls):
        return {"type": name}
    try:
        source = textwrap.dedent(inspect.getsource(cls))
        text = ast.dump(ast.parse(source))
    except (OSError, TypeError, SyntaxError, IndentationError):
        return {"type": name}
    return {"type": hashlib.sha256(text.encode()).hexdigest()}


_in_progress: set[types.CodeType] = set()


def constant_json(value: Any) -> Any:
    """A JSON stand-in for a value a function depends on (for the fingerprint)."""
    if isinstance(value, type):
        return _class_stand_in(value)
    fingerprint = getattr(value, "__ck_fingerprint__", None)
    if fingerprint is not None and callable(fingerprint):
        return {"impl": fingerprint()}
    if isinstance(value, types.FunctionType):
        if _is_library(value):
            return {"fn": f"{value.__module__}.{value.__qualname__}"}
        if value.__code__ in _in_progress:  # recursion: named, not followed again
            return {"fn": f"recursive:{value.__qualname__}"}
        return {"fn": fingerprint_function(value).digest}
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if isinstance(value, types.BuiltinFunctionType | types.MethodType):
        return {"callable": f"{getattr(value, '__module__', None)}.{value.__qualname__}"}
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):
        shown = repr(value)
        if " at 0x" in shown:  # an address: not stable across processes
            return {"object": type(value).__qualname__}
        return {"object": type(value).__qualname__, "repr": shown}
    if len(text) > 4096:
        return {"sha256": hashlib.sha256(text.encode()).hexdigest()}
    # a copy: the graph must not alias a mutable global the user changes later
    return value if isinstance(value, str | int | float | bool) or value is None \
        else json.loads(text)


def _behaviour(fn: types.FunctionType, constants: dict[str, Any] | None,
               free: tuple[str, ...]) -> dict[str, Any]:
    """The inputs that decide ``fn``'s behaviour besides its text."""
    carried: dict[str, Any] = {}
    if constants:
        carried["captures"] = [constants.get(name) for name in free if name in constants]
        carried[FREE_KEY] = [name for name in free if name in constants]
    if fn.__defaults__:
        carried["defaults"] = [constant_json(v) for v in fn.__defaults__]
    if fn.__kwdefaults__:
        carried["kwdefaults"] = {k: constant_json(v) for k, v in sorted(fn.__kwdefaults__.items())}
    reads: dict[str, Any] = {}
    namespace = fn.__globals__
    for name in _globals_read(fn.__code__):
        if name in namespace:
            reads[name] = constant_json(namespace[name])
    if reads:
        carried["globals"] = reads
    return carried


def fingerprint_function(fn: Callable[..., Any], constants: dict[str, Any] | None = None
                         ) -> Fingerprint:
    """The fingerprint of ``fn`` with the captured ``constants`` (name -> JSON stand-in)."""
    if not isinstance(fn, types.FunctionType):
        # not Python source: named by where it lives (a builtin such as ``len``)
        name = getattr(fn, "__qualname__", type(fn).__qualname__)
        home = getattr(fn, "__module__", None) or type(fn).__module__
        return Fingerprint(hashlib.sha256(f"callable:{home}.{name}".encode()).hexdigest(), None, {})
    code = fn.__code__
    parsed = _parse(fn)
    _in_progress.add(code)
    try:
        carried = _behaviour(fn, constants, parsed.free)
    finally:
        _in_progress.discard(code)
    return Fingerprint(text_digest(parsed.text, carried), parsed.source, carried)


def capture_order(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The captured variable names of ``fn`` in the order its fingerprint counts them."""
    if not isinstance(fn, types.FunctionType):
        return ()
    return _parse(fn).free


def ref_of(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", getattr(fn, "__name__", "fn"))
    return f"{module}:{qualname}"
