"""What a running pattern is made of: instances, their running nodes, the run-time frame.

A ``RuntimeFrame`` is the context of one run of a lift or handler: the cells it
creates (``PendingCell``) and the child instances it starts."""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from cellkernel.data.values import to_json_value
from cellkernel.patterns.plan import derive_id
from cellkernel.reactive.cells import Cell
from cellkernel.reactive.scheduler import Action, EventHandler

if TYPE_CHECKING:
    from cellkernel.patterns.factory_shapes import PatternShape
    from cellkernel.patterns.host import Host
    from cellkernel.store.transactions import Transaction


class RunnerShape(Protocol):
    """The runner (``patterns/runner.py``), as the instances, frames and collection runs
    it starts call back into it: a protocol, so they need not import the module that
    imports them."""

    @property
    def rt(self) -> Host: ...

    @property
    def instances(self) -> dict[tuple[str, str], Instance]: ...

    @property
    def _stopped_streams(self) -> set[tuple[str, str, tuple[str | int, ...]]]: ...

    def _run(self, pattern: Any, argument: Any, *, result_id: str, tx: Transaction,
             parent: Instance | None, owner: RunningNode | None = None,
             space: str | None = None, self_pattern: Any = None,
             plain_argument: bool = False) -> Instance: ...

    def _creating(self, space: str, out_id: str, path: tuple[str | int, ...] = ()
                  ) -> AbstractContextManager[None]: ...

    def _remember_child(self, tx: Transaction, instance: Instance, node: RunningNode,
                        child_id: str) -> None: ...

    def _retire(self, child: Instance) -> None: ...

    def instance_stopped(self, instance: Instance) -> None: ...

    def pattern_by_hash(self, digest: str, space: str) -> PatternShape: ...


class RunningNode:
    """Whatever a node record started: actions, handlers, child instances."""

    __slots__ = ("actions", "children", "handlers", "input_error", "record")

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        # (tuples, replaced as a node starts more: nearly every node has one action and
        # no handler, and the empty tuple is shared)
        self.actions: tuple[Action, ...] = ()
        self.handlers: tuple[EventHandler, ...] = ()
        self.children: dict[str, Instance] = {}
        #: the refusal of an input that fails its schema, while it does (``InputRefusals``)
        self.input_error: Any = None

    def stop(self, runner: RunnerShape) -> None:
        for action in self.actions:
            runner.rt.scheduler.unsubscribe(action)
        for handler in self.handlers:
            runner.rt.scheduler.remove_handler(handler)
            runner._stopped_streams.add(handler.stream)
        for child in list(self.children.values()):
            child.stop()
        self.children.clear()


class Instance:
    """A running pattern: its result cell, its nodes, its dynamic children."""

    # (one per instance, and a map starts one per element)
    __slots__ = ("argument_id", "children", "generation", "nodes", "owned_docs", "parent",
                 "pattern_hash", "result_id", "runner", "self_pattern", "space", "stopped")

    def __init__(self, runner: RunnerShape, result_id: str, space: str,
                 parent: Instance | None) -> None:
        self.runner = runner
        self.result_id = result_id
        self.space = space
        self.parent = parent
        self.nodes: dict[str, RunningNode] = {}
        self.children: dict[str, Instance] = {}
        self.generation = 0
        self.pattern_hash: str | None = None
        #: what ``SELF.factory`` names inside this instance (see ``Runner._run``)
        self.self_pattern: Any = None
        self.stopped = False
        #: the documents only this instance's cells live in (its result, argument, cells)
        self.owned_docs: tuple[str, ...] = ()
        #: its argument document (planned once per start, read by the map and schema index)
        self.argument_id = ""

    @property
    def result(self) -> Cell[Any]:
        return Cell(self.runner.rt, self.space, self.result_id)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for node in self.nodes.values():
            node.stop(self.runner)
        for child in list(self.children.values()):
            child.stop()
        self.children.clear()
        self.runner.instances.pop((self.space, self.result_id), None)
        self.runner.instance_stopped(self)


class RuntimeFrame:
    """Context of a running lift or handler: new cells and child instances."""

    __slots__ = ("cause", "counter", "created", "instance", "kind", "node", "runner", "tx")

    def __init__(self, runner: RunnerShape, instance: Instance, node: RunningNode, tx: Transaction,
                 cause: Any, kind: str) -> None:
        self.runner = runner
        self.instance = instance
        self.node = node
        self.tx = tx
        self.cause = cause
        self.kind = kind
        self.counter = 0
        self.created: set[str] = set()

    def new_cell(self, value: Any, schema: Any) -> Cell[Any]:
        cell = PendingCell(self.runner.rt, None, None, (), schema)
        cell._initial = to_json_value(value)
        cell._rframe = self
        self.counter += 1
        cell._seq = self.counter
        return cell

    def instantiate(self, pattern: Any, argument: Any) -> Cell[Any]:
        self.counter += 1
        digest = pattern.hash if hasattr(pattern, "hash") else str(pattern)
        result_id = derive_id({"parent": self.cause, "instantiate": digest, "n": self.counter})
        self.created.add(result_id)
        runner = self.runner
        is_new = (self.instance.space, result_id) not in runner.instances
        if self.kind == "lift":  # readers of the lift's output read through to the child
            with runner._creating(self.instance.space, self.node.record["outputs"][0]):
                child = runner._run(pattern, argument, result_id=result_id, tx=self.tx,
                                    parent=self.instance, owner=self.node)
        else:
            child = runner._run(pattern, argument, result_id=result_id, tx=self.tx,
                                parent=self.instance, owner=self.node)
        if is_new:
            # if this run's transaction never lands (an exception, or a commit conflict
            # that is then retried), the child it started must not keep running
            self.tx.on_abort.append(functools.partial(_stop_unlanded_child, self.node, result_id))
        if self.kind == "handler":  # SPEC §8: it survives rt.resume with its parent
            self.runner._remember_child(self.tx, self.instance, self.node, result_id)
        return child.result


def _stop_unlanded_child(node: RunningNode, child_id: str, _tx: Transaction) -> None:
    child = node.children.pop(child_id, None)
    if child is not None:
        child.stop()


class PendingCell(Cell[Any]):
    """``Cell.of(...)`` inside a lift or handler: connected on first use.

    Without ``.for_()`` its cause includes the frame's (new per event in a
    handler, stable in a lift); with ``.for_(cause)`` it is named within the
    instance, so the same name reaches the same document from every event.
    """

    __slots__ = ("_rframe", "_seq")
    _rframe: RuntimeFrame  # set by RuntimeFrame.new_cell, before any use
    _seq: int

    def _connect_now(self) -> None:
        frame: RuntimeFrame = self._rframe
        if self._cause is not None:
            components: Any = {"parent": frame.instance.result_id, "for": self._cause}
        else:
            components = {"parent": frame.cause, "cell": self._seq}
        self._space = frame.instance.space
        self._id = derive_id(components)
        tx = frame.tx if frame.tx.status == "open" else None
        if tx is not None:
            if not tx.exists(self._space, self._id):
                tx.write(self._space, self._id, (), self._initial)
        else:
            rt = frame.runner.rt
            target: Cell[Any] = Cell(rt, self._space, self._id)
            if target.get_raw() is None:
                target.set(self._initial)

    def _check(self, operation: str) -> None:
        if self._id is None:
            self._connect_now()
        super()._check(operation)

    def get_as_link(
        self, base_space: str | None = None, include_schema: bool = False
    ) -> dict[str, Any]:
        if self._id is None:
            self._connect_now()
        return super().get_as_link(base_space, include_schema)
