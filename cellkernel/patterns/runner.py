"""The runner: makes patterns live, keeps them live, and brings them back.

Running a pattern is three steps, all driven by a *node record* list that is
also the stored graph snapshot (SPEC §7):

1. **plan** — turn the pattern's cause components into concrete entity ids
   (SPEC §6) and its bindings into links;
2. **setup** — in one transaction, write the argument (defaults merged under
   it on first run), initial state that does not exist yet, the result
   document (fields are write redirects) and the snapshot in its metadata;
3. **start** — start every node record not already running; stop the ones
   that vanished (teardown).

``resume`` skips steps 1-2: it reads the snapshot and starts its records, so
the author function never runs again.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import json
import logging
import traceback
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cellkernel.data.links import is_link, make_link, parse_link
from cellkernel.data.values import MISSING, json_equal, to_json_value
from cellkernel.errors import (
    CapabilityError,
    CauseError,
    InstanceStoppedError,
    StoreError,
    UnknownImplementationError,
)
from cellkernel.patterns import registry
from cellkernel.patterns.arguments import (
    InputRefusals,
    SchemaIndex,
    _argument_reader,
    _checkers,
    _fn_arg_checks,
    _fn_checkers,
    _fn_names,
    _fn_validators,
    _is_async,
    _LinkReader,
    _marks,
    _param_validators,
    forget_instance,
    note_instance,
    pair_checks,
)
from cellkernel.patterns.builder import Pattern
from cellkernel.patterns.curry import merge_argument, resolve_self
from cellkernel.patterns.gc_pause import collector_paused
from cellkernel.patterns.instances import Instance, RunningNode, RuntimeFrame
from cellkernel.patterns.lift_plans import (
    NO_STASH,
    NOTHING,
    Spec,
    Stash,
    follow_links,
    lift_plan,
    pure_function,
)
from cellkernel.patterns.map_filter import CollectionRun, FilterCollect
from cellkernel.patterns.materialize import as_pattern
from cellkernel.patterns.plan import (
    concretize,
    derive_id,
    extract_defaults,
    instance_count_id,
    instance_entry_id,
    merge_under,
    pattern_doc_cause,
    plan,
    space_root_id,
)
from cellkernel.patterns.run_context import rebind, runtime_frame
from cellkernel.patterns.sigils import identity
from cellkernel.patterns.snapshot import GraphSnapshot
from cellkernel.reactive.cells import Cell, materialize
from cellkernel.reactive.scheduler import KEYED, Action, EventHandler

if TYPE_CHECKING:
    from cellkernel.patterns.host import Host
    from cellkernel.store.transactions import Transaction


GRAPH_VERSION = 1







# ---------------------------------------------------------------------------
# plan


















# ---------------------------------------------------------------------------
# running nodes


































log = logging.getLogger("cellkernel.patterns.runner")

class Runner:
    """Starts, updates, resumes and stops pattern instances of one runtime."""

    def __init__(self, rt: Host) -> None:
        self.rt = rt
        self.instances: dict[tuple[str, str], Instance] = {}
        self._stopped_streams: set[tuple[str, str, tuple[str | int, ...]]] = set()
        #: the output of the map/filter/instantiate node whose run is creating children now
        self._creator: tuple[str, str, tuple[str | int, ...]] | None = None
        #: the schemas writes to instance documents are checked against (``arguments``)
        self.schema_index = SchemaIndex()
        #: retired map/filter children whose documents go once the runtime is quiet
        self._released: list[Instance] = []
        rt.scheduler.on_quiet.append(self._release_stopped)

    # -- public ---------------------------------------------------------------

    def run(self, pattern: Any, argument: Any = None, cause: Any = None) -> Cell[Any]:

        if not isinstance(pattern, Pattern):
            pattern = self._as_pattern(pattern)
        if cause is None:
            cause = {"run": uuid.uuid4().hex}
        result_id = derive_id(cause)
        with collector_paused(self.rt.pause_gc):
            tx = self.rt._begin()
            try:
                self._refuse_non_instance(tx, cause, result_id)
                instance = self._run(pattern, argument, result_id=result_id, tx=tx, parent=None)
                # the cause a user gave, so a mistyped ``resume`` can suggest it (a label only)
                if "cause" not in (tx.document(instance.space, result_id).meta or {}):
                    with contextlib.suppress(ValueError, TypeError):
                        tx.set_meta(instance.space, result_id, "cause", to_json_value(cause))
            except BaseException:
                tx.abort()
                self._rollback_failed_start(result_id)
                raise
            self.rt._commit(tx)
        return Cell(self.rt, instance.space, result_id, (), pattern.result_schema or None)

    def _refuse_non_instance(self, tx: Transaction, cause: Any, result_id: str) -> None:
        """Raise ``CauseError`` when ``cause`` names a stored document that is no instance.

        ``rt.get_cell("x")`` and ``rt.run(P, cause="x")`` derive the same id: running
        there would overwrite the cell with the result (and its argument would then
        link to itself).  Every instance's result carries its ``graph`` snapshot.
        """
        space = self.rt.space
        if tx.exists(space, result_id) and "graph" not in (tx.document(space, result_id).meta
                                                            or {}):
            raise CauseError(
                f"rt.run: the cause {cause!r} names a stored document that is not an "
                f"instance (id {result_id}; a cell from get_cell or .for_ with the same "
                "cause has that id): running there would overwrite it, so nothing was "
                "written; give the instance another cause"
            )

    def _unknown_instance(self, cause_or_id: Any, result_id: str, space: str) -> LookupError:
        """What ``resume`` says when nothing is stored there: the cause, and near ones."""
        tx = self.rt.read_tx()
        known: list[str] = []
        for entry in self.listed_instances(space):
            if not is_link(entry):
                continue
            meta = tx.document(space, parse_link(entry, space).id).meta or {}
            if "cause" in meta:
                known.append(json.dumps(meta["cause"]) if not isinstance(meta["cause"], str)
                             else meta["cause"])
        given = cause_or_id if isinstance(cause_or_id, str) else json.dumps(cause_or_id,
                                                                            default=str)
        near = difflib.get_close_matches(given, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else (
            f"; known instances: {', '.join(repr(k) for k in known[:5])}" if known else
            "; no instance has been run in this space yet")
        return LookupError(f"nothing to resume for {given!r} in {space} (id {result_id}){hint}")

    def _as_pattern(self, value: Any) -> Pattern:

        if isinstance(value, Pattern):
            return value
        factory = getattr(value, "pattern", None)
        if isinstance(factory, Pattern):
            return factory
        raise TypeError(f"rt.run() needs a Pattern, got {type(value).__name__}")

    def _rollback_failed_start(self, result_id: str) -> None:
        instance = self.instances.get((self.rt.space, result_id))
        if instance is not None and instance.generation == 1:
            instance.stop()

    def resume(self, cause_or_id: Any) -> Cell[Any]:
        is_id = isinstance(cause_or_id, str) and cause_or_id.startswith("of:")
        result_id = cause_or_id if is_id else derive_id(cause_or_id)
        space = self.rt.space
        existing = self.instances.get((space, result_id))
        if existing is not None:
            return existing.result
        with collector_paused(self.rt.pause_gc):
            tx = self.rt._begin()
            try:
                if "graph" not in (tx.document(space, result_id).meta or {}):
                    raise self._unknown_instance(cause_or_id, result_id, space)
                instance = self._resume(result_id, space, tx, None)
            except BaseException:
                tx.abort()
                # a nested instance that fails to resolve must not leave its parent half started
                partial = self.instances.get((space, result_id))
                if partial is not None:
                    partial.stop()
                raise
            self.rt._commit(tx)
        return instance.result

    def stop(self, result: Cell[Any]) -> None:
        instance = self.instances.get((result.space or self.rt.space, result.entity_id or ""))
        if instance is not None:
            instance.stop()

    def stop_all(self) -> None:
        for instance in list(self.instances.values()):
            instance.stop()

    def instance_of(self, result: Cell[Any]) -> Instance | None:
        return self.instances.get((result.space or self.rt.space, result.entity_id or ""))

    def snapshot(self, result: Cell[Any]) -> GraphSnapshot:
        tx = self.rt.read_tx()
        doc = tx.document(result.space or self.rt.space, result.entity_id or "")
        graph = doc.meta.get("graph") if doc.meta else None
        if graph is None:
            raise LookupError(f"no graph snapshot stored on {result.entity_id}")
        return GraphSnapshot.model_validate(graph)

    def instance_stopped(self, instance: Instance) -> None:
        """An instance stopped: forget the schemas of its documents."""
        forget_instance(self, instance)

    def _retire(self, child: Instance) -> None:
        """Stop a map/filter child whose element left the list; its documents go later.

        Its own children (a nested map's) go with it.  Stopping an instance
        for any other reason (``rt.stop``, closing) keeps every document, so a
        resume finds the state it left.
        """
        subtree = [child]
        for instance in subtree:  # grows while walked: iterative, however deep
            subtree.extend(instance.children.values())
        child.stop()
        self._released.extend(subtree)

    def _release_stopped(self) -> None:
        """Delete the documents of map/filter children stopped in the settle just ended.

        A child started again meanwhile (its element came back) keeps them.  A
        store without ``release`` keeps everything; a failing release is logged
        and the documents stay.
        """
        released, self._released = self._released, []
        release = getattr(self.rt.store, "release", None)
        if not released or release is None:
            return
        by_space: dict[str, list[str]] = {}
        for instance in released:
            if (instance.space, instance.result_id) in self.instances:
                continue
            by_space.setdefault(instance.space, []).extend(instance.owned_docs)
        for space, entity_ids in by_space.items():
            try:
                release(space, entity_ids)
            except StoreError as exc:
                log.warning("could not release %d documents of stopped children: %s",
                            len(entity_ids), exc)
                continue
            self.rt.scheduler.forget_documents(space, entity_ids)

    def unhandled_event(self, stream: tuple[str, str, tuple[str | int, ...]], event: Any) -> None:
        if stream in self._stopped_streams:
            raise InstanceStoppedError(
                f"the instance owning stream {stream[1]} is stopped; its event was not delivered"
            )

    # -- setup -------------------------------------------------------------------

    def _argument_json(self, argument: Any, result_id: str, space: str, tx: Transaction) -> Any:
        def hook(v: Any) -> Any:
            if isinstance(v, Cell):
                if v.capability == "opaque":
                    raise CapabilityError("pass", "opaque", "a builder reference as a run argument")
                if v._id is None:
                    v._connect(self.rt, space, {"argument": result_id, "cell": v._initial})
                    if not tx.exists(space, v._id):  # type: ignore[arg-type]
                        tx.write(space, v._id, (), v._initial)  # type: ignore[arg-type]
                return v.get_as_write_redirect_link(base_space=space)
            return NotImplemented

        return to_json_value(argument, hook=hook)

    def _run(self, pattern: Any, argument: Any, *, result_id: str, tx: Transaction,
             parent: Instance | None, owner: RunningNode | None = None,
             space: str | None = None, self_pattern: Pattern | None = None,
             plain_argument: bool = False) -> Instance:
        """Start or update the instance ``result_id`` of ``pattern``.

        ``plain_argument``: the argument is JSON already, with no cells in it (a
        map child's, built from stored values), so it is not converted again.

        ``self_pattern`` is what ``SELF.factory`` means inside it: the pattern
        itself, except for a map or filter callback's instance, where it is the
        pattern whose body the callback was written in (SPEC §4 is silent; this is
        what a recursive ``items.map(lambda it: instantiate(SELF.factory, ...))``
        needs).
        """

        if not isinstance(pattern, Pattern):
            pattern = self._as_pattern(pattern)
        space = space or (parent.space if parent is not None else self.rt.space)
        graph = pattern.graph
        registry.register_pattern(pattern)

        argument = merge_argument(pattern, argument)  # curried arguments (SPEC §8)
        ids, records, snap_cells = plan(self.rt, graph, result_id, space)
        me = self_pattern if self_pattern is not None else pattern
        records = resolve_self(records, pattern, me)  # SELF.factory markers
        key = (space, result_id)
        instance = self.instances.get(key)
        fresh = instance is None
        if instance is None:
            instance = Instance(self, result_id, space, parent)
            self.instances[key] = instance
            if parent is not None:
                (owner.children if owner is not None else parent.children)[result_id] = instance
            if parent is None or owner is None or owner.record["helper"] not in ("map", "filter"):
                self._register_instance(tx, space, result_id)
        instance.owned_docs = tuple(dict.fromkeys(ids.values()))
        instance.argument_id = ids["argument"]
        instance.self_pattern = me
        # argument: defaults merged under on first run; new values apply on re-runs
        arg_id = ids["argument"]
        given = (argument if plain_argument or argument is None
                 else self._argument_json(argument, result_id, space, tx))
        exists = tx.exists(space, arg_id)
        if not exists:
            value = merge_under(extract_defaults(graph.get("argumentSchema")), given)
            tx.write(space, arg_id, (), self._fresh(tx, value, plain_argument)
                     if value is not None else {})
        elif given is not None:
            current = tx.read(space, arg_id, (), track=False)
            if not json_equal(current, given):
                defaults = extract_defaults(graph.get("argumentSchema"))
                tx.write(space, arg_id, (),
                         self._fresh(tx, merge_under(defaults, given), plain_argument))
        # initial state that does not exist yet (state survives edits)
        for cell_key, initial in graph.get("initial", {}).items():
            cell_id = ids[cell_key]
            if not tx.exists(space, cell_id):
                tx.write(space, cell_id, (), initial)
        self._store_patterns(pattern, tx, space)
        # the result document: fields are write redirects
        result_value = resolve_self(concretize(graph["result"], ids, space), pattern, me)
        current = tx.read(space, result_id, (), track=False)
        if (
            isinstance(current, dict)
            and isinstance(result_value, dict)
            and "$NAME" in current
            and "$NAME" in result_value
        ):
            result_value["$NAME"] = current["$NAME"]
        if current is MISSING or not json_equal(current, result_value):
            tx.write(space, result_id, (), tx.hand_over(result_value))  # built for this write
        instance.generation += 1
        previous = instance.pattern_hash
        instance.pattern_hash = pattern.hash
        note_instance(self, instance, ids)  # the schemas its writes are checked against
        snapshot = self._snapshot_json(instance, pattern, records, snap_cells, ids, graph, tx,
                                       previous)
        # the snapshot is built for this write (its records are never changed in place)
        tx.set_meta(space, result_id, "graph", tx.hand_over(snapshot))
        # (two strings, built for this write: the store keeps the dict, not a copy)
        tx.set_source(space, result_id,
                      tx.hand_over({"pattern": pattern.hash, "name": pattern.name}))
        self._start(instance, records, tx)
        if fresh:
            self._resume_children(instance, tx)
        return instance

    @staticmethod
    def _fresh(tx: Transaction, value: Any, plain: bool) -> Any:
        """``value``, handed over to the store when it is a plain argument (``plain``).

        A map child's argument is a dict built for this write from stored values,
        schema defaults and links, all plain JSON that nobody changes: the memory
        store may keep it without walking it again (a scalar write starts a child).
        """
        return tx.hand_over(value) if plain else value

    def _remember_child(self, tx: Transaction, instance: Instance, node: RunningNode,
                        child_id: str) -> None:
        """Note a handler-made child in the parent's metadata (``children``: id -> node id)."""
        doc = tx.document(instance.space, instance.result_id)
        children = dict((doc.meta or {}).get("children") or {})
        children[child_id] = node.record["id"]
        tx.set_meta(instance.space, instance.result_id, "children", children)

    def _resume_children(self, instance: Instance, tx: Transaction) -> None:
        """Restart the handler-made children noted on ``instance`` (their nodes still exist)."""
        doc = tx.document(instance.space, instance.result_id)
        children = (doc.meta or {}).get("children") or {}
        for child_id, node_id in children.items():
            owner = instance.nodes.get(node_id)
            if owner is None or (instance.space, child_id) in self.instances:
                continue
            self._resume(child_id, instance.space, tx, instance, owner=owner)

    def _register_instance(self, tx: Transaction, space: str, result_id: str) -> None:
        """Append to the space's instance log (``wish("#all")``), in creation order.

        The log is append-only: one entry document per instance plus a counter, so
        the N-th start writes a constant amount however many instances exist. The
        result document's ``listed`` meta (its index) keeps a re-run from listing twice.
        """
        if "listed" in (tx.document(space, result_id).meta or {}):
            return
        count_id = instance_count_id(space)
        count = tx.read(space, count_id, (), track=False)
        index = count if isinstance(count, int) else 0
        tx.write(space, instance_entry_id(space, index), (), make_link(space, result_id, ()))
        tx.write(space, count_id, (), index + 1)
        tx.set_meta(space, result_id, "listed", index)

    def listed_instances(self, space: str | None = None) -> list[dict[str, Any]]:
        """Links to every listed instance result of ``space``, in creation order."""
        space = space or self.rt.space
        tx = self.rt.read_tx()
        count = tx.read(space, instance_count_id(space), (), track=False)
        return [tx.read(space, instance_entry_id(space, i), (), track=False)
                for i in range(count if isinstance(count, int) else 0)]

    def _store_patterns(self, pattern: Pattern, tx: Transaction, space: str) -> None:
        """Store the pattern and every sub-pattern it references, for resume.

        The closure of a pattern is worked out once (``_pattern_closure``): a map
        starts a child per element, each storing the same few documents.
        """
        for doc_id, p in _pattern_closure(pattern):
            if not tx.exists(space, doc_id):
                # a pattern's graph is never changed once built
                tx.write(space, doc_id, (), tx.hand_over({"name": p.name, "graph": p.graph}))

    def pattern_by_hash(self, digest: str, space: str) -> Pattern:

        found: Pattern | None = registry.registered_pattern(digest)
        if found is not None:
            return found
        tx = self.rt.read_tx()
        stored = tx.read(space, derive_id(pattern_doc_cause(digest)), (), track=False)
        if stored is MISSING or not isinstance(stored, dict):
            raise UnknownImplementationError(
                f"pattern {digest[:12]}… is neither defined in this process nor stored in {space}"
            )
        graph = stored.get("graph")
        if not isinstance(graph, dict):
            raise UnknownImplementationError(
                f"the pattern document for {digest[:12]}… in {space} holds no graph"
            )
        made = Pattern(None, graph, str(stored.get("name") or "pattern"))
        if made.hash != digest:  # stored data is untrusted: it is named by its content
            raise UnknownImplementationError(
                f"the pattern document for {digest[:12]}… in {space} "
                "holds a graph with another hash")
        registry.register_pattern(made)
        return found if (found := registry.registered_pattern(digest)) is not None else made

    def _snapshot_json(self, instance: Instance, pattern: Pattern, records: list[dict[str, Any]],
                       cells: list[dict[str, Any]], ids: dict[str, str], graph: dict[str, Any],
                       tx: Transaction, previous: str | None) -> dict[str, Any]:
        links: list[dict[str, str]] = []
        for record in records:
            for source in record["inputs"]:
                links.append({"from": source, "to": record["outputs"][0], "kind": "input"})
        result = graph["result"]
        if isinstance(result, dict):
            for name, value in result.items():
                alias = value.get("$alias") if isinstance(value, dict) else None
                if alias is not None:
                    links.append({"from": instance.result_id, "to": ids[alias["cell"]],
                                  "kind": "redirect", "name": name})
                    for cell in cells:
                        if cell["id"] == ids[alias["cell"]] and not cell.get("name"):
                            cell["name"] = name
        old = tx.document(instance.space, instance.result_id).meta.get("graph")
        snapshot: dict[str, Any] = {
            "graphVersion": GRAPH_VERSION,
            "generation": instance.generation,
            "pattern": pattern.hash,
            "patternName": pattern.name,
            "result": instance.result_id,
            "cells": cells,
            "nodes": records,
            "links": links,
        }
        if isinstance(old, dict) and old.get("nodes") is not None:
            snapshot["generation"] = int(old.get("generation", 0)) + 1
            instance.generation = snapshot["generation"]
            if old.get("pattern") != pattern.hash:
                snapshot["predecessor"] = {
                    "generation": old.get("generation"),
                    "pattern": old.get("pattern"),
                    "nodes": [n["id"] for n in old.get("nodes", [])],
                    "cells": [c["id"] for c in old.get("cells", [])],
                }
            elif "predecessor" in old:
                snapshot["predecessor"] = old["predecessor"]
        return snapshot

    def _resume(self, result_id: str, space: str, tx: Transaction, parent: Instance | None,
                owner: RunningNode | None = None) -> Instance:

        doc = tx.document(space, result_id)
        graph = doc.meta.get("graph") if doc.meta else None
        if graph is None:
            raise LookupError(f"no instance with a stored graph snapshot at {result_id} in {space}")
        snapshot = GraphSnapshot.model_validate(graph)
        records = [n.model_dump(mode="json", by_alias=True, exclude_none=True)
                   for n in snapshot.nodes]
        # resolve every implementation before anything starts: unknown code runs nothing
        for record in records:
            self._implementation(record)
        instance = Instance(self, result_id, space, parent)
        instance.generation = snapshot.generation
        instance.pattern_hash = snapshot.pattern
        note_instance(self, instance)
        self.instances[(space, result_id)] = instance
        if parent is not None:
            (owner.children if owner is not None else parent.children)[result_id] = instance
        self._start(instance, records, tx, resume=True)
        self._resume_children(instance, tx)
        return instance

    # -- starting nodes ----------------------------------------------------------------

    def _implementation(self, record: dict[str, Any]) -> Callable[..., Any] | None:
        module = record["module"]
        kind = module.get("type")
        if kind == "python":
            return registry.resolve_function(module, self.rt.trust)
        if kind == "builtin":
            return registry.builtin(module["ref"])
        return None

    def _require_implementation(self, record: dict[str, Any]) -> Callable[..., Any]:
        fn = self._implementation(record)
        if fn is None:
            raise UnknownImplementationError(
                f"no implementation for {record['helper']} node {record.get('name')}"
            )
        return fn

    def _subscribe(self, instance: Instance, node: RunningNode, run: Callable[[Transaction], Any],
                   name: str, reads: list[tuple[str, str, tuple[str | int, ...]]] | None = None,
                   extra_writes: tuple[tuple[str, str, tuple[str | int, ...]], ...] = (),
                   plan: Any = None, incremental: bool = False, kind: str = "lift") -> Action:
        """Start a node's reactive action; it writes the node's output cell.

        A node started by a running lift, map, filter or instantiate (a child
        instance it creates) is also ordered as a writer of that node's output:
        whoever reads it reads through to the child's outputs, so it must run
        after the child has computed them, not once before with them empty.
        """
        record = node.record
        space = instance.space
        writes: list[tuple[str, str, tuple[str | int, ...]]] = [(space, record["outputs"][0], ())]
        writes.extend(extra_writes)
        if self._creator is not None:  # see ``_creating``
            writes.append(self._creator)
        action = Action(run, name=name, node=record["id"], pattern=instance.pattern_hash,
                        space=space, writes=writes, reads=reads or (), frame=record["id"],
                        kind=kind)
        action.plan = plan
        if incremental:  # told which read documents changed (``Action.changed``)
            action.changed = set()
        node.actions = (*node.actions, action)
        self.rt.scheduler.subscribe(action)
        return action

    @contextlib.contextmanager
    def _creating(self, space: str, out_id: str, path: tuple[str | int, ...] = ()
                  ) -> Iterator[None]:
        """Children started meanwhile are ordered before the readers of ``out_id``
        (at ``path``: a map child before the readers of its index only)."""
        previous, self._creator = self._creator, (space, out_id, path)
        try:
            yield
        finally:
            self._creator = previous

    def _start(self, instance: Instance, records: list[dict[str, Any]], tx: Transaction,
               resume: bool = False) -> None:
        wanted = {r["id"]: r for r in records}
        for node_id in [n for n in instance.nodes if n not in wanted]:
            instance.nodes.pop(node_id).stop(self)
        for record in records:
            kept = instance.nodes.get(record["id"])
            if kept is not None:
                if _same_behaviour(kept.record, record):
                    kept.record = record
                    continue
                # the same call site with new behaviour (an edited nested pattern or map
                # callback: SPEC §6 keeps their ids): restart it; its cells keep their state
                instance.nodes.pop(record["id"]).stop(self)
            running = RunningNode(record)
            instance.nodes[record["id"]] = running
            starter = _STARTERS.get(record["helper"], Runner._start_lift)
            starter(self, instance, running, tx, resume)

    def _start_lift(
        self, instance: Instance, node: RunningNode, tx: Transaction, resume: bool
    ) -> None:
        record = node.record
        fn = self._require_implementation(record)
        rt = self.rt
        space = instance.space
        out_id = record["outputs"][0]
        bindings = record["bindings"]
        curried = bindings.get("curried") or ()
        closure_b = bindings.get("closure")
        marks = _marks(fn)
        names = _fn_names(fn)
        schema = record.get("argumentSchema")
        checkers = _checkers(_param_validators(schema)) if schema else _fn_checkers(fn)
        refusals = InputRefusals(
            rt, node, record.get("name") or "lift",
            _param_validators(schema) if schema else _fn_validators(fn),
        )
        is_async = _is_async(fn)
        # Everything that depends only on the record is worked out once here, not per run:
        # links parsed, scalar constants kept, validators compiled (see ``_argument_reader``).
        reads: list[Any] = []  # in the order a run reads them: args, kwargs, closure
        # (tuples, kept per node: exact-size, and the empty one shared)
        args_r = tuple(
            _argument_reader(rt, b, space, out_id,
                             marks.get(names[i], "any") if i < len(names) else "any",
                             is_async, reads)
            for i, b in enumerate(bindings.get("args", []))
        )
        kwargs_r = tuple(
            (k, _argument_reader(rt, b, space, out_id, marks.get(k, "any"), is_async, reads))
            for k, b in bindings.get("kwargs", {}).items()
        )
        closure_r = tuple((k, _argument_reader(rt, b, space, out_id, "any", is_async, reads))
                          for k, b in (closure_b or {}).items())
        count = len(args_r) + len(curried)
        arg_checks = pair_checks(checkers, names, count) if schema else _fn_arg_checks(fn, count)
        kwarg_checks = {k: checkers[k] for k, _r in kwargs_r if k in checkers} or _NO_CHECKS
        plan = None
        if not kwargs_r and not closure_r and not is_async and pure_function(fn):
            specs = _plan_specs(bindings.get("args", []), args_r, curried, names, marks)
            if specs is not None:
                plan = lift_plan(fn, specs, arg_checks, refusals, space, out_id)
        stash = plan if plan is not None else NO_STASH  # (a plan stashes in itself)
        run = _LiftRun(self, instance, node, fn, args_r, curried, arg_checks, names, kwargs_r,
                       kwarg_checks, refusals, closure_r, stash, is_async, out_id)

        # Declared exactly (plain links only), the first run's reads are the declared ones
        # and the scheduler keeps the subscription it made here; else whole input documents.
        unknown = None in reads
        action = self._subscribe(instance, node, run, record.get("name") or "lift",
                                 self._declared_reads(record, space) if unknown else reads,
                                 plan=plan)
        if plan is not None:
            plan.action = action  # it may follow a link into a scalar's document
            plan.records = follow_links(fn)  # or into a document of scalars (a record)

    def _declared_reads(
        self, record: dict[str, Any], space: str
    ) -> list[tuple[str, str, tuple[str | int, ...]]]:
        return [(space, i, ()) for i in record.get("inputs", [])]

    async def _finish_async(self, coro: Any, out_id: str, space: str, node: RunningNode) -> None:
        try:
            result = await coro
        except Exception as exc:
            action = node.actions[0]
            self.rt.scheduler._record(action, exc, traceback.format_exc())
            return
        self.rt._write(lambda tx: self._write_output(tx, space, out_id, result))

    def _write_output(self, tx: Transaction, space: str, out_id: str, result: Any) -> None:
        t = type(result)
        if t is int or t is str or t is bool or result is None:
            # the common case, without the general write path: a scalar over a scalar
            current = tx.read(space, out_id, (), track=False)
            if type(current) is not dict:  # not a link, a stream or a document
                if type(current) is not t or current != result:  # json_equal, for a scalar
                    tx.write(space, out_id, (), result)
                return
        Cell(self.rt, space, out_id, (), None, tx)._set_in(tx, result)

    def _release_children(self, node: RunningNode, frame: RuntimeFrame) -> None:
        for child_id in [c for c in node.children if c not in frame.created]:
            node.children.pop(child_id).stop()

    def _start_handler(
        self, instance: Instance, node: RunningNode, tx: Transaction, resume: bool
    ) -> None:
        record = node.record
        fn = self._require_implementation(record)
        rt = self.rt
        space = instance.space
        out_id = record["outputs"][0]
        bindings = record["bindings"]
        state_b = bindings.get("state", {})
        closure_b = bindings.get("closure")
        curried = {int(i): v for i, v in bindings.get("curried") or []}
        marks = _marks(fn)
        names = list(marks)
        is_async = inspect.iscoroutinefunction(fn)

        def as_state(tx: Transaction | None, binding: Any, mark: str) -> Any:
            if is_link(binding):
                link = parse_link(binding, space)
                cell: Cell[Any] = Cell(rt, link.space, link.id, link.path, None, tx)
                if mark == "plain":
                    return cell.get()
                return cell
            if mark == "plain":
                return binding
            read_tx = tx if tx is not None else rt.read_tx()
            return materialize(rt, read_tx, binding, space, out_id, (), None, False, False)

        def on_event(tx: Transaction, event: Any) -> Any:
            tx.claim(space)  # a handler writes its own instance's space, never only another
            bound_tx = tx  # async too: its cells write the event's one transaction (issue 19)
            state = {k: as_state(bound_tx, b, marks.get(k, "any"))
                     for k, b in state_b.items() if k in marks}
            call = fn
            if closure_b:
                call = rebind(fn, {k: as_state(bound_tx, b, "cell") for k, b in closure_b.items()})
            args: list[Any] = [event]
            if 0 in curried:
                args = [curried[0]]
            for index, value in curried.items():
                if index > 0 and index < len(names):
                    state.setdefault(names[index], value)
            frame = RuntimeFrame(self, instance, node, tx,
                                 {"event": uuid.uuid4().hex, "node": record["id"]}, "handler")
            if is_async:  # the scheduler awaits it inside tx and commits when it returns
                return in_frame(call(*args, **state), frame)
            token = runtime_frame.set(frame)
            try:
                return call(*args, **state)  # children stop if tx never lands (instantiate)
            finally:
                runtime_frame.reset(token)

        async def in_frame(coro: Any, frame: RuntimeFrame) -> Any:
            token = runtime_frame.set(frame)  # the task's own context: reset is local to it
            try:
                return await coro
            finally:
                runtime_frame.reset(token)

        handler = EventHandler(on_event, (space, out_id, ()), name=record.get("name") or "handler",
                               node=record["id"], pattern=instance.pattern_hash,
                               is_async=is_async)
        node.handlers = (*node.handlers, handler)
        self._stopped_streams.discard(handler.stream)
        if not tx.exists(space, out_id):
            tx.write(space, out_id, (), {"$stream": True})
        rt.scheduler.add_handler(handler)

    def _start_pattern(
        self, instance: Instance, node: RunningNode, tx: Transaction, resume: bool
    ) -> None:
        record = node.record
        out_id = record["outputs"][0]
        if resume:
            with self._creating(instance.space, out_id):
                self._resume(out_id, instance.space, tx, instance, owner=node)
            return
        sub = self.pattern_by_hash(record["module"]["hash"], instance.space)
        # readers of the nested result read through to the child's cells: order them after
        # the child's nodes, or their first run sees the child's outputs not yet computed
        with self._creating(instance.space, out_id):
            self._run(sub, record["bindings"], result_id=out_id, tx=tx, parent=instance,
                      owner=node, space=instance.space)

    def _start_collection(
        self, instance: Instance, node: RunningNode, tx: Transaction, resume: bool
    ) -> None:
        run = CollectionRun(self, instance, node)  # patterns/map_filter.py
        reads = self._declared_reads(node.record, instance.space)
        self._subscribe(instance, node, run, run.mode, reads, kind=KEYED)
        if run.mode == "filter":  # its output: a second action, after the children
            collect = FilterCollect(run)
            collect.action = self._subscribe(instance, node, collect, "filter", reads,
                                             incremental=True)

    def _start_select(
        self, instance: Instance, node: RunningNode, tx: Transaction, resume: bool
    ) -> None:
        record = node.record
        rt = self.rt
        space = instance.space
        out_id = record["outputs"][0]
        b = record["bindings"]
        mode = record["helper"]

        def run(tx: Transaction) -> None:
            cond = materialize(rt, tx, b["cond"], space, out_id, (), None, True, False)
            if mode == "if_else":
                chosen = b["a"] if cond else b["b"]
            elif mode == "when":
                chosen = b["value"] if cond else b["cond"]
            else:  # unless
                chosen = b["cond"] if cond else b["value"]
            if is_link(chosen):
                link = parse_link(chosen, space)
                chosen = make_link(link.space, link.id, link.path, base_space=space)
            current = tx.read(space, out_id, (), track=False)
            if current is MISSING or not json_equal(current, chosen):
                tx.write(space, out_id, (), chosen)

        self._subscribe(instance, node, run, mode)

    def _start_instantiate(
        self, instance: Instance, node: RunningNode, tx: Transaction, resume: bool
    ) -> None:
        record = node.record
        rt = self.rt
        space = instance.space
        out_id = record["outputs"][0]
        b = record["bindings"]
        state: dict[str, Any] = {"hash": None}

        def run(tx: Transaction) -> None:

            value = materialize(rt, tx, b["pattern"], space, out_id, (), None, True, False)
            if value is None:
                return
            pattern = as_pattern(value, rt)
            key = identity(pattern)  # the pattern plus its curried arguments
            if key != state["hash"]:
                for child_id in list(node.children):
                    node.children.pop(child_id).stop()
                state["hash"] = key
            child_id = derive_id({"parent": out_id, "instantiate": key})
            if child_id not in node.children:
                with self._creating(space, out_id):
                    self._run(pattern, b.get("inputs") or {}, result_id=child_id, tx=tx,
                              parent=instance, owner=node, space=space)
            link = make_link(space, child_id, ())
            current = tx.read(space, out_id, (), track=False)
            if current is MISSING or not json_equal(current, link):
                tx.write(space, out_id, (), link)

        self._subscribe(instance, node, run, "instantiate")

    def _start_wish(
        self, instance: Instance, node: RunningNode, tx: Transaction, resume: bool
    ) -> None:
        record = node.record
        space = instance.space
        out_id = record["outputs"][0]
        query = record["config"]["query"]
        if query == "#all":
            self._start_wish_all(instance, node, tx)
            return
        if isinstance(query, str) and query.startswith("/"):
            path = [p for p in query.split("/") if p]
            target = make_link(space, space_root_id(space), path)
        else:
            target = {"error": f"unknown wish {query!r}"}
        current = tx.read(space, out_id, (), track=False)
        if current is MISSING or not json_equal(current, target):
            tx.write(space, out_id, (), target)

    def _start_wish_all(self, instance: Instance, node: RunningNode, tx: Transaction) -> None:
        """Keep a list of the space's instance results, grown from the append-only log.

        Only a live ``wish("#all")`` pays for the whole list (once per new instance);
        starting an instance never does. Entries are read as result Cells, not copies:
        the list holds the reader's own result too, and reading it deeply would go
        round in circles.
        """
        space = instance.space
        out_id = node.record["outputs"][0]
        list_id = derive_id({"wish": "#all", "of": out_id})
        count_id = instance_count_id(space)
        target = make_link(space, list_id, (), {"type": "array", "items": {"asCell": True}})
        seen: list[Any] = []

        def run(tx: Transaction) -> None:
            count = tx.read(space, count_id, ())
            count = count if isinstance(count, int) else 0
            if count < len(seen):  # the log never shrinks unless storage was replaced
                seen.clear()
            seen.extend(tx.read(space, instance_entry_id(space, i), (), track=False)
                        for i in range(len(seen), count))
            current = tx.read(space, list_id, (), track=False)
            if current is MISSING or not json_equal(current, seen):
                tx.write(space, list_id, (), list(seen))
            if not json_equal(tx.read(space, out_id, (), track=False), target):
                tx.write(space, out_id, (), target)

        self._subscribe(instance, node, run, "wish", [(space, count_id, ())],
                        extra_writes=((space, list_id, ()),))








#: the keyword checks of a lift with none (shared by every such node)
_NO_CHECKS: Mapping[str, Any] = MappingProxyType({})


class _LiftRun:
    """One lift node's general run: ``run(tx)`` reads its arguments, calls it, writes its output.

    A slotted object rather than a closure: one per node, and a closure over
    this many names costs a cell each (about 1 KB per node).
    """

    __slots__ = ("arg_checks", "args_r", "closure_r", "curried", "fn", "instance", "is_async",
                 "kwarg_checks", "kwargs_r", "names", "node", "out_id", "refusals", "runner",
                 "stash")

    def __init__(self, runner: Runner, instance: Instance, node: RunningNode,
                 fn: Callable[..., Any], args_r: tuple[Any, ...], curried: Sequence[Any],
                 arg_checks: tuple[tuple[int, Callable[[Any], bool]], ...],
                 names: tuple[str, ...], kwargs_r: tuple[tuple[str, Any], ...],
                 kwarg_checks: Mapping[str, Any], refusals: InputRefusals,
                 closure_r: tuple[tuple[str, Any], ...], stash: Stash,
                 is_async: bool, out_id: str) -> None:
        self.runner = runner
        self.instance = instance
        self.node = node
        self.fn = fn
        self.args_r = args_r
        self.curried = curried
        self.arg_checks = arg_checks
        self.names = names
        self.kwargs_r = kwargs_r
        self.kwarg_checks = kwarg_checks
        self.refusals = refusals
        self.closure_r = closure_r
        self.stash = stash
        self.is_async = is_async
        self.out_id = out_id

    def __call__(self, tx: Transaction) -> Any:
        args = [r(tx) for r in self.args_r]
        for index, value in self.curried:
            args.insert(index, value)
        refusals = self.refusals
        for i, check in self.arg_checks:
            if i < len(args) and not check(args[i]):
                refusals.refuse(self.names[i], args[i])  # a NodeError, the run skipped
                return None
        kwargs_r = self.kwargs_r
        if kwargs_r:
            kwargs = {k: r(tx) for k, r in kwargs_r}
            for k, check in self.kwarg_checks.items():
                if not check(kwargs[k]):
                    refusals.refuse(k, kwargs[k])
                    return None
        else:
            kwargs = {}
        if refusals.failing is not None:
            refusals.clear()  # the inputs are valid again
        call = self.fn
        if self.closure_r:
            call = rebind(call, {k: r(tx) for k, r in self.closure_r})
        runner, instance, node = self.runner, self.instance, self.node
        frame = RuntimeFrame(runner, instance, node, tx, node.record["id"], "lift")
        result = self.stash.take()  # what the plan computed before handing over, if it did
        if result is NOTHING:
            token = runtime_frame.set(frame)
            try:
                result = call(*args, **kwargs)
            finally:
                runtime_frame.reset(token)
        if self.is_async:
            return runner._finish_async(result, self.out_id, instance.space, node)
        runner._write_output(tx, instance.space, self.out_id, result)
        if node.children:
            runner._release_children(node, frame)
        return None


def _plan_specs(bindings: list[Any], readers: Sequence[Any], curried: Sequence[Any],
                names: Sequence[str], marks: dict[str, str]) -> list[Spec] | None:
    """Where a planned run reads each argument (``lift_plans``), or None: no plan.

    Covered: scalar constants and plain links to a document, one key of it or a
    deeper path of str keys and int indices (the links ``_argument_reader``
    parsed: its ``_LinkReader`` carries them); a ``Cell[...]`` parameter or a
    schema on the link is not.
    """
    specs: list[Spec] = []
    for i, binding in enumerate(bindings):
        if i < len(names) and marks.get(names[i], "any") == "cell":
            return None
        if not is_link(binding):
            if binding is not None and type(binding) not in (int, float, str, bool):
                return None
            specs.append((None, binding, None))
            continue
        link = readers[i]
        if type(link) is not _LinkReader or link.schema is not None:
            return None  # (a redirect is followed on reads like a plain link)
        if not link.path:
            specs.append((link.space, link.id, None))
        elif len(link.path) == 1 and type(link.path[0]) is str and link.path[0] != "/":
            specs.append((link.space, link.id, link.path[0]))
        elif all((type(p) is str and p != "/") or (type(p) is int and p >= 0)
                 for p in link.path):
            specs.append((link.space, link.id, tuple(link.path)))  # ``lift_plans._walk``
        else:
            return None
    for index, value in curried:
        specs.insert(index, (None, value, None))
    return specs


#: pattern -> its closure's pattern documents (id, weak reference to the pattern), when
#: every sub-pattern was registered (an unregistered one is looked for again next time).
#: Weak both ways, as the registry is: a dropped pattern leaves no entry behind.
_closures: weakref.WeakKeyDictionary[Pattern, list[tuple[str, weakref.ref[Pattern]]]] = (
    weakref.WeakKeyDictionary())


def _pattern_closure(pattern: Pattern) -> list[tuple[str, Pattern]]:
    """(document id, pattern) of ``pattern`` and every sub-pattern it references."""
    known = _closures.get(pattern)
    if known is not None:
        found: list[tuple[str, Pattern]] = []
        for doc_id, weak in known:
            sub = weak()
            if sub is None:
                break  # a sub-pattern went: work it out again
            found.append((doc_id, sub))
        else:
            return found
    closure: list[tuple[str, Pattern]] = []
    complete = True
    work = [pattern]
    seen: set[str] = set()
    while work:
        p = work.pop()
        if p.hash in seen:
            continue
        seen.add(p.hash)
        closure.append((derive_id(pattern_doc_cause(p.hash)), p))
        for node in p.graph["nodes"]:
            ref = None
            if node["helper"] == "pattern":
                ref = node["module"].get("hash", "")
            elif (node.get("config") and isinstance(node["config"], dict)
                  and "op" in node["config"]):
                ref = node["config"]["op"]
            if ref is None:
                continue
            sub = registry.registered_pattern(ref)
            if sub is None:
                complete = False
            else:
                work.append(sub)
    if complete:
        _closures[pattern] = [(doc_id, weakref.ref(p)) for doc_id, p in closure]
    return closure


def _same_behaviour(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether a kept node runs as before (same implementation and options)."""
    return bool(old["module"].get("hash") == new["module"].get("hash")
                and old.get("config") == new.get("config"))


_STARTERS: dict[str, Callable[[Runner, Instance, RunningNode, Any, bool], None]] = {
    "lift": Runner._start_lift,
    "computed": Runner._start_lift,
    "fmt": Runner._start_lift,
    "handler": Runner._start_handler,
    "pattern": Runner._start_pattern,
    "map": Runner._start_collection,
    "filter": Runner._start_collection,
    "if_else": Runner._start_select,
    "when": Runner._start_select,
    "unless": Runner._start_select,
    "instantiate": Runner._start_instantiate,
    "wish": Runner._start_wish,
}

__all__ = ["InstanceStoppedError", "Runner"]
