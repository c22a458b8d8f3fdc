"""map and filter nodes: keyed children, re-keyed as the list changes (SPEC §4, issue 18).

Each element has a key: its document (a link), or its value plus its occurrence
number among equal values.  A child instance of the callback pattern runs per
key; the output lists them in order (map) or keeps the elements whose child
says so (filter).  A run after one write re-keys only what that write touched
(``CollectionRun.changed_few``); anything else takes the full pass.  A child
whose key vanished is retired: stopped, its documents released once the
runtime is quiet (``Runner._retire``).

A filter is two actions: ``CollectionRun`` keys the list and starts children,
``FilterCollect`` reads the children's verdicts and writes the output.  One
action doing both would read what the children it starts write and write what
they read: a cycle, which left the scheduler no order (every child's verdict
re-ran the whole filter, and raising heights round the cycle cost O(N) a step).
"""

from __future__ import annotations

import bisect
import itertools
import operator
from typing import TYPE_CHECKING, Any

from sortedcontainers import SortedList

from cellkernel.data import schema as schemas
from cellkernel.data.links import is_link, make_link, parse_link
from cellkernel.data.values import MISSING, Path, json_equal
from cellkernel.patterns.instances import Instance, RunnerShape, RunningNode
from cellkernel.patterns.plan import derive_id
from cellkernel.reactive.cells import Cell
from cellkernel.reactive.resolution import resolve

if TYPE_CHECKING:
    from cellkernel.store.transactions import Address, Transaction

#: a map run re-keys at most this many elements incrementally; more: the full pass
_FEW = 64


class CollectionRun:
    """One map or filter node's run: ``run(tx)`` keys the list and reconciles children."""

    __slots__ = ("arg_ids", "captured_b", "id_of_key", "instance", "keys_of", "last",
                 "list_b", "list_link", "mode", "node", "op_hash", "out_id", "retired", "runner",
                 "space", "touched")

    def __init__(self, runner: RunnerShape, instance: Instance, node: RunningNode) -> None:
        record = node.record
        self.runner = runner
        self.instance = instance
        self.node = node
        self.space = instance.space
        self.out_id: str = record["outputs"][0]
        self.op_hash: str = record["config"]["op"]
        self.mode: str = record["helper"]
        self.list_b: Any = record["bindings"]["list"]
        #: the list binding parsed once (None: the list is inline in the record)
        self.list_link = parse_link(self.list_b, self.space) if is_link(self.list_b) else None
        self.captured_b: Any = record["bindings"].get("captured") or {}
        #: child id -> the index its argument holds
        self.keys_of: dict[str, int] = {}
        #: child id -> its argument document
        self.arg_ids: dict[str, str] = {}
        #: element key -> child id, so a push hashes one id
        self.id_of_key: dict[str, str] = {}
        #: the last run's list, keys, bases and positions (see ``changed_few``)
        self.last: dict[str, Any] = {}
        #: the indices re-keyed since a filter's collect last ran (None: all of them)
        self.touched: set[int] | None = None
        #: children retired by re-keying since a filter's collect last ran
        self.retired: list[str] = []

    @staticmethod
    def base_of(element: Any, sp: str) -> str:
        """An element's key before its occurrence number: its document, or its value."""
        if is_link(element):
            target = parse_link(element, sp)
            return f"{target.space}|{target.id}|{'/'.join(map(str, target.path))}"
        return "v:" + schemas.canonical(element)

    def start_child(self, op: Any, child_id: str, element: Any, index: int, array_link: Any,
                    tx: Transaction) -> None:
        argument = {"element": element, "index": index, "array": array_link,
                    "$captured": self.captured_b}
        # a map child's output is its index of the map's: order it before that index's
        # readers only (``move`` follows it); a filter's output positions are the collect's
        at = (index,) if self.mode == "map" else ()
        with self.runner._creating(self.space, self.out_id, at):
            child = self.runner._run(op, argument, result_id=child_id, tx=tx,
                                     parent=self.instance, owner=self.node, space=self.space,
                                     self_pattern=self.instance.self_pattern,
                                     plain_argument=not op.curried)
        self.keys_of[child_id] = index
        self.arg_ids[child_id] = child.argument_id

    def move(self, child_id: str, index: int, tx: Transaction) -> None:
        """A kept child's element is now at ``index``: its argument says so, and a map
        child is ordered before the readers of its new index of the output."""
        old = self.keys_of.get(child_id)
        self.keys_of[child_id] = index
        tx.write(self.space, self.arg_ids[child_id], ("index",), index)
        child = self.node.children.get(child_id)
        if self.mode != "map" or old is None or child is None:
            return
        actions = [action for node in child.nodes.values() for action in node.actions]
        self.runner.rt.scheduler.move_write(
            actions, (self.space, self.out_id, (old,)), (self.space, self.out_id, (index,)))

    def changed_few(self, op: Any, raw: list[Any], sp: str, array_link: Any,
                    tx: Transaction, where: tuple[str, str, Any, Any] | None) -> bool:
        """A map run after a few elements were replaced, or pushed or popped at the end.

        Then only those elements are keyed again, plus the later occurrences of
        their old and new values (whose occurrence numbers shift): children whose
        key vanished stop, those whose key appeared start, a key that moved keeps
        its child (its index rewritten), and only those output entries are
        written; the store shares the rest.  ``positions`` (value -> its indices,
        sorted) makes each occurrence number a bisection, not a scan.  False
        when the change is anything else; the full pass handles it.
        """
        before = self.last.get("raw")
        if before is None or self.last.get("array") != array_link:
            return False
        is_map = self.mode == "map"
        n_old, n_new = len(before), len(raw)
        common = min(n_old, n_new)
        written = _written_indices(self.runner.rt.scheduler, self.last.get("where"), where)
        if written is not None:  # one write since the self.last run, at these indices
            changed = sorted(i for i in written if i < common)
        elif n_old == n_new:  # the indices whose element is not the object it was (C)
            changed = list(itertools.compress(
                itertools.count(), map(operator.is_not, raw, before)))
        else:
            changed = list(itertools.compress(
                itertools.count(), map(operator.is_not, raw[:common], before[:common])))
        if len(changed) > _FEW or abs(n_new - n_old) > _FEW or (
            n_new != n_old and changed
        ):
            return False
        if not changed and n_new == n_old:
            self.last["raw"], self.last["where"] = raw, where
            return not is_map or tx.exists(self.space, self.out_id)  # nothing moved at all
        output: Any = None
        if is_map:
            output = tx.read(self.space, self.out_id, (), track=False)
            if type(output) is not list or len(output) != n_old:
                return False  # the output is not what the last run wrote: rebuild it
        order: list[tuple[str, str, Any, int]] = self.last["order"]
        bases: list[str] = self.last["bases"]
        positions: dict[str, list[int]] = self.last["positions"]
        affected: set[int] = set()
        for i in range(n_new, n_old):  # popped off the end: each is its value's self.last
            positions[bases[i]].pop()
            if not positions[bases[i]]:
                del positions[bases[i]]
        gone = order[n_new:]
        del order[n_new:], bases[n_new:]
        for i in range(n_old, n_new):  # pushed at the end: each is its value's self.last
            base = self.base_of(raw[i], sp)
            positions.setdefault(base, []).append(i)
            bases.append(base)
            order.append(("", "", raw[i], i))
            affected.add(i)
        for i in changed:
            new_base = self.base_of(raw[i], sp)
            old_base = bases[i]
            if new_base == old_base:
                key, child_id, _e, _i = order[i]
                order[i] = (key, child_id, raw[i], i)
                continue
            held = positions[old_base]
            j = bisect.bisect_left(held, i)
            del held[j]
            affected.update(held[j:])
            if not held:
                del positions[old_base]
            held = positions.setdefault(new_base, [])
            j = bisect.bisect_left(held, i)
            held.insert(j, i)
            affected.update(held[j:])
            bases[i] = new_base
            if len(affected) > _FEW:
                return False  # many duplicates shift: the full pass (it rebuilds all)
        old_keys = {order[i][0]: order[i][1] for i in affected if order[i][0]}
        old_keys.update((key, child_id) for key, child_id, _e, _i in gone)
        new_keys: dict[int, str] = {
            i: f"{bases[i]}#{bisect.bisect_left(positions[bases[i]], i)}" for i in affected}
        kept = set(new_keys.values())
        for key, child_id in old_keys.items():
            if key not in kept:
                stopped = self.node.children.pop(child_id, None)
                if stopped is not None:
                    self.runner._retire(stopped)
                    if self.mode != "map":
                        self.retired.append(child_id)
                self.keys_of.pop(child_id, None)
                self.arg_ids.pop(child_id, None)
                self.id_of_key.pop(key, None)
        if is_map and n_new != n_old:  # one C-level copy of the spine: cut, or grown
            output = output[:n_new] if n_new < n_old else output + [None] * (n_new - n_old)
        for i in sorted(affected):
            key = new_keys[i]
            child_id = old_keys.get(key) or self.id_of_key.get(key) or ""
            if child_id in self.node.children:
                if self.keys_of.get(child_id) != i:  # a key that moved keeps its child
                    self.move(child_id, i, tx)
            else:
                child_id = derive_id({"parent": self.out_id, "helper": self.mode, "key": key})
                self.start_child(op, child_id, raw[i], i, array_link, tx)
            self.id_of_key[key] = child_id
            order[i] = (key, child_id, raw[i], i)
            if not is_map:
                continue  # the filter's output is FilterCollect's
            if n_new == n_old:
                link = tx.hand_over(make_link(self.space, child_id, ()))
                tx.write(self.space, self.out_id, (i,), link)
            else:
                output[i] = make_link(self.space, child_id, ())
        if is_map and n_new != n_old:  # (a C-level copy); the indices it changed, named
            tx.write(self.space, self.out_id, (), tx.hand_over(output),
                     changed=[(i,) for i in (*sorted(affected), *range(n_new, n_old))])
        if self.touched is not None:
            self.touched.update(affected)
        self.last["raw"] = raw
        self.last["where"] = where
        return True

    def read_list(self, tx: Transaction) -> tuple[list[Any], str, Any,
                                                  tuple[str, str, Any, Any] | None]:
        """The list (tracked), its space, a link to it, and where it lives (see ``changed_few``)."""
        sp = self.space
        link = self.list_link
        if link is not None:
            sp, eid, path, _s = resolve(tx, link.space, link.id, link.path)
            raw = tx.read(sp, eid, path, track=False)
            if self.last.get("array_at") == (sp, eid, path):
                array_link = self.last["array"]  # the list the full pass keyed: its link
            else:
                array_link = make_link(sp, eid, path, None, True)
            where: tuple[str, str, Any, Any] | None = (
                sp, eid, path, tx.read(sp, eid, (), track=False))
        else:
            raw = self.list_b
            array_link = self.list_b
            where = None
        if raw is MISSING or raw is None or not isinstance(raw, list):
            raw = []
        return raw, sp, array_link, where

    def __call__(self, tx: Transaction) -> None:
        op = self.runner.pattern_by_hash(self.op_hash, self.space)
        raw, sp, array_link, where = self.read_list(tx)
        if self.changed_few(op, raw, sp, array_link, tx, where):
            return
        seen: dict[str, int] = {}
        order: list[tuple[str, str, Any, int]] = []
        for index, element in enumerate(raw):
            base = self.base_of(element, sp)
            n = seen.get(base, 0)
            seen[base] = n + 1
            key = f"{base}#{n}"
            child_id = self.id_of_key.get(key)
            if child_id is None:
                child_id = derive_id({"parent": self.out_id, "helper": self.mode, "key": key})
            order.append((key, child_id, element, index))
        self.id_of_key.clear()
        self.id_of_key.update((key, child_id) for key, child_id, _e, _i in order)
        live = {child_id for _k, child_id, _e, _i in order}
        for child_id in [c for c in self.node.children if c not in live]:
            self.runner._retire(self.node.children.pop(child_id))
            self.keys_of.pop(child_id, None)
            self.arg_ids.pop(child_id, None)
        for _key, child_id, element, index in order:
            if child_id in self.node.children:
                if self.keys_of.get(child_id) != index:
                    self.move(child_id, index, tx)
                continue
            self.start_child(op, child_id, element, index, array_link, tx)
        positions: dict[str, list[int]] = {}
        bases: list[str] = []
        for key, _c, _e, index in order:
            base = key.rsplit("#", 1)[0]
            bases.append(base)
            positions.setdefault(base, []).append(index)
        self.last.update(raw=raw, order=order, bases=bases, positions=positions,
                         array=array_link, array_at=where[:3] if where is not None else None,
                         where=where)
        self.touched = None  # a filter's collect takes its full pass too
        self.retired = []
        if self.mode != "map":
            return  # the filter's output is FilterCollect's
        output: list[Any] = [make_link(self.space, child_id, ())
                             for _k, child_id, _e, _i in order]
        current = tx.read(self.space, self.out_id, (), track=False)
        if current is MISSING or not json_equal(current, output):
            tx.write(self.space, self.out_id, (), tx.hand_over(output))  # built for this write


class FilterCollect:
    """A filter's second action: the elements whose child said keep, in list order.

    It reads the list as the keying action does (so a change that starts no child
    still collects again) and every child's verdict; the keying action wrote the
    children's documents, so the scheduler orders this after it and after them.

    After its first run it is incremental: the scheduler tells it which of the
    documents it reads changed (``Action.changed``), the keying action which
    indices it re-keyed (``CollectionRun.touched``), and only those verdicts are
    read again.  It subscribes to whole documents and keeps that subscription
    itself (``Scheduler.add_reads`` / ``drop_reads``).  ``kept`` is one 0/1 per
    index, ``kept_at`` the kept indices sorted (``sortedcontainers``): an element's
    place in the output is a bisection.
    """

    __slots__ = ("action", "children_of", "docs_of", "full", "kept", "kept_at", "keying",
                 "list_keys", "values")

    def __init__(self, keying: CollectionRun) -> None:
        self.keying = keying
        self.action: Any = None  # the scheduler action running this (set when subscribed)
        #: child id -> the documents its verdict was read from
        self.docs_of: dict[str, list[tuple[str, str]]] = {}
        #: document -> the children whose verdict read it (each key: one subscription)
        self.children_of: dict[tuple[str, str], set[str]] = {}
        #: the documents the list itself is read from (never dropped)
        self.list_keys: set[tuple[str, str]] = set()
        #: per index of the keyed order: 1 if its element is in the output
        self.kept: list[int] = []
        #: the indices whose element is kept, sorted: an element's place in the output is
        #: a bisection (O(log N)), not a count of the kept before it
        self.kept_at: SortedList[int] = SortedList()
        #: the output as last written
        self.values: list[Any] = []
        self.full = True

    def _verdict(self, tx: Transaction, child_id: str,
                 fresh: list[tuple[str, str]] | None = None) -> bool:
        """A child's verdict; notes the documents reading it touched (``docs_of``).

        Documents no child read before are appended to ``fresh``.
        """
        start = len(tx.reads)
        keep = bool(Cell(self.keying.runner.rt, self.keying.space, child_id, (), None, tx).get())
        keys = list(dict.fromkeys((sp, eid) for sp, eid, _p in tx.reads[start:]))
        self.docs_of[child_id] = keys
        children_of = self.children_of
        for key in keys:
            readers = children_of.get(key)
            if readers is None:
                readers = children_of[key] = set()
                if fresh is not None:
                    fresh.append(key)
            readers.add(child_id)
        return keep

    def _forget(self, child_id: str, emptied: list[tuple[str, str]]) -> None:
        for key in self.docs_of.pop(child_id, ()):
            readers = self.children_of.get(key)
            if readers is not None:
                readers.discard(child_id)
                if not readers:
                    emptied.append(key)

    def __call__(self, tx: Transaction) -> None:
        keying = self.keying
        action = self.action
        space = keying.space
        order: list[Any] = keying.last.get("order", [])
        changed, action.changed = action.changed, set()
        touched, keying.touched = keying.touched, set()
        tx.on_abort.append(self._aborted)
        current = tx.read(space, keying.out_id, (), track=False)
        written: list[Path] | None = None  # the output indices it changed, if few
        if self.full or touched is None or current is MISSING:
            self._full_pass(tx, order)
            moved = current is MISSING or not json_equal(current, self.values)
        else:  # (comparing the lists would walk them in Python: _update knows)
            moved, written = self._update(tx, order, changed, touched)
        if moved:  # (a C copy); a map over the output re-keys the indices named only
            tx.write(space, keying.out_id, (), tx.hand_over(list(self.values)), changed=written)

    def _full_pass(self, tx: Transaction, order: list[Any]) -> None:
        start = len(tx.reads)
        self.keying.read_list(tx)  # tracked: a change that starts no child collects again
        list_reads = tx.reads[start:]
        self.list_keys = {(sp, eid) for sp, eid, _p in list_reads}
        self.docs_of.clear()
        self.children_of.clear()
        kept: list[int] = []
        values: list[Any] = []
        for _key, child_id, element, _index in order:
            keep = self._verdict(tx, child_id)
            kept.append(1 if keep else 0)
            if keep:
                values.append(element)
        self.kept, self.values = kept, values
        self.kept_at = SortedList(itertools.compress(itertools.count(), kept))
        self.full = False
        # whole documents, the list's too: a verdict read through it (an inline argument)
        # must see its other paths change
        whole: list[Address] = [(sp, eid, ()) for sp, eid in self.children_of]
        self.keying.runner.rt.scheduler.replace_reads(self.action, list_reads + whole)

    def _update(self, tx: Transaction, order: list[Any], changed: set[tuple[str, str]],
                touched: set[int]) -> tuple[bool, list[Path] | None]:
        """Read again only the verdicts that may have changed; place them in ``values``.

        Returns whether ``values`` changed, and which of its indices (None: many),
        every index from an insert or removal on included.
        """
        keys_of = self.keying.keys_of
        kept, values, kept_at = self.kept, self.values, self.kept_at
        moved = False
        n = len(order)
        n_values = len(values)
        replaced: list[int] = []
        shifted = n_values  # the lowest index an insert or a removal moved
        if len(kept) > n:  # popped off the end: their kept elements end the output
            cut = kept_at.bisect_left(n)
            tail = len(kept_at) - cut
            if tail:
                del values[len(values) - tail:]
                del kept_at[cut:]
                shifted = len(values)
                moved = True
            del kept[n:]
        kept.extend([0] * (n - len(kept)))
        indices = {i for i in touched if i < n}
        for key in changed:
            for child_id in self.children_of.get(key, ()):
                index = keys_of.get(child_id)
                if index is not None and index < n:
                    indices.add(index)
        emptied: list[tuple[str, str]] = []
        fresh: list[tuple[str, str]] = []
        retired, self.keying.retired = self.keying.retired, []
        for child_id in retired:
            if child_id not in keys_of:
                self._forget(child_id, emptied)
        for i in sorted(indices):
            _key, child_id, element, _index = order[i]
            self._forget(child_id, emptied)  # (its documents stay subscribed if read again)
            keep = self._verdict(tx, child_id, fresh)
            was = kept[i]
            if keep or was:
                at = kept_at.bisect_left(i)  # its place among the kept
                if keep and was:
                    if not json_equal(values[at], element):
                        values[at] = element
                        replaced.append(at)
                        moved = True
                elif keep:
                    values.insert(at, element)
                    kept_at.add(i)
                    shifted = min(shifted, at)
                    moved = True
                else:
                    del values[at]
                    kept_at.remove(i)
                    shifted = min(shifted, at)
                    moved = True
            kept[i] = 1 if keep else 0
        children_of = self.children_of
        drop = []
        for key in dict.fromkeys(emptied):
            if not children_of.get(key):
                children_of.pop(key, None)
                if key not in self.list_keys:  # (the list's own subscription stays)
                    drop.append(key)
        added: list[Address] = [(sp, eid, ()) for sp, eid in fresh if (sp, eid) in children_of]
        scheduler = self.keying.runner.rt.scheduler
        if drop:
            scheduler.drop_reads(self.action, drop)
        scheduler.add_reads(self.action, added)
        end = max(n_values, len(values))
        if end - shifted > _FEW:  # (counted before it is built: a removal near the front)
            return moved, None
        written = [i for i in replaced if i < shifted]
        written.extend(range(shifted, end))
        return moved, [(i,) for i in written] if len(written) <= _FEW else None

    def _aborted(self, _tx: Transaction) -> None:
        self.full = True  # what it changed did not land: start over next time


def _written_indices(scheduler: Any, last: tuple[str, str, Any, Any] | None,
                     now: tuple[str, str, Any, Any] | None) -> set[int] | None:
    """The list indices one write changed since a map's last run, if the scheduler knows.

    ``last`` and ``now`` are (space, id, path of the list, document root value)
    at the last run and now; the scheduler remembers the paths of a document's
    last write with the values it went from and to, so a match by identity means
    exactly that one write happened in between.
    """
    if last is None or now is None or last[:3] != now[:3]:
        return None
    written = scheduler.written_paths(now[0], now[1], last[3], now[3])
    if written is None:
        return None
    path = tuple(now[2])
    depth = len(path)
    indices: set[int] = set()
    for p in written:
        if len(p) <= depth or tuple(p[:depth]) != path or type(p[depth]) is not int:
            return None  # the list itself was replaced (or a non-index key): compare it
        indices.add(p[depth])
    return indices
