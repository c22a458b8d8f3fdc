"""A ``%%pattern`` cell body as a pattern: compile it, trace it, pick its result."""

from __future__ import annotations
import __future__

import ast
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from cellkernel.patterns.builder import Pattern, trace
from cellkernel.patterns.tracing import OpaqueRef

if TYPE_CHECKING:

    pass


_BODY = "__ck_body__"


_LOCALS = "__ck_locals__"


_FUTURE_FLAGS = 0
for _feature in __future__.all_feature_names:
    _FUTURE_FLAGS |= getattr(__future__, _feature).compiler_flag


class _ReturnLocals(ast.NodeTransformer):
    """``return v`` at body level becomes ``return (v, locals())``; nested defs untouched."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return node

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return node

    def visit_Lambda(self, node: ast.Lambda) -> ast.AST:
        return node

    def visit_Return(self, node: ast.Return) -> ast.AST:
        value = node.value if node.value is not None else ast.Constant(None)
        return ast.copy_location(ast.Return(_with_locals(value)), node)


def _with_locals(value: ast.expr) -> ast.expr:
    call = ast.Call(ast.Name(_LOCALS, ast.Load()), [], [])
    return ast.Tuple([value, call], ast.Load())


def compile_body(code: str, filename: str, user_ns: dict[str, Any],
                 flags: int = 0, first_line: int = 1) -> Callable[[], tuple[Any, dict[str, Any]]]:
    """Compile a cell body into a function returning ``(final value, its locals)``.

    The body keeps its line numbers (``first_line`` is the number of its first
    line in the cell, so tracebacks name the lines the editor shows) and
    its globals are ``user_ns``, so functions defined in it close over
    body-level names — which the builder turns into node inputs.
    """
    tree = ast.parse(code, filename, "exec")
    if first_line != 1:  # the body starts below the magic's own line
        ast.increment_lineno(tree, first_line - 1)
    body: list[ast.stmt] = [_ReturnLocals().visit(stmt) for stmt in tree.body]
    if body and isinstance(body[-1], ast.Expr):
        last = body[-1]
        body[-1] = ast.copy_location(ast.Return(_with_locals(last.value)), last)
    else:
        body.append(ast.Return(_with_locals(ast.Constant(None))))
    args = ast.arguments(posonlyargs=[], args=[ast.arg(_LOCALS)], vararg=None, kwonlyargs=[],
                         kw_defaults=[], kwarg=None, defaults=[])
    fn_def = ast.FunctionDef(_BODY, args, body, [], None, None)
    fn_def.type_params = []  # type: ignore[attr-defined,unused-ignore]  # 3.12+ needs it
    fn_def.lineno, fn_def.col_offset = 1, 0
    module = ast.Module([fn_def], [])
    ast.fix_missing_locations(module)
    compiled = compile(module, filename, "exec", flags=flags & _FUTURE_FLAGS, dont_inherit=True)
    scope: dict[str, Any] = {}
    exec(compiled, user_ns, scope)
    fn = scope[_BODY]

    def run() -> tuple[Any, dict[str, Any]]:
        __tracebackhide__ = True
        value, names = fn(locals)
        return value, {k: v for k, v in names.items() if k != _LOCALS}

    return run


def _is_own_ref(value: Any, frame: Any) -> bool:
    return isinstance(value, OpaqueRef) and value._frame is frame


def build_pattern(name: str, body: Callable[[], tuple[Any, dict[str, Any]]]) -> Pattern:
    """Trace ``body`` into a pattern named ``name`` (SPEC §9 result rules).

    A final dict expression is the result; otherwise every public name bound
    to a ref or stream of the body. ``x = Cell.of(v)`` gets the cause ``"x"``.
    A final ``Pattern`` is returned as is: the caller runs it directly, so its
    argument state lives under the notebook cause and survives edits of it.
    """
    __tracebackhide__ = True
    final: dict[str, Any] = {}

    def run(frame: Any) -> Any:
        __tracebackhide__ = True
        value, names = body()
        if isinstance(value, Pattern):
            final["pattern"] = value
            return None
        for var, ref in names.items():
            if not _is_own_ref(ref, frame) or ref._path:
                continue
            bcell = ref._bcell
            if bcell.helper == "cell" and bcell.cause is None:
                # ids are derived when the instance starts, so naming after use is safe
                bcell.cause = var
                bcell.name = var
            elif bcell.name is None:
                bcell.name = var
        if isinstance(value, dict):
            return value
        return {var: ref for var, ref in names.items()
                if not var.startswith("_") and _is_own_ref(ref, frame)}

    argument_schema = {"type": "object", "properties": {}}
    keep: list[Any] = []
    graph, captures = trace(run, name, argument_schema, None, keep=keep)
    if "pattern" in final:
        return final["pattern"]  # type: ignore[no-any-return]
    if captures:  # pragma: no cover - a top-level frame has no outer refs
        raise UsageError(f"%%pattern {name}: the body used refs of an enclosing pattern")
    made = Pattern(None, graph, name)
    made.keep = keep  # the body's functions: the registry holds them weakly
    return made
