"""Reading a node's arguments: validators from annotations and the per-node argument reader."""

from __future__ import annotations

import functools
import inspect
import typing
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cellkernel.data import schema as schemas
from cellkernel.data.links import is_link, parse_link
from cellkernel.data.values import MISSING, SCALAR_TYPES, to_json_value
from cellkernel.errors import NodeError
from cellkernel.patterns import registry
from cellkernel.patterns.plan import derive_id, plan
from cellkernel.patterns.signatures import _hoist_defs, parameters
from cellkernel.reactive.cells import Cell, DocDict, is_scalar_record, materialize, set_hook
from cellkernel.reactive.resolution import resolve

if TYPE_CHECKING:
    from cellkernel.patterns.host import Host
    from cellkernel.store.transactions import Transaction


@functools.lru_cache(maxsize=4096)
def _fn_validators(fn: Callable[..., Any]) -> dict[str, Any]:
    """Validators a function's annotations imply: computed once per function, not per node."""
    return _param_validators(_fn_argument_schema(fn))


@functools.lru_cache(maxsize=4096)
def _marks(fn: Callable[..., Any]) -> dict[str, str]:
    """Per parameter: 'cell' (Cell[T] or unannotated handler state), 'plain' or 'any'."""
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception:
        hints = dict(getattr(fn, "__annotations__", {}))
    marks: dict[str, str] = {}
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return marks
    for name in params:
        ann = hints.get(name, inspect.Parameter.empty)
        if typing.get_origin(ann) is typing.Annotated:
            ann = typing.get_args(ann)[0]
        origin = typing.get_origin(ann) or ann
        if isinstance(origin, type) and issubclass(origin, Cell):
            marks[name] = "cell"
        elif ann is inspect.Parameter.empty or ann is typing.Any:
            marks[name] = "any"
        else:
            marks[name] = "plain"
    return marks


def _param_validators(schema: Any) -> dict[str, Any]:
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    out = {}
    for name, sub in props.items():
        if isinstance(sub, dict) and (set(sub) - {"default", "asCell", "asStream", "description"}):
            if "$defs" in schema:
                sub = {**sub, "$defs": schema["$defs"]}
            if not sub.get("asCell") and not sub.get("asStream"):
                out[name] = sub
    return out


def _fn_argument_schema(fn: Callable[..., Any]) -> Any:
    """The argument schema a lift's annotations imply (records carry none)."""

    try:
        props = {p.name: p.schema for p in parameters(fn)}
    except (TypeError, ValueError):
        return None
    schema: dict[str, Any] = {"type": "object", "properties": props}
    defs = _hoist_defs(props)
    if defs:
        schema["$defs"] = defs
    return schema


def _checkers(validators: dict[str, Any]) -> dict[str, Callable[[Any], bool]]:
    """Compiled argument checks by parameter name (parameters that accept anything left out)."""
    return {name: c for name, schema in validators.items()
            if (c := schemas.checker(schema)) is not None}


@functools.lru_cache(maxsize=4096)
def _fn_checkers(fn: Callable[..., Any]) -> dict[str, Callable[[Any], bool]]:
    """``_checkers`` of a function's annotations: once per function, not per node."""
    return _checkers(_fn_validators(fn))


def pair_checks(checkers: dict[str, Callable[[Any], bool]], names: tuple[str, ...],
                count: int) -> tuple[tuple[int, Callable[[Any], bool]], ...]:
    """(position, check) of each of ``count`` positional arguments that has a check.

    Fewer arguments than parameters, or more (``*args``): what there is is paired.
    """
    return tuple((i, checkers[name]) for i, name in zip(range(count), names, strict=False)
                 if name in checkers)


@functools.lru_cache(maxsize=4096)
def _fn_names(fn: Callable[..., Any]) -> tuple[str, ...]:
    """A function's parameter names, in order: one tuple per function, not per node."""
    return tuple(_marks(fn))


@functools.lru_cache(maxsize=4096)
def _fn_arg_checks(fn: Callable[..., Any], count: int
                   ) -> tuple[tuple[int, Callable[[Any], bool]], ...]:
    """``pair_checks`` of a function's annotations: one tuple per function and arity."""
    return pair_checks(_fn_checkers(fn), _fn_names(fn), count)


@functools.lru_cache(maxsize=4096)
def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn)


#: the binding ``_argument_reader`` parsed last, its space and its Link (see ``concretize``)
_last_parsed: tuple[Any, str, Any] = (None, "", None)


def _argument_reader(rt: Host, binding: Any, space: str, out_id: str, mark: str,
                     is_async: bool, reads: list[Any]) -> Callable[[Transaction], Any]:
    """A function that reads one lift argument in a run's transaction.

    Built once per node: the binding's link is parsed here, so a run resolves
    and reads it; a scalar read through a schema-less link is returned as is
    (what ``materialize`` would return), anything else goes through
    ``materialize``.  ``Cell[T]`` parameters get a Cell on the link.

    Appends to ``reads`` the address a run reads first for this argument (a
    plain link's target), or None when that is not known before the run.
    """
    if not is_link(binding):
        if binding is None or type(binding) in SCALAR_TYPES:
            return lambda _tx: binding
        reads.append(None)  # materialize reads what the value links to: not known here
        return lambda tx: materialize(rt, tx, binding, space, out_id, (), None, True, False)
    global _last_parsed
    last = _last_parsed
    if last[0] is binding and last[1] == space:  # nodes of one start share their links
        link = last[2]
    else:
        link = parse_link(binding, space)
        _last_parsed = (binding, space, link)
    if mark == "cell":
        reads.append(None)  # the lift reads the cell itself, if at all
        return lambda tx: Cell(rt, link.space, link.id, link.path, None, None if is_async else tx)
    reads.append((link.space, link.id, link.path))
    return _LinkReader(rt, link.space, link.id, link.path, link.schema)


class _LinkReader:
    """Reads one lift argument bound to a link, in a run's transaction.

    A slotted object rather than a closure (one per argument of every node).
    The usual binding is one key of a plain document (the instance's argument):
    a scalar there is returned as is, a link to a whole document of scalars
    becomes a ``DocDict``; anything else goes through ``resolve`` and
    ``materialize``, which is what they would make of it.
    """

    __slots__ = ("id", "one_hop", "parsed", "path", "rt", "schema", "space")

    def __init__(self, rt: Host, space: str, entity_id: str, path: Any, schema: Any) -> None:
        self.rt = rt
        self.space = space
        self.id = entity_id
        self.path = path
        self.schema = schema
        # One key (not "/") of a document: a stored link at the root would make it MISSING.
        self.one_hop = schema is None and (not path or (len(path) == 1 and path[0] != "/"))
        #: the last inner link met, and its parse
        self.parsed: tuple[Any, Any] = (None, None)

    def __call__(self, tx: Transaction) -> Any:
        rt, link_space, link_id, link_path = self.rt, self.space, self.id, self.path
        if self.one_hop:
            value = tx.read(link_space, link_id, link_path)  # tracked, as resolve does
            if value is not MISSING:
                if type(value) in SCALAR_TYPES:
                    return value
                if type(value) is dict and is_link(value):  # e.g. a map element's document
                    parsed = self.parsed
                    if value is parsed[0]:
                        inner = parsed[1]
                    else:
                        inner = parse_link(value, link_space)
                        self.parsed = (value, inner)
                    if not inner.path and inner.schema is None:
                        # a whole document of scalars: what materialize makes of it, directly
                        target = tx.read(inner.space, inner.id, ())  # tracked, as resolve does
                        if is_scalar_record(target):
                            return DocDict(target, Cell(rt, inner.space, inner.id, (), None))
                    sp, eid, p, seen_schema = resolve(tx, inner.space, inner.id, inner.path)
                    schema = seen_schema if seen_schema is not None else inner.schema
                    value = tx.read(sp, eid, p, track=False)
                    if schema is None and type(value) in SCALAR_TYPES:
                        return value
                    return materialize(rt, tx, value, sp, eid, p, schema, True, True)
                # no link on the way: what resolve would find, without reading it again
                return materialize(rt, tx, value, link_space, link_id, link_path, None, True, True)
        sp, eid, p, seen_schema = resolve(tx, link_space, link_id, link_path)
        value = tx.read(sp, eid, p, track=False)
        schema = self.schema if self.schema is not None else seen_schema
        if schema is None and type(value) in SCALAR_TYPES:
            return value
        return materialize(rt, tx, value, sp, eid, p, schema, True, True)


class InputRefusals:
    """A lift's runs skipped because an input fails its schema, recorded as ``NodeError``s.

    ``refuse`` records one ``NodeError`` (its error a ``ValueError`` naming the
    input, the value and the expected schema) in ``rt.errors``, and keeps it as
    ``failing`` (also on the node, as ``node.input_error``); the same refusal
    again is not recorded twice.  ``clear`` removes it once the inputs are valid.
    """

    __slots__ = ("failing", "key", "name", "node", "rt", "validators")

    def __init__(self, rt: Any, node: Any, name: str, validators: dict[str, Any]) -> None:
        self.rt = rt
        self.node = node
        self.name = name
        self.validators = validators
        self.failing: Any = None
        self.key: Any = None

    def refuse(self, param: str, value: Any) -> None:
        schema = self.validators.get(param)
        key = (param, schemas.canonical(_plainish(value)))
        if self.failing is not None and key == self.key:
            return
        self.clear()
        shown = schemas.canonical(schema)
        error = ValueError(
            f"lift {self.name!r}: input {param!r} is {value!r:.100}, which does not match "
            f"its schema {shown[:200]}; the run was skipped"
        )
        action = self.node.actions[0] if self.node.actions else None
        failure = NodeError(
            action.node if action is not None else self.node.record["id"], error,
            pattern=action.pattern if action is not None else None,
            space=action.space if action is not None else None,
            name=self.name,
        )
        self.failing, self.key = failure, key
        self.node.input_error = failure
        self.rt._record_error(failure)

    def clear(self) -> None:
        failing, self.failing, self.key = self.failing, None, None
        if failing is None:
            return
        self.node.input_error = None
        errors = self.rt.errors
        for i, error in enumerate(errors):
            if error is failing:
                del errors[i]
                break


def _plainish(value: Any) -> Any:
    try:
        return to_json_value(
            value, hook=lambda v: repr(v) if isinstance(v, Cell) else NotImplemented
        )
    except (TypeError, ValueError):
        return repr(value)


# ---------------------------------------------------------------------------
# the schema of the document a write lands in (SPEC §3: every write is checked)


class SchemaIndex:
    """Per runner: document -> (owning instance, its pattern hash, the document's schema).

    Filled as instances start (``note_instance``, called by the runner), so a write
    costs one lookup, however many instances run; an instance's entries leave with
    it (``forget_instance``).  It lives on its runner (``Runner.schema_index``), so
    a closed runtime takes it along.
    """

    __slots__ = ("docs", "owned", "waiting")

    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], tuple[Any, str | None, Any]] = {}
        #: per instance (by id, while indexed): the keys it owns in ``docs``
        self.owned: dict[int, list[tuple[str, str]]] = {}
        #: instances whose pattern could not be found yet (looked at again on a miss)
        self.waiting: list[Any] = []


def _index_instance(index: SchemaIndex, runner: Any, instance: Any,
                    ids: dict[str, str] | None = None) -> bool:
    """Note the schemas of ``instance``'s argument and state documents; False if unknown yet."""
    digest = instance.pattern_hash
    pattern = registry.registered_pattern(digest) if digest else None
    if pattern is None:
        return False
    graph = pattern.graph
    space, result_id = instance.space, instance.result_id
    arg_schema = graph.get("argumentSchema")
    arg_id = instance.argument_id or derive_id({"parent": result_id, "helper": "argument"})
    owned = index.owned.setdefault(id(instance), [])
    index.docs[(space, arg_id)] = (instance, digest, arg_schema or None)
    owned.append((space, arg_id))
    state = _state_cells(pattern)
    if state:
        if ids is None:
            ids, _records, _cells = plan(runner.rt, graph, result_id, space)
        for cell in state:
            cell_id = ids.get(cell["key"])
            if cell_id is not None:
                index.docs[(space, cell_id)] = (instance, digest, cell["schema"])
                owned.append((space, cell_id))
    return True


def _state_cells(pattern: Any) -> list[dict[str, Any]]:
    """A pattern's state cells that carry a schema (once per pattern: graphs never change)."""
    known = _state_by_pattern.get(pattern)
    if known is None:
        known = _state_by_pattern[pattern] = [
            c for c in pattern.graph.get("cells", [])
            if c.get("helper") == "cell" and c.get("schema")]
    return known


#: pattern -> its state cells with a schema; weak, so a dropped pattern leaves nothing
_state_by_pattern: weakref.WeakKeyDictionary[Any, list[dict[str, Any]]] = (
    weakref.WeakKeyDictionary())


def note_instance(runner: Any, instance: Any, ids: dict[str, str] | None = None) -> None:
    """Index the schemas of an instance that just started (or re-ran with a new pattern).

    ``ids`` are the instance's planned ids when the caller has them (a start).
    """
    index: SchemaIndex = runner.schema_index
    if not _index_instance(index, runner, instance, ids):
        index.waiting.append(instance)


def forget_instance(runner: Any, instance: Any) -> None:
    """Drop a stopped instance's entries (its documents have no schema to keep)."""
    index: SchemaIndex = runner.schema_index
    for key in index.owned.pop(id(instance), ()):
        hit = index.docs.get(key)
        if hit is not None and hit[0] is instance:
            del index.docs[key]


def landing_schema(rt: Any, space: str, entity_id: str) -> Any:
    """The schema of a running instance's argument or state document, else None."""
    runner = getattr(rt, "_runner", None)  # no runner yet: no instance, no schema
    if runner is None:
        return None
    index: SchemaIndex = runner.schema_index
    hit = index.docs.get((space, entity_id))
    if hit is None and index.waiting:
        waiting, index.waiting = index.waiting, []
        for instance in waiting:
            if not instance.stopped:
                note_instance(instance.runner, instance)
        hit = index.docs.get((space, entity_id))
    if hit is None:
        return None
    instance, digest, schema = hit
    if instance.stopped:
        return None
    if instance.pattern_hash != digest:  # re-run with another pattern: its schemas now
        _index_instance(index, instance.runner, instance)
        hit = index.docs.get((space, entity_id))
        return hit[2] if hit is not None and hit[1] == instance.pattern_hash else None
    return schema


set_hook("landing_schema", landing_schema)
