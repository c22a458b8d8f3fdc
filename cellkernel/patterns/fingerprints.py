"""Implementation fingerprints: the hash that names a function's behaviour.

A Python implementation is named ``module:qualname`` and fingerprinted by a
SHA-256 over its normalised source (the AST, so comments, formatting and the
function's own name don't matter) plus the constants it captures.  Which
fingerprinted code stored data may run is decided in ``registry`` alone.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import textwrap
import types
from collections.abc import Callable
from typing import Any

_fingerprints: dict[tuple[types.CodeType, str], tuple[str, str | None]] = {}
#: ``_normalised`` per code object: a closure capturing a loop variable has new
#: constants (so a new fingerprint) on every call, but the same source to parse
_normalised_by_code: dict[types.CodeType, tuple[str, str | None]] = {}


def node_text(node: ast.AST) -> str:
    """The normalised text of a function or lambda node: what its fingerprint hashes."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        body = ast.dump(node.args) + "".join(ast.dump(s) for s in node.body)
        kind = "async" if isinstance(node, ast.AsyncFunctionDef) else "def"
        return f"{kind}:{body}"
    return "lambda:" + ast.dump(node)


def text_digest(normalised: str, constants: dict[str, Any] | None) -> str:
    """SHA-256 of a normalised function text plus its captured constants."""
    key_consts = json.dumps(constants or {}, sort_keys=True, default=str)
    return hashlib.sha256(f"{normalised}\0{key_consts}".encode()).hexdigest()


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
    except (OSError, TypeError):
        return None


def _normalised(fn: types.FunctionType) -> tuple[str, str | None]:
    source = source_of(fn)
    if source is not None:
        node = _function_node(fn, source)
        if node is not None:
            return node_text(node), source
    # no usable source: hash the code object (stable within one Python version)
    code = fn.__code__
    return f"code:{code.co_code.hex()}:{code.co_names}:{_const_repr(code.co_consts)}", source


def _const_repr(consts: tuple[Any, ...]) -> str:
    parts = []
    for c in consts:
        if isinstance(c, types.CodeType):
            parts.append(f"code({c.co_code.hex()},{c.co_names},{_const_repr(c.co_consts)})")
        else:
            parts.append(repr(c))
    return "(" + ",".join(parts) + ")"


def constant_json(value: Any) -> Any:
    """A JSON stand-in for a captured constant (for the fingerprint)."""
    fingerprint = getattr(value, "__ck_fingerprint__", None)
    if fingerprint is not None:
        return {"impl": fingerprint()}
    if isinstance(value, types.FunctionType):
        return {"fn": fingerprint_function(value)[0]}
    if isinstance(value, types.ModuleType):
        return {"module": value.__name__}
    if isinstance(value, type):
        return {"type": f"{value.__module__}.{value.__qualname__}"}
    try:
        json.dumps(value, sort_keys=True, allow_nan=False)
        return value
    except (TypeError, ValueError):
        return {"object": type(value).__qualname__}


def fingerprint_function(
    fn: Callable[..., Any], constants: dict[str, Any] | None = None
) -> tuple[str, str | None]:
    """``(sha256 hex, source)`` of ``fn`` plus the captured ``constants``."""
    if not isinstance(fn, types.FunctionType):
        # not Python source: named by where it lives (a builtin such as ``len``)
        name = getattr(fn, "__qualname__", type(fn).__qualname__)
        home = getattr(fn, "__module__", None) or type(fn).__module__
        return hashlib.sha256(f"callable:{home}.{name}".encode()).hexdigest(), None
    key_consts = json.dumps(constants or {}, sort_keys=True, default=str)
    key = (fn.__code__, key_consts)
    cached = _fingerprints.get(key)
    if cached is not None:
        return cached
    found = _normalised_by_code.get(fn.__code__)
    if found is None:
        found = _normalised_by_code[fn.__code__] = _normalised(fn)
    normalised, source = found
    digest = text_digest(normalised, constants)
    _fingerprints[key] = (digest, source)
    return digest, source


def ref_of(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", getattr(fn, "__name__", "fn"))
    return f"{module}:{qualname}"
