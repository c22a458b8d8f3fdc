"""Implementation fingerprints and resolution: how stored graphs find their code.

A Python implementation is named ``module:qualname`` and fingerprinted by a
SHA-256 over its normalised source (the AST, so comments, formatting and the
function's own name don't matter) plus the constants it captures.  Resolution
(SPEC §8) tries, in order: the process registry by hash, importing
``module:qualname`` when the hash matches, and — only for a runtime created
with ``trust_source=True`` — compiling the carried source.  Anything else is an
``UnknownImplementationError`` and no code runs.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib
import inspect
import json
import textwrap
import types
from collections.abc import Callable
from typing import Any

from .errors import UnknownImplementationError

_registry: dict[str, Callable[..., Any]] = {}
_fingerprints: dict[tuple[types.CodeType, str], tuple[str, str | None]] = {}
#: ``_normalised`` per code object: a closure capturing a loop variable has new
#: constants (so a new fingerprint) on every call, but the same source to parse
_normalised_by_code: dict[types.CodeType, tuple[str, str | None]] = {}


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
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = ast.dump(node.args) + "".join(ast.dump(s) for s in node.body)
                kind = "async" if isinstance(node, ast.AsyncFunctionDef) else "def"
                return f"{kind}:{body}", source
            return "lambda:" + ast.dump(node), source
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
        name = getattr(fn, "__qualname__", type(fn).__qualname__)
        return hashlib.sha256(f"callable:{name}".encode()).hexdigest(), None
    key_consts = json.dumps(constants or {}, sort_keys=True, default=str)
    key = (fn.__code__, key_consts)
    cached = _fingerprints.get(key)
    if cached is not None:
        return cached
    found = _normalised_by_code.get(fn.__code__)
    if found is None:
        found = _normalised_by_code[fn.__code__] = _normalised(fn)
    normalised, source = found
    digest = hashlib.sha256(f"{normalised}\0{key_consts}".encode()).hexdigest()
    _fingerprints[key] = (digest, source)
    return digest, source


def ref_of(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "__main__"
    qualname = getattr(fn, "__qualname__", getattr(fn, "__name__", "fn"))
    return f"{module}:{qualname}"


def register(digest: str, fn: Callable[..., Any]) -> None:
    _registry.setdefault(digest, fn)


def registered(digest: str) -> Callable[..., Any] | None:
    return _registry.get(digest)


def resolve(module: dict[str, Any], *, trust_source: bool = False) -> Callable[..., Any]:
    """The function a module descriptor names, or ``UnknownImplementationError``."""
    digest = module.get("hash")
    ref = module.get("ref", "?")
    if not isinstance(digest, str):
        raise UnknownImplementationError(f"implementation {ref!r} carries no hash")
    fn = _registry.get(digest)
    if fn is not None:
        return fn
    imported = _import(ref)
    if imported is not None:
        constants = module.get("constants") or {}
        # a module attribute is usually the factory a decorator made (``@lift``,
        # ``@handler``): the implementation is the function it wraps
        for target in (
            getattr(imported, "__ck_function__", None),
            getattr(imported, "__wrapped__", None),
            imported,
        ):
            if target is not None and fingerprint_function(target, constants)[0] == digest:
                register(digest, target)
                return target  # type: ignore[no-any-return]
    source = module.get("source")
    if trust_source and isinstance(source, str):
        compiled = _compile(source, ref)
        constants = module.get("constants") or {}
        if fingerprint_function(compiled, constants)[0] != digest:
            raise UnknownImplementationError(
                f"the source carried for {ref!r} does not match its hash {digest[:12]}"
            )
        register(digest, compiled)
        return compiled
    module_name = ref.split(":", 1)[0]
    hint = (
        "" if trust_source or not isinstance(source, str)
        else "; it carries source, which runs only in Runtime(trust_source=True)"
    )
    raise UnknownImplementationError(
        f"cannot resolve implementation {ref!r} (hash {digest[:12]}…): module "
        f"{module_name!r} does not define it with that hash{hint}"
    )


def _import(ref: str) -> Any:
    if ":" not in ref:
        return None
    module_name, qualname = ref.split(":", 1)
    if module_name in ("__main__", "builtins") or "<" in qualname:
        return None
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception:
        return None
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


#: Names carried source may use (annotations such as ``Cell[int]``, ``Default[T, v]``).
#: Upper layers add theirs with ``provide_trusted_names`` (the builder does at import),
#: so this module never imports upward.
_trusted_names: dict[str, Any] = {}


def provide_trusted_names(**names: Any) -> None:
    _trusted_names.update(names)


def _compile(source: str, ref: str) -> types.FunctionType:
    """Compile carried source (trusted runtimes only) and return its function."""
    import linecache

    from .cells import Cell, Stream

    text = textwrap.dedent(source)
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise UnknownImplementationError(
            f"the source carried for {ref!r} does not parse: {exc}"
        ) from exc
    namespace: dict[str, Any] = {"__builtins__": builtins, "__name__": "cellkernel.trusted",
                                 "Cell": Cell, "Stream": Stream, "Any": Any, **_trusted_names}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.decorator_list = []
    filename = f"<trusted {ref}>"
    # keep the text where inspect.getsource finds it: the fingerprint is over the source
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    code = compile(tree, filename, "exec")
    try:
        exec(code, namespace)
    except Exception as exc:
        raise UnknownImplementationError(
            f"the source carried for {ref!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    for value in namespace.values():
        if isinstance(value, types.FunctionType) and value.__module__ == "cellkernel.trusted":
            return value
    expr = tree.body[-1] if tree.body else None
    if isinstance(expr, ast.Expr) and isinstance(expr.value, ast.Lambda):
        return eval(compile(ast.Expression(expr.value), f"<trusted {ref}>", "eval"), namespace)  # type: ignore[no-any-return]
    raise UnknownImplementationError(f"the source carried for {ref!r} defines no function")
