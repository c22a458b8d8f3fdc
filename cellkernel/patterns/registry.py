"""The process registry and the one rule for which code stored data may run (SPEC §8).

The rule, in one sentence: **stored data runs only code whose hash names a
factory defined in this process** — by the user's own definitions and imports,
by importing a module under one of ``Runtime(trusted_modules=[...])``'s
prefixes so that its decorators define it, or (``trust_source=True`` only) by
compiling carried source whose hash was checked before any of it ran.

Everything that turns stored JSON into code — ``rt.resume``, ``rt.run`` of a
pattern whose result records handler-made children, ``materialize``,
``cell.get()`` of a factory sigil, lift and handler inputs, ``instantiate``,
``wish`` — goes through :func:`resolve_function` (Python code),
:func:`resolve_pattern` (a pattern named by hash) or :func:`builtin` (the fixed
table of builtin lifts).  Nothing else in the package imports a module or
compiles text named by data.

A ``module:qualname`` in stored data is a label, never an instruction: the
module is imported only when it is under a trusted prefix, and what it
defines is accepted only if it is a factory (made by ``@lift``, ``@handler``,
``lift(fn)``, ``@pattern``) whose fingerprint equals the stored hash — never
an arbitrary attribute or callable.  Carried source is parsed and hashed
first; only the one function node whose fingerprint matches is compiled (no
other statement of the text runs).
"""

from __future__ import annotations

import ast
import builtins as python_builtins
import importlib
import linecache
import sys
import textwrap
import types
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cellkernel.errors import UnknownImplementationError
from cellkernel.patterns.builtin_lifts import BUILTIN_LIFTS
from cellkernel.patterns.fingerprints import FREE_KEY, normalise_node, text_digest

# ---------------------------------------------------------------------------
# the trust policy


@dataclass(frozen=True)
class TrustPolicy:
    """What a runtime lets stored refs reach beyond this process's registry.

    ``trusted_modules`` are module-name prefixes: ``"myapp.patterns"`` trusts
    ``myapp.patterns`` and ``myapp.patterns.sub`` but not ``myapp.patternsx``.
    Importing a trusted module imports its parent packages, as Python does.
    """

    trusted_modules: tuple[str, ...] = ()
    trust_source: bool = False

    @classmethod
    def of(cls, trusted_modules: Iterable[str] | None = None,
           trust_source: bool = False) -> TrustPolicy:
        """A checked policy: every prefix must be a dotted module name."""
        if isinstance(trusted_modules, str):
            raise TypeError(
                f"trusted_modules must be a list of module-name prefixes, got the string "
                f"{trusted_modules!r} (write [{trusted_modules!r}])"
            )
        prefixes = tuple(trusted_modules or ())
        for prefix in prefixes:
            if not isinstance(prefix, str) or not _is_module_name(prefix):
                raise ValueError(
                    f"trusted_modules: {prefix!r} is not a dotted module name "
                    "(e.g. 'myapp.patterns')"
                )
        if not isinstance(trust_source, bool):
            raise TypeError(f"trust_source must be True or False, got {trust_source!r}")
        return cls(prefixes, trust_source)

    def trusts(self, module_name: str) -> bool:
        return any(module_name == p or module_name.startswith(p + ".")
                   for p in self.trusted_modules)


#: the default: this process's registry and the builtin table, nothing else
UNTRUSTED = TrustPolicy()


def policy_of(rt: Any) -> TrustPolicy:
    """The policy of a runtime (or the default when there is none)."""
    found = getattr(rt, "trust", None)
    return found if isinstance(found, TrustPolicy) else UNTRUSTED


def _is_module_name(name: str) -> bool:
    return bool(name) and all(part.isidentifier() for part in name.split("."))


# ---------------------------------------------------------------------------
# the registry


class DefinedFactory(Protocol):
    """What the builder's lift and handler factories offer the registry."""

    fn: Callable[..., Any]

    def module(self) -> dict[str, Any]: ...


class DefinedPattern(Protocol):
    @property
    def hash(self) -> str: ...


#: implementation hash -> function, filled when a factory is fingerprinted.  Weak:
#: the factories and patterns that use a function hold it (a pattern holds the
#: functions of its nodes, ``Pattern.keep``), so a dropped definition leaves no entry.
_functions: weakref.WeakValueDictionary[str, Callable[..., Any]] = weakref.WeakValueDictionary()
#: callables that cannot be weakly referenced (a builtin such as ``len`` in ``lift(len)``)
_strong_functions: dict[str, Callable[..., Any]] = {}
#: ``(module, qualname)`` -> the lift/handler factories defined there (not yet
#: fingerprinted, perhaps: fingerprinting is deferred until a factory is used)
_defined: dict[tuple[str, str], weakref.WeakSet[Any]] = {}
#: pattern graph hash -> pattern; weak, as above (a running instance holds its pattern,
#: a pattern its sub-patterns)
_patterns: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def define_factory(factory: DefinedFactory) -> None:
    """Note a lift or handler factory defined in this process (its decorator calls this)."""
    fn = factory.fn
    key = (str(getattr(fn, "__module__", None) or "__main__"),
           str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", "?")))
    found = _defined.get(key)
    if found is None:
        found = _defined[key] = weakref.WeakSet()
    found.add(factory)


def register_function(digest: str, fn: Callable[..., Any]) -> None:
    """Register ``fn`` under its fingerprint; the latest definition wins.

    A re-defined function with the same fingerprint (a re-executed notebook
    cell) must run with its own closure and globals.
    """
    try:
        _functions[digest] = fn
        _strong_functions.pop(digest, None)
    except TypeError:  # not weakly referable: a builtin callable
        _strong_functions[digest] = fn


def registered_function(digest: str) -> Callable[..., Any] | None:
    found = _functions.get(digest)
    return found if found is not None else _strong_functions.get(digest)


def register_pattern(pattern: DefinedPattern) -> None:
    """Register a pattern under its graph hash (content-addressed: the first one stays)."""
    if _patterns.get(pattern.hash) is None:
        _patterns[pattern.hash] = pattern


def registered_pattern(digest: str) -> Any:
    return _patterns.get(digest)


def forget_pattern(digest: str) -> None:
    """Drop a pattern from the registry (tests simulate a pattern defined elsewhere)."""
    _patterns.pop(digest, None)


def builtin(name: str) -> Callable[..., Any] | None:
    """The builtin lift ``name`` from the fixed table, or None."""
    return BUILTIN_LIFTS.get(name)


# ---------------------------------------------------------------------------
# the rule


def resolve_function(module: Mapping[str, Any], policy: TrustPolicy = UNTRUSTED
                     ) -> Callable[..., Any]:
    """The function a ``{"type": "python", ...}`` module names, under ``policy``.

    Raises ``UnknownImplementationError`` (importing nothing, running nothing)
    when neither this process defines it, nor a trusted module does, nor the
    policy trusts carried source whose hash matches.
    """
    digest = module.get("hash")
    ref = module.get("ref")
    if not isinstance(ref, str):
        ref = "?"
    if not isinstance(digest, str) or not digest:
        raise UnknownImplementationError(f"implementation {ref!r} carries no hash")
    constants = module.get("constants") or {}
    if not isinstance(constants, dict):
        raise UnknownImplementationError(f"implementation {ref!r}: constants must be an object")
    found = registered_function(digest)
    if found is not None:
        return found
    module_name, _, qualname = ref.partition(":")
    found = _defined_with_hash(module_name, qualname, digest)
    if found is None and _is_module_name(module_name) and policy.trusts(module_name) \
            and module_name not in sys.modules:
        _import_trusted(module_name, ref)
        found = _defined_with_hash(module_name, qualname, digest)
    if found is not None:
        return found
    source = module.get("source")
    if policy.trust_source and isinstance(source, str):
        compiled = _compile_checked(source, ref, digest, constants)
        register_function(digest, compiled)
        return compiled
    raise UnknownImplementationError(_unknown_message(ref, digest, policy, isinstance(source, str)))


def resolve_pattern(digest: str, ref: str, policy: TrustPolicy = UNTRUSTED) -> Any:
    """A pattern defined in this process (or in a trusted module) with graph hash ``digest``.

    None when there is none; a pattern sigil's carried graph is data and is
    handled by the caller (its Python nodes resolve through this module).
    """
    found = _patterns.get(digest)
    if found is not None:
        return found
    module_name = ref.partition(":")[0]
    if _is_module_name(module_name) and policy.trusts(module_name) \
            and module_name not in sys.modules:
        _import_trusted(module_name, ref)
        return _patterns.get(digest)
    return None


def _defined_with_hash(module_name: str, qualname: str, digest: str
                       ) -> Callable[..., Any] | None:
    """The function of a factory defined at ``module:qualname`` whose hash is ``digest``."""
    for factory in list(_defined.get((module_name, qualname), ())):
        if factory.module().get("hash") == digest:  # fingerprints (and registers) it
            fn: Callable[..., Any] = factory.fn
            register_function(digest, fn)
            return fn
    return None


def _import_trusted(module_name: str, ref: str) -> None:
    try:
        importlib.import_module(module_name)
    except Exception as exc:
        raise UnknownImplementationError(
            f"cannot resolve implementation {ref!r}: importing the trusted module "
            f"{module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc


def _unknown_message(ref: str, digest: str, policy: TrustPolicy, has_source: bool) -> str:
    module_name = ref.partition(":")[0]
    if module_name in ("__main__", "builtins", "") or not _is_module_name(module_name):
        what = "define it in this process first (run the cell or script that defines it)"
    elif policy.trusts(module_name):
        what = (f"the trusted module {module_name!r} defines no factory {ref!r} with that "
                "hash (was it edited since the value was stored?)")
    else:
        what = (f"import {module_name!r} (the module that defines it) before reading this "
                f"value, or trust it with Runtime(trusted_modules=[{module_name!r}])")
    hint = ("; it carries source, which runs only in Runtime(trust_source=True)"
            if has_source and not policy.trust_source else "")
    return (f"cannot resolve implementation {ref!r} (hash {digest[:12]}…): no factory with "
            f"that hash is defined in this process; {what}{hint}")


# ---------------------------------------------------------------------------
# carried source (trust_source=True only): hash first, then compile one node

#: Names carried source may use (annotations such as ``Cell[int]``, ``Default[T, v]``).
#: Upper layers add theirs with ``provide_trusted_names``.
_trusted_names: dict[str, Any] = {"Any": Any}


def provide_trusted_names(**names: Any) -> None:
    _trusted_names.update(names)


def _compile_checked(source: str, ref: str, digest: str, constants: dict[str, Any]
                     ) -> Callable[..., Any]:
    """Compile the one function node of ``source`` whose fingerprint is ``digest``.

    The text is parsed and every function node in it fingerprinted before
    anything is compiled; no statement other than the matching definition (its
    decorators dropped) ever runs.
    """
    text = textwrap.dedent(source)
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise UnknownImplementationError(
            f"the source carried for {ref!r} does not parse: {exc}"
        ) from exc
    match = _matching_node(tree, digest, constants)
    if match is None:
        raise UnknownImplementationError(
            f"the source carried for {ref!r} does not match its hash {digest[:12]}…; "
            "nothing of it ran"
        )
    filename = f"<trusted {ref} {digest[:12]}>"
    # keep the text where inspect.getsource finds it: the fingerprint is over the source
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    namespace: dict[str, Any] = {"__builtins__": python_builtins,
                                 "__name__": "cellkernel.trusted", **_trusted_names}
    # captured constants were hashed by position; the carried names put them back
    names, values = constants.get(FREE_KEY) or [], constants.get("captures") or []
    namespace.update(zip(names, values, strict=False))
    try:
        if isinstance(match, ast.Lambda):
            fn = eval(compile(ast.Expression(match), filename, "eval"), namespace)
        else:
            match.decorator_list = []
            exec(compile(ast.Module([match], []), filename, "exec"), namespace)
            fn = namespace[match.name]
    except Exception as exc:
        raise UnknownImplementationError(
            f"the source carried for {ref!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(fn, types.FunctionType):
        raise UnknownImplementationError(f"the source carried for {ref!r} defines no function")
    return fn


def _matching_node(tree: ast.AST, digest: str, constants: dict[str, Any]
                   ) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | None:
    free = constants.get(FREE_KEY) or []
    if not isinstance(free, list) or not all(isinstance(n, str) for n in free):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda) \
                and text_digest(normalise_node(node, free)[0], constants) == digest:
            return node
    return None
