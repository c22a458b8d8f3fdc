"""Tracing a pattern body: the frame it runs in, opaque refs, and binding values to inputs.

An author function runs once against ``OpaqueRef``s; every helper call it makes
records a node in the current ``BuilderFrame`` (``add_node``), whose cells carry
the components of their causes (``BCell``)."""

from __future__ import annotations

import json
import sys
import types
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cellkernel.data import schema as schemas
from cellkernel.data.values import JSON, MISSING, to_json_value
from cellkernel.errors import CapabilityError, CauseError
from cellkernel.patterns import fingerprints as impls
from cellkernel.reactive.cells import Cell

T = TypeVar("T")


NAME = "$NAME"


@dataclass(eq=False)
class BCell:
    """An internal cell of a pattern being built: the components of its cause."""

    key: str
    helper: str
    impl: str | None = None
    inputs: list[str] = field(default_factory=list)
    config: JSON = None
    index: int = 0
    cause: Any = None
    name: str | None = None
    initial: Any = MISSING
    schema: Any = None
    stream: bool = False
    connected: bool = False
    #: the other components, for telling identical siblings apart (``finish_causes``)
    signature: Any = None
    #: the name that told this cell apart from identical siblings (a cause component)
    bound: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "helper": self.helper}
        if self.cause is not None:
            out["cause"] = self.cause
        else:
            out.update(impl=self.impl, inputs=self.inputs, index=self.index, config=self.config)
            if self.bound is not None:
                out["bound"] = self.bound
        if self.name is not None:
            out["name"] = self.name
        if self.schema is not None:
            out["schema"] = self.schema
        if self.stream:
            out["stream"] = True
        return out


class BuilderFrame:
    """The graph being recorded by one running author function."""

    def __init__(self, parent: BuilderFrame | None, name: str) -> None:
        self.parent = parent
        self.name = name
        self.cells: list[BCell] = []
        self.nodes: list[dict[str, Any]] = []
        self.argument = BCell("argument", "argument", connected=True)
        self.self_cell = BCell("self", "self", connected=True)
        self.captured: dict[int, tuple[str, OpaqueRef[Any]]] = {}
        # keyed by a (helper, impl, inputs) tuple when the signature is all strings and
        # has no config (no json.dumps per node), else by the JSON text of the signature
        self._signatures: dict[Any, int] = {}
        self._owned: set[int] = set()  # ids of self.cells (kept alive by it): O(1) owns()
        # indices of nodes whose binding did not come from bind(): the hash checks those
        self.loose: list[int] = []
        #: the author function's code, and its frame once a helper call meets it: when the
        #: body returns, its locals name the cells they hold (``name_by_variables``)
        self.author_code: types.CodeType | None = None
        self.author_frame: types.FrameType | None = None
        #: what the pattern being built must keep alive: its nodes' functions and the
        #: patterns it uses (the registry holds them weakly)
        self.keep: list[Any] = []
        #: one alias object per (cell key, plain path), shared by every binding of this
        #: frame that names it (a graph is never changed once built: a fan-out's leaves
        #: all bind one input), and one empty path list and one empty kwargs object
        self._aliases: dict[tuple[str, tuple[str | int, ...]], dict[str, Any]] = {}
        self._no_path: list[Any] = []
        self.no_kwargs: dict[str, Any] = {}

    def alias(self, key: str, path: tuple[str | int, ...]) -> dict[str, Any]:
        """``{"$alias": {"cell": key, "path": [...path]}}``, shared for a plain path."""
        for p in path:
            if type(p) is not str and type(p) is not int:  # (True == 1: no shared key)
                return {"$alias": {"cell": key, "path": list(path)}}
        found = self._aliases.get((key, path))
        if found is None:
            found = self._aliases[(key, path)] = {
                "$alias": {"cell": key, "path": list(path) if path else self._no_path}}
        return found

    def keep_once(self, value: Any) -> None:
        """Append ``value`` to ``keep`` unless it was the last one kept (a chain's lifts)."""
        keep = self.keep
        if not keep or keep[-1] is not value:
            keep.append(value)

    def new_cell(self, helper: str, impl: str | None, inputs: list[str], config: JSON,
                 schema: Any = None, stream: bool = False) -> BCell:
        ordered = inputs.copy()  # (an exact-size list: the graph keeps one per cell)
        ordered.sort()
        signature: Any = None
        if config is None and isinstance(helper, str) and (impl is None or isinstance(impl, str)):
            # equal tuples of strings <=> equal JSON texts, and a tuple never equals a text
            signature = (helper, impl, *ordered)
            for i in ordered:
                if not isinstance(i, str):
                    signature = None
                    break
        if signature is None:
            signature = json.dumps([helper, impl, ordered, config], sort_keys=True, default=str)
        index = self._signatures.get(signature, 0)
        self._signatures[signature] = index + 1
        cell = BCell(f"c{len(self.cells)}", helper, impl, ordered, config, index)
        cell.signature = signature
        if self.author_frame is None and self.author_code is not None:
            self.author_frame = _frame_running(self.author_code)
        if schema is not None:  # set after: keywords make the dataclass call twice as slow
            cell.schema = schema
        if stream:
            cell.stream = True
        self.cells.append(cell)
        self._owned.add(id(cell))
        return cell

    def name_by_variables(self) -> None:
        """Name each unnamed cell after the body's variable that holds it (SPEC §6, §9)."""
        frame, self.author_frame = self.author_frame, None  # do not keep the frame alive
        if frame is None:
            return
        for variable, value in frame.f_locals.items():
            if isinstance(value, OpaqueRef) and not value._path and value._frame is self \
                    and value._bcell.name is None and not variable.startswith("_"):
                value._bcell.name = variable

    def finish_causes(self) -> None:
        """Index identical siblings, after their names have told them apart (SPEC §6).

        Cells whose other components are identical are told apart by the name they
        are bound to (a result key or variable): when two or more such twins have
        names, each name becomes a component (``bound``), so inserting, removing or
        reordering twins never hands one's id, and its state, to another.  A lone
        named cell keeps no name component, so renaming its variable changes no id;
        unnamed twins of it are marked ``bound: ""`` and counted by ``index`` among
        themselves.  ``Cell.of`` state with a name is named by it alone (its initial
        value is no component), so editing the initial value keeps the state.
        """
        groups: dict[Any, list[BCell]] = {}
        for cell in self.cells:
            if cell.cause is not None:
                continue
            if cell.helper == "cell" and cell.name is not None:
                cell.config = None
                cell.signature = ("cell", cell.name)
                cell.bound = cell.name
            groups.setdefault(cell.signature, []).append(cell)
        for members in groups.values():
            if len(members) == 1:
                members[0].index = 0
                continue
            named = [c for c in members if c.name is not None]
            if len(named) >= 2:
                for cell in named:
                    cell.bound = cell.name
            elif named:
                for cell in members:
                    if cell.name is None:
                        cell.bound = ""
            counts: dict[str | None, int] = {}
            for cell in members:
                n = counts.get(cell.bound, 0)
                counts[cell.bound] = n + 1
                cell.index = n

    def owns(self, bcell: BCell) -> bool:
        return bcell is self.argument or bcell is self.self_cell or id(bcell) in self._owned

    def capture(self, ref: OpaqueRef[Any]) -> OpaqueRef[Any]:
        """A ref of an outer frame used here becomes part of this frame's argument."""
        key = id(ref._bcell), tuple(ref._path)
        ident = hash(key)
        if ident not in self.captured:
            self.captured[ident] = (f"k{len(self.captured)}", ref)
        local = self.captured[ident][0]
        return OpaqueRef(self.argument, ("$captured", local), ref._schema, self)


_frames: ContextVar[BuilderFrame | None] = ContextVar("cellkernel_builder_frame", default=None)


def _frame_running(code: types.CodeType) -> types.FrameType | None:
    """The innermost frame of the call stack running ``code`` (the author function)."""
    frame: types.FrameType | None = sys._getframe(2)
    for _ in range(64):
        if frame is None:
            return None
        if frame.f_code is code:
            return frame
        frame = frame.f_back
    return None


def current_frame() -> BuilderFrame | None:
    return _frames.get()


class OpaqueRef(Cell[T]):
    """A builder-time reference to a cell of the pattern being defined.

    It cannot be read (``CapabilityError``): values exist only at run time.
    Keys, ``map``, ``filter`` and ``.for_()`` work as on cells.
    """

    __slots__ = ("_bcell", "_frame")

    def __init__(self, bcell: BCell, path: tuple[str | int, ...], schema: Any,
                 frame: BuilderFrame) -> None:
        super().__init__(None, None, None, path, schema, None, "opaque")
        self._bcell = bcell
        self._frame = frame

    def key(self, *path: str | int) -> OpaqueRef[Any]:
        if not path:
            return self
        child = schemas.at_path(self._schema, path) if self._schema else None
        return OpaqueRef(self._bcell, self._path + tuple(path), child, self._frame)

    def for_(self, cause: Any, flexible: bool = False) -> OpaqueRef[T]:
        bcell = self._bcell
        if bcell.connected or self._path:
            if flexible:
                return self
            raise CauseError(
                f".for_({cause!r}) must come before the cell is used as an input or exposed; "
                "this reference is already connected"
            )
        if bcell.cause is not None:
            if flexible:
                bcell.cause = [bcell.cause, cause]
                return self
            raise CauseError(f"this cell already has the cause {bcell.cause!r}")
        bcell.cause = to_json_value(cause)
        if bcell.name is None and isinstance(cause, str):
            bcell.name = cause
        return self

    @property
    def is_stream(self) -> bool:
        return self._bcell.stream and not self._path

    def __ck_to_json__(self) -> Any:
        raise CapabilityError("store", "opaque", "a builder reference outside its pattern")

    def __bool__(self) -> bool:
        raise CapabilityError(
            "test the truth of", "opaque", "a builder reference (use if_else/when/unless)"
        )

    def __format__(self, spec: str) -> str:
        raise CapabilityError("format", "opaque", "a builder reference (use fmt(...))")

    def __iter__(self) -> Any:
        raise CapabilityError("iterate", "opaque", "a builder reference (use .map(...))")

    def _arith(self, *_: Any) -> Any:
        raise CapabilityError(
            "compute with", "opaque", "a builder reference (wrap the computation in a lift)"
        )

    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _arith
    __truediv__ = __floordiv__ = __mod__ = __lt__ = __le__ = __gt__ = __ge__ = _arith
    __int__ = __float__ = __len__ = _arith

    def __repr__(self) -> str:
        label = self._bcell.name or self._bcell.key
        path = "/".join(str(p) for p in self._path)
        return f"<OpaqueRef {label}{'/' + path if path else ''}>"

    def send(self, event: Any = None) -> None:
        raise CapabilityError("send to", "opaque", "a builder reference")


def bind(frame: BuilderFrame, value: Any, inputs: list[str]) -> Any:
    """Turn a helper argument into binding JSON; collect input keys for the cause."""
    mark = len(inputs)
    bound = _bind_plain(frame, value, inputs)
    if bound is NotImplemented:
        del inputs[mark:]  # the walk calls the hook on the same refs again, in the same order
        bound = to_json_value(value, hook=lambda v: _bind_hook(frame, inputs, v))
    return bound


def _bind_hook(frame: BuilderFrame, inputs: list[str], v: Any) -> Any:
    """The ``to_json_value`` hook of ``bind``: refs become aliases, cells links."""
    if isinstance(v, OpaqueRef):
        return _alias(frame, inputs, v)
    if isinstance(v, Cell):
        if v._id is None:
            raise CauseError(
                "a Cell.of(...) created outside the pattern cannot be an input: create it "
                "inside the pattern body, or give it an identity with rt.get_cell(cause)"
            )
        inputs.append(v._id + ("/" + "/".join(map(str, v._path)) if v._path else ""))
        return v.get_as_link()
    return NotImplemented


def _alias(frame: BuilderFrame, inputs: list[str], v: OpaqueRef[Any]) -> dict[str, Any]:
    """A ref as a binding: an alias to its cell (captured first if of an outer frame)."""
    ref = v if v._frame is frame or frame.owns(v._bcell) else frame.capture(v)
    ref._bcell.connected = True
    v._bcell.connected = True
    key = ref._bcell.key
    path = ref._path
    inputs.append(key + "/" + "/".join(map(str, path)) if path else key)
    return frame.alias(key, tuple(path))


def _plain_ref(v: Any) -> bool:
    """A ref whose alias ``to_json_value`` would leave as is (a path of str/int)."""
    if type(v) is not OpaqueRef:
        return False
    path = v._path
    return not path or all(type(p) is str or type(p) is int for p in path)


def _bind_plain(frame: BuilderFrame, value: Any, inputs: list[str]) -> Any:
    """``bind`` for the usual helper argument without the generic walk, or ``NotImplemented``.

    Handles plain containers (exact dict with string keys, list, tuple), plain
    scalars and refs with a plain path, which is what a lift's arguments and a
    body's result are; ``to_json_value`` normalising and checking every value was
    most of the cost per node.  The stack visits items in the generic walk's
    order, so captures and input keys come in the same order.  Anything else,
    and a container met twice, is left to the generic walk.
    """
    t = type(value)
    if t is list or t is tuple:  # a lift's args: scalars and refs, checked before any alias
        for item in value:
            ti = type(item)
            if not (ti is str or ti is int or ti is bool or item is None or _plain_ref(item)):
                break
        else:
            items = value.copy() if t is list else list(value)  # (copy: an exact-size list)
            for i in range(len(items) - 1, -1, -1):
                if type(items[i]) is OpaqueRef:
                    items[i] = _alias(frame, inputs, items[i])
            return items
    elif t is dict and not value:
        return {}
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    seen: set[int] = set()
    while stack:
        parent, key, item = stack.pop()
        t = type(item)
        if t is str or t is int or t is bool or item is None:
            parent[key] = item
        elif t is OpaqueRef:
            if not _plain_ref(item):
                return NotImplemented
            parent[key] = _alias(frame, inputs, item)
        elif t is dict or t is list or t is tuple:
            ident = id(item)
            if ident in seen:
                return NotImplemented
            seen.add(ident)
            if t is dict:
                out: dict[str, Any] = {}
                parent[key] = out
                for k, v in item.items():
                    if type(k) is not str:
                        return NotImplemented
                    out[k] = None  # placeholder: keep the key order of the input
                    stack.append((out, k, v))
            else:
                lst: list[Any] = [None] * len(item)
                parent[key] = lst
                for i, v in enumerate(item):
                    stack.append((lst, i, v))
        elif t is float and item - item == 0.0:  # finite: as to_json_value normalises it
            integral = item.is_integer() and abs(item) < 2**53
            parent[key] = 0 if item == 0.0 else int(item) if integral else item
        else:
            return NotImplemented
    return root[0]


def closure_inputs(fn: Callable[..., Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a function's closure into captured refs/cells and constants."""
    refs: dict[str, Any] = {}
    constants: dict[str, Any] = {}
    code = getattr(fn, "__code__", None)
    closure = getattr(fn, "__closure__", None)
    if code is None or not closure:
        return refs, constants
    for name, cell in zip(code.co_freevars, closure, strict=True):
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        is_ref = isinstance(value, Cell) and (isinstance(value, OpaqueRef) or value._id is not None)
        if is_ref or _holds_refs(value):
            refs[name] = value
        else:
            constants[name] = impls.constant_json(value)
    return refs, constants


def _holds_refs(value: Any) -> bool:
    if isinstance(value, dict | list | tuple):
        stack = [value]
        while stack:
            v = stack.pop()
            if isinstance(v, Cell):
                return True
            if isinstance(v, dict):
                stack.extend(v.values())
            elif isinstance(v, list | tuple):
                stack.extend(v)
    return False


def _one_input(binding: Any) -> bool:
    """``{"args": [ref], "kwargs": {}}``: the single input already says everything."""
    if type(binding) is not dict or len(binding) != 2 or binding.get("kwargs") != {}:
        return False
    args = binding.get("args")
    return type(args) is list and len(args) == 1 and type(args[0]) is dict \
        and "$alias" in args[0]


def cause_config_of(config: Any, binding: Any) -> Any:
    """The ``config`` cause component: the helper's options plus every literal argument.

    The binding's shape (which input goes where, and every literal beside them:
    a ``fmt`` template, an ``if_else`` branch, ``scale(x, 3)``'s ``3``) decides
    behaviour, so it is part of the cause.  Refs in it stay aliases here; the
    planner replaces each by the concrete id it names, so no local key (which
    shifts when unrelated nodes are added) reaches an id.
    """
    if binding is None or binding == {} or _one_input(binding):
        return config
    if config is None:
        return {"binding": binding}
    if isinstance(config, dict):
        return {**config, "binding": binding}
    return {"options": config, "binding": binding}


def add_node(
    frame: BuilderFrame,
    helper: str,
    module: dict[str, Any],
    binding: Any,
    inputs: list[str],
    impl: str | None,
    config: JSON,
    schema: Any,
    *,
    stream: bool = False,
    name: str | None = None,
    initial: Any = MISSING,
    normalized: bool = False,
    cause_config: Any = MISSING,
) -> OpaqueRef[Any]:
    """Record a node and its output cell; return a ref to the output.

    ``normalized``: ``binding`` is made of ``bind`` results (plain JSON already), so
    the pattern hash need not check it (see ``_graph_digest``).  ``cause_config``
    is the ``config`` component of the output's cause (SPEC §6); by default the
    node's ``config`` plus the shape of its binding (see ``cause_config_of``).
    """
    if cause_config is MISSING:
        cause_config = cause_config_of(config, binding)
    out = frame.new_cell(helper, impl, inputs, cause_config, schema, stream)
    if stream:
        out.initial = {"$stream": True}
    elif initial is not MISSING:
        out.initial = initial
    node = {"helper": helper, "module": module, "inputs": binding, "outputs": out.key}
    if config is not None:
        node["config"] = config
    if name:
        node["name"] = name
    if not normalized:
        frame.loose.append(len(frame.nodes))
    frame.nodes.append(node)
    return OpaqueRef(out, (), schema, frame)
