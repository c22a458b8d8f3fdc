"""The scheduler: which action runs next, and when the runtime is quiet.

Model (after Jane Street's Incremental and the labs runner):

* An **action** runs in its own transaction; the paths it read become its
  triggers.  After any commit, an action is scheduled only if the value at one
  of its read paths actually changed (value-accurate, path-precise).  The
  committing action's own writes never trigger it.
* Every action has a **height**: one more than the highest action that writes
  what it reads.  Pending actions run lowest height first from a heap, so in an
  acyclic graph each affected action runs once per settle and never sees a mix
  of old and new inputs (glitch-free).  Heights are adjusted iteratively when
  edges appear, so depth never touches Python's recursion limit.
* An action run more than ``MAX_ITERATIONS`` times in one busy period is not
  run again in that period; an ``IterationLimitError`` is recorded.
* Events are queued FIFO and handled one per pass, with pending reactive work
  settled in between.  Handler reads are not subscriptions.
* On a store that asks for group commit (SQLite, PostgreSQL) the actions' writes
  land in the runtime's write-back layer and reach the store in one commit at
  the end of each drain, before any event runs (``store/writeback.py``).  An
  action with a compiled ``plan`` (a pure lift over scalars) runs without a
  transaction at all (``patterns/lift_plans.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import inspect
import itertools
import logging
import operator
import time
import traceback
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from cellkernel.data.values import Path, get_path, json_equal, paths_overlap
from cellkernel.errors import ConflictError, IterationLimitError, NodeError
from cellkernel.reactive.cells import Cell, current_tx
from cellkernel.reactive.path_groups import PathGroups, path_groups
from cellkernel.store.transactions import Transaction, backoff_delay, write_lock

if TYPE_CHECKING:
    from cellkernel.reactive.host import CellHost
    from cellkernel.store.documents import Change

log = logging.getLogger("cellkernel.reactive.scheduler")

MAX_ITERATIONS = 100
#: a queued run's key is ``height << SEQ_BITS | seq``: by height, then creation order
SEQ_BITS = 48
#: what a plan returns when it leaves the run to the general path (``Action.plan``)
NOT_PLANNED: Any = object()
#: conflicts an event may meet before it is dropped (with a ``NodeError`` naming it);
#: retries wait a jittered backoff, and the last one runs holding the store's write lock
EVENT_RETRIES = 5
REACTIVE_RETRIES = 10
#: documents whose last written paths are remembered (``Scheduler.note_written``)
_WRITTEN_MAX = 64

#: ``Action.kind`` of a map or filter: it asks ``written_paths`` which indices of its
#: list the last write changed, so an action's write to that list is remembered too
KEYED = "keyed"

Address = tuple[str, str, Path]
DocKey = tuple[str, str]


class Action:
    """A unit of reactive work: ``fn(tx)`` run in its own transaction."""

    __slots__ = (
        "active",
        "changed",
        "declared_reads",
        "fn",
        "frame",
        "height",
        "kind",
        "name",
        "node",
        "on_error",
        "pattern",
        "plan",
        "reads",
        "retries",
        "seq",
        "space",
        "writes",
    )

    _counter = itertools.count()

    def __init__(
        self,
        fn: Callable[[Transaction], Any],
        *,
        name: str = "action",
        node: str | None = None,
        pattern: str | None = None,
        space: str | None = None,
        kind: str = "lift",
        writes: Iterable[Address] = (),
        reads: Iterable[Address] = (),
        frame: Any = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.node = node or name
        self.pattern = pattern
        self.space = space
        self.kind = kind
        #: what it writes, each once: a tuple (nearly every action writes one address),
        #: made an ordered set when it changes (``_own_writes``: released documents leave
        #: it in O(1))
        self.writes: dict[Address, None] | tuple[Address, ...] = tuple(dict.fromkeys(writes))
        self.declared_reads: tuple[Address, ...] = tuple(reads)
        self.reads: list[Address] = []
        self.height = 0
        self.active = False
        self.retries = 0
        self.seq = next(Action._counter)
        self.frame = frame
        self.on_error: Callable[[NodeError], None] | None = None
        #: a compiled run without a transaction (``patterns/lift_plans.py``), if it has one:
        #: ``plan(load_key, land_value)`` -> its changes, or ``NOT_PLANNED`` for the general run
        self.plan: Callable[[Any, Any], Any] | None = None
        #: an incremental action's (a filter's collect) documents that changed among its
        #: reads since its last run; such an action keeps its own subscription
        #: (``Scheduler.add_reads`` / ``drop_reads`` / ``replace_reads``), not its journal's
        self.changed: set[DocKey] | None = None

    def __repr__(self) -> str:
        return f"<Action {self.name} h={self.height}>"


class EventHandler:
    """Runs ``fn(tx, event)`` once per event sent to its stream address."""

    __slots__ = ("active", "fn", "is_async", "name", "node", "pattern", "space", "stream")

    def __init__(
        self,
        fn: Callable[[Transaction, Any], Any],
        stream: Address,
        *,
        name: str = "handler",
        node: str | None = None,
        pattern: str | None = None,
        is_async: bool = False,
    ) -> None:
        self.fn = fn
        #: ``fn`` returns an awaitable: its transaction stays open until that returns
        self.is_async = is_async
        self.stream = stream
        self.name = name
        self.node = node or name
        self.pattern = pattern
        self.space = stream[0]
        self.active = True


def _cacheable(path: Path) -> bool:
    """A path whose equality implies the same lookup (no ``1 == True`` aliasing): str keys only."""
    if not path:
        return type(path) is tuple
    if type(path) is not tuple:
        return False
    for key in path:  # noqa: SIM110 (a plain loop: this runs once per reader per commit)
        if type(key) is not str:
            return False
    return True


#: a document read by at least this many actions is notified by path groups
BULK_READERS = 16


#: a subscription this many reads apart from the last is patched, not made anew
_FEW_READS = 64

#: a list this long is compared at its written paths first (``_root_differs``)
_LARGE = 64


def _root_differs(before: Any, after: Any, written: list[Path] | None) -> bool:
    """``not json_equal(before, after)``, answered at a written path when one differs
    there (then the whole document does): a list of 10 000 is not compared for one
    element written."""
    if written and type(before) is list and type(after) is list and len(after) >= _LARGE:
        n_before, n_after = len(before), len(after)
        for path in written:
            key = path[0] if len(path) == 1 else None
            if type(key) is int and 0 <= key < n_before and key < n_after:
                old, new = before[key], after[key]  # an element: ``get_path``, inline
            else:
                old, new = get_path(before, path), get_path(after, path)
            if old is not new and not json_equal(old, new):
                return True
    return not json_equal(before, after)


def _own_writes(action: Action) -> dict[Address, None]:
    """``action.writes`` as an ordered set, made one the first time it changes."""
    writes = action.writes
    if type(writes) is not dict:
        writes = action.writes = dict.fromkeys(writes)
    return writes


#: the paths an action reads or writes of one document: a tuple, replaced when it grows
#: (nearly every one is ``ROOT_ONLY``, shared: no list per action and document)
Paths: TypeAlias = tuple[Path, ...]
#: the whole document, and nothing else
ROOT_ONLY: Paths = ((),)


def _with_path(paths: Paths, path: Path) -> Paths:
    """``paths`` and ``path`` after them (the shared ``ROOT_ONLY`` for the whole document)."""
    if not paths and type(path) is tuple and not path:
        return ROOT_ONLY
    return (*paths, path)


def _as_paths(paths: Iterable[Path]) -> Paths:
    """``paths`` as ``Paths`` (``ROOT_ONLY`` when that is all they are)."""
    found = tuple(paths)
    return ROOT_ONLY if found == ROOT_ONLY else found


def _add_path(unique: dict[Path, Path], path: Path) -> None:
    """Keep ``path`` once among a document's read paths, in order (one given as a list
    is keyed as its tuple, and kept as given)."""
    unique.setdefault(path if type(path) is tuple else tuple(path), path)


class Scheduler:
    """Owns triggers, the pending heap, the event queue and the busy period."""

    def __init__(self, runtime: CellHost) -> None:
        self._rt = runtime
        self._triggers: dict[DocKey, dict[Action, Paths]] = {}
        #: per document read by many actions: its readers grouped by the path they read
        #: (``path_groups``), so a change compares each path once and schedules its
        #: readers in bulk; kept up to date as readers come and go (``_group``, ``_ungroup``)
        self._groups: dict[DocKey, PathGroups | None] = {}
        #: the writers of a document many actions write, grouped by path likewise (a
        #: map's children each write their index of its output): made when a height
        #: walk asks (``_writer_groups``), kept up to date as writers come and go
        self._wgroups: dict[DocKey, PathGroups | None] = {}
        self._writers: dict[DocKey, dict[Action, Paths]] = {}
        #: pending runs as ``height << SEQ_BITS | seq`` ints (``_push``; a heap of plain
        #: ints compares in C without tuples), and the action each key stands for
        self._heap: list[int] = []
        self._queued: dict[int, Action] = {}
        self._pending: set[Action] = set()
        self._events: deque[tuple[EventHandler, Any, int, Any]] = deque()
        self._handlers: dict[Address, list[EventHandler]] = {}
        self._runs: dict[Action, int] = {}
        self._dormant: set[Action] = set()
        #: every action with a place in the graph (bounds heights: see ``_adjust_height``)
        self._known: set[Action] = set()
        #: per incremental action: dropped documents still listed in its ``reads``
        self._stale: dict[Action, int] = {}
        self._settling = False
        #: actions whose writes wait in the runtime's write-back layer (group commit)
        self._landed: set[Action] = set()
        #: (load by key, the store's land_value, the layer's land_value), for plans
        #: (``_run_planned``)
        self._plan_stores: tuple[Any, Any, Any] | None = None
        #: flushes lost to another writer in this busy period (each re-runs its writers)
        self._flush_conflicts = 0
        self._async: list[asyncio.Future[Any] | Any] = []
        self.run_count = 0
        #: called after each action's run and each handler's event (views flash them)
        self.on_run: list[Callable[[Action | EventHandler], None]] = []
        #: per document: (value before, value after, paths) of the last write (``note_written``)
        self._written: OrderedDict[DocKey, tuple[Any, Any, list[Path]]] = OrderedDict()
        #: called when a busy period ends, its writes landed (the runner releases documents)
        self.on_quiet: list[Callable[[], None]] = []

    # -- subscriptions ----------------------------------------------------------

    def subscribe(self, action: Action, *, schedule: bool = True) -> None:
        """Register an action; with ``schedule`` it runs at the next settle."""
        action.active = True
        wgroups = self._wgroups
        for space, entity_id, path in action.writes:
            writers = self._writers.setdefault((space, entity_id), {})
            writers[action] = _with_path(writers.get(action, ()), path)
            if wgroups:
                self._wgroup((space, entity_id), action, path)
        self._set_reads(action, action.declared_reads)
        if schedule:
            self._schedule(action)

    def unsubscribe(self, action: Action) -> None:
        """Stop an action for good: release its triggers, writes and pending run."""
        action.active = False
        self._known.discard(action)
        self._stale.pop(action, None)
        self._clear_reads(action)
        for space, entity_id, _path in action.writes:
            key = (space, entity_id)
            writers = self._writers.get(key)
            if writers is not None:
                paths = writers.pop(action, None)
                if not writers:
                    del self._writers[key]
                    self._wgroups.pop(key, None)
                elif paths is not None and key in self._wgroups:
                    groups = self._wgroups[key]
                    if groups is not None:
                        groups.remove(action, paths)
        self._pending.discard(action)
        self._dormant.discard(action)

    def note_written(self, changes: list[Change], tx: Transaction) -> None:
        """Remember which paths ``tx`` wrote in each document it changed (the last few).

        A map over a list asks (``written_paths``) and re-keys the written
        indices instead of comparing the whole list with the one it last saw.
        """
        for change in changes:
            self._note_one((change.space, change.entity_id), change, tx)

    def _note_one(self, key: DocKey, change: Change, tx: Transaction) -> None:
        paths = tx.paths_written(key)
        self.note_paths(key, change, list(paths) if paths else None)

    def note_paths(self, key: DocKey, change: Change, paths: list[Path] | None) -> None:
        """``note_written`` for one change whose written paths are known (None: unknown)."""
        written = self._written
        if not paths or change.before is None:
            written.pop(key, None)
            return
        written[key] = (change.before.value, change.after.value, paths)
        written.move_to_end(key)
        if len(written) > _WRITTEN_MAX:
            written.popitem(last=False)

    def written_paths(self, space: str, entity_id: str, before: Any, after: Any
                      ) -> list[Path] | None:
        """The paths one write took the document from ``before`` to ``after`` by, if known."""
        hint = self._written.get((space, entity_id))
        if hint is None or hint[0] is not before or hint[1] is not after:
            return None
        return hint[2]

    def forget_documents(self, space: str, entity_ids: list[str]) -> None:
        """Documents deleted from the store (a retired child's): nobody writes them any more.

        A map node learned a write to each child it started; without this its
        write set, and the writer index, would grow with every child ever made.
        """
        writers_map = self._writers
        for entity_id in entity_ids:
            self._wgroups.pop((space, entity_id), None)
            writers = writers_map.pop((space, entity_id), None)
            if not writers:
                continue
            for action, paths in writers.items():
                writes = _own_writes(action)
                for path in paths:
                    writes.pop((space, entity_id, path), None)

    def _wgroup(self, key: DocKey, action: Action, path: Path) -> None:
        """``action`` writes ``path`` of ``key`` now: its writer groups, if made, follow."""
        if key in self._wgroups:
            groups = self._wgroups[key]
            if groups is not None and not groups.add(action, [path], reader=False):
                del self._wgroups[key]

    def _writer_groups(self, key: DocKey, writers: dict[Action, Paths]
                       ) -> PathGroups | None:
        """The writers of ``key`` by path (made on first ask; None: a path is no tuple)."""
        if key in self._wgroups:
            return self._wgroups[key]
        groups: PathGroups | None = PathGroups({})
        for writer, paths in writers.items():
            if groups is not None and not groups.add(writer, paths, reader=False):
                groups = None
        self._wgroups[key] = groups
        return groups

    def _reader_groups(self, key: DocKey, triggers: dict[Action, Paths]
                       ) -> PathGroups | None:
        """The readers of ``key`` by path, as ``notify`` groups them (made on first ask)."""
        if key in self._groups:
            return self._groups[key]
        groups = self._groups[key] = path_groups(triggers)
        return groups

    def move_write(self, actions: Iterable[Action], old: Address, new: Address) -> None:
        """``actions`` write ``new`` instead of ``old`` (a map child moved to another
        index of the map's output): readers of ``new`` are raised above them."""
        key = (old[0], old[1])
        for action in actions:
            if old not in action.writes or not action.active:
                continue
            writes = _own_writes(action)
            del writes[old]
            writes[new] = None
            writers = self._writers.get(key, {})
            paths = writers.get(action)
            if paths is not None:
                if old[2] in paths:
                    at = paths.index(old[2])
                    paths = paths[:at] + paths[at + 1:]
                    groups = self._wgroups.get(key)
                    if groups is not None:
                        groups.remove(action, [old[2]])
                writers[action] = paths = _with_path(paths, new[2])
                if self._wgroups:
                    self._wgroup(key, action, new[2])
            below: list[Action] = []  # its own height holds: only readers of ``new`` rise
            self._lower_readers(action, below, (new,))
            for reader in below:
                self._adjust_height(reader)

    def _clear_reads(self, action: Action) -> None:
        for space, entity_id, _path in action.reads:
            key = (space, entity_id)
            triggers = self._triggers.get(key)
            if triggers is not None:
                paths = triggers.pop(action, None)
                if not triggers:
                    del self._triggers[key]
                    self._groups.pop(key, None)
                elif paths is not None and self._groups:
                    self._ungroup(key, action, paths)

    def _group(self, key: DocKey, action: Action, paths: Paths | list[Path]) -> None:
        """``action`` reads ``paths`` of ``key`` now: its path groups, if made, follow."""
        if key in self._groups:
            groups = self._groups[key]
            if groups is not None and not groups.add(action, paths):
                del self._groups[key]  # (made again when asked: None, the per-action loop)

    def _ungroup(self, key: DocKey, action: Action, paths: Paths) -> None:
        """``action`` no longer reads ``paths`` of ``key``."""
        if key in self._groups:
            groups = self._groups[key]
            if groups is None:
                del self._groups[key]  # an incremental reader may have gone: ask again
            else:
                groups.remove(action, paths)

    def _set_reads(self, action: Action, reads: Sequence[Address]) -> None:
        if reads == action.reads and action.reads:
            return
        self._known.add(action)
        if not action.reads and len(reads) == 1:  # a new action reading one path (most lifts)
            space, entity_id, path = reads[0]
            paths = _with_path((), path)
            self._triggers.setdefault((space, entity_id), {})[action] = paths
            if self._groups:
                self._group((space, entity_id), action, paths)
            action.reads = [reads[0]]
            self._adjust_height(action)
            return
        if len(reads) == len(action.reads) >= BULK_READERS and self._patch_reads(action, reads):
            return
        self._clear_reads(action)
        # each document's paths once, in order (a dict: a lift reading a list of N
        # links element by element reads N paths of one document, and a list search
        # for each made that quadratic); a path given as a list is keyed as a tuple
        compact: dict[DocKey, dict[Path, Path]] = {}
        for space, entity_id, path in reads:
            _add_path(compact.setdefault((space, entity_id), {}), path)
        for key, unique in compact.items():
            paths = _as_paths(unique.values())
            self._triggers.setdefault(key, {})[action] = paths
            if self._groups:
                self._group(key, action, paths)
        action.reads = list(reads)
        self._adjust_height(action)

    def _patch_reads(self, action: Action, reads: Sequence[Address]) -> bool:
        """``_set_reads`` when a long subscription changed at a few positions (a lift
        over a map's N outputs after one child was replaced): only the documents read
        there are subscribed anew, the rest of ``action.reads`` is kept as it is, and
        the height rises above the writers of what is new only.  False: too many."""
        old = action.reads
        diff = list(itertools.compress(itertools.count(), map(operator.ne, old, reads)))
        if len(diff) > _FEW_READS:
            return False
        touched = {(r[0], r[1]) for i in diff for r in (old[i], reads[i])}
        ids = {key[1] for key in touched}
        fresh: dict[DocKey, dict[Path, Path]] = {key: {} for key in touched}
        for read in reads:  # the paths now read of each touched document, in order
            if read[1] in ids and (seen := fresh.get((read[0], read[1]))) is not None:
                _add_path(seen, read[2])
        triggers_map = self._triggers
        for key, unique in fresh.items():
            triggers = triggers_map.get(key)
            gone = triggers.pop(action, None) if triggers is not None else None
            if gone is not None and self._groups:
                if not triggers:
                    self._groups.pop(key, None)
                else:
                    self._ungroup(key, action, gone)
            if unique:
                paths = _as_paths(unique.values())
                triggers_map.setdefault(key, {})[action] = paths
                if self._groups:
                    self._group(key, action, paths)
            elif triggers is not None and not triggers:
                del triggers_map[key]
        for i in diff:
            old[i] = reads[i]
        self._raise_above_writers(action, [reads[i] for i in diff])
        return True

    def _raise_above_writers(self, action: Action, reads: Iterable[Address]) -> None:
        """Raise ``action`` above the writers of ``reads`` (what it reads anew; the rest
        of its reads ordered it already), and its readers above it."""
        needed = 0
        writers_map = self._writers
        for space, entity_id, path in reads:
            for writer, paths in (writers_map.get((space, entity_id)) or {}).items():
                if writer is not action and writer.height >= needed and any(
                        paths_overlap(path, p) for p in paths):
                    needed = writer.height + 1
        if needed > action.height:
            action.height = needed
            if action in self._pending:
                self._push(action)
            for reader in list(self._readers_of(action)):
                self._adjust_height(reader)

    def replace_reads(self, action: Action, reads: list[Address]) -> None:
        """An incremental action's whole subscription, anew (its full pass)."""
        self._stale.pop(action, None)
        self._set_reads(action, reads)

    def add_reads(self, action: Action, reads: list[Address]) -> None:
        """Subscribe an incremental action to more addresses, in O(len(reads)).

        Its height rises above the writers of those addresses only: the rest
        of its reads ordered it already.
        """
        if not reads:
            return
        triggers = self._triggers
        for space, entity_id, path in reads:
            readers = triggers.setdefault((space, entity_id), {})
            paths = readers.get(action, ())
            if path not in paths:
                readers[action] = _with_path(paths, path)
                if self._groups:
                    self._group((space, entity_id), action, [path])
        action.reads.extend(reads)
        self._known.add(action)
        self._raise_above_writers(action, reads)

    def drop_reads(self, action: Action, keys: Iterable[DocKey]) -> None:
        """Unsubscribe an incremental action from whole documents (a retired child's).

        ``action.reads`` keeps their addresses until they are half of it, then it
        is compacted once: amortised O(1) per dropped document.
        """
        triggers_map = self._triggers
        dropped = 0
        for key in keys:
            triggers = triggers_map.get(key)
            paths = triggers.pop(action, None) if triggers is not None else None
            if paths is not None:
                dropped += 1
                if not triggers:
                    del triggers_map[key]
                    self._groups.pop(key, None)
                elif self._groups:
                    self._ungroup(key, action, paths)
        stale = self._stale[action] = self._stale.get(action, 0) + dropped
        if stale * 2 > len(action.reads):
            action.reads = [r for r in action.reads
                            if action in triggers_map.get((r[0], r[1]), ())]
            del self._stale[action]

    def _readers_of(self, action: Action,
                    writes: Iterable[tuple[str, str, Path]] | None = None) -> Iterable[Action]:
        """Actions reading what ``action`` writes (or, given, only those ``writes``)."""
        for space, entity_id, path in (action.writes if writes is None else writes):
            triggers = self._triggers.get((space, entity_id))
            if not triggers:
                continue
            for reader, paths in triggers.items():
                if reader is not action and any(paths_overlap(path, p) for p in paths):
                    yield reader

    def _unlinked(self, action: Action) -> bool:
        """No other action writes a document ``action`` reads or reads one it writes."""
        writers = self._writers
        for space, entity_id, _path in action.reads:
            found = writers.get((space, entity_id))
            if found and (len(found) > 1 or action not in found):
                return False
        triggers = self._triggers
        for space, entity_id, _path in action.writes:
            found = triggers.get((space, entity_id))
            if found and (len(found) > 1 or action not in found):
                return False
        return True

    def _adjust_height(self, action: Action) -> None:
        """Raise heights so readers stay above writers (iterative; stops on cycles)."""
        # In an acyclic graph no height exceeds the number of actions; past that bound
        # (plus slack) raising must be going round a cycle.  Counting only this busy
        # period's runs and pending actions undercounts a deep graph wired while quiet
        # (a 12 000-deep chain then capped heights near 10 000 and ran readers early).
        if action.height == 0 and self._unlinked(action):
            return  # nothing writes what it reads, nothing reads what it writes: height 0 holds
        limit = max(len(self._runs) + len(self._pending), len(self._known)) + 10_000
        work = [action]
        #: how often each action was raised in this call, and those found on a cycle
        raised: dict[Action, int] = {}
        cyclic: set[Action] = set()
        while work:
            current = work.pop()
            needed = self._needed_height(current)
            if needed <= current.height:
                if current is not action:
                    continue
            elif needed > limit or current in cyclic:
                continue  # a cycle: leave the order to the iteration cap
            else:
                count = raised[current] = raised.get(current, 0) + 1
                if count > 2 and self._on_cycle(current):
                    # raised again and again: round a cycle, each step costing its reads
                    # (a wide node on one climbed to ``limit`` at O(width) a step)
                    cyclic.add(current)
                    continue
                current.height = needed
                if current in self._pending:
                    self._push(current)
            self._lower_readers(current, work)

    def _needed_height(self, action: Action) -> int:
        """1 + the highest height of the actions writing what ``action`` reads (0: none).

        Without generators (every subscribe asks): a writer no higher than the
        best so far is not compared path by path.
        """
        best = -1
        writers_map = self._writers
        for space, entity_id, path in action.reads:
            writers = writers_map.get((space, entity_id))
            if not writers:
                continue
            if len(writers) >= BULK_READERS:  # (a map's output: its children, by index)
                groups = self._writer_groups((space, entity_id), writers)
                if groups is not None:
                    by_path = groups.by_path
                    for p in groups.overlapping(path):
                        for writer in by_path[p]:
                            if writer.height > best and writer is not action:
                                best = writer.height
                    continue
            for writer, paths in writers.items():
                if writer.height > best and writer is not action:
                    for p in paths:
                        if not p or not path or paths_overlap(path, p):
                            best = writer.height
                            break
        return best + 1

    def _lower_readers(self, action: Action, work: list[Action],
                       writes: Iterable[Address] | None = None) -> None:
        """Append to ``work`` the readers of what ``action`` writes (or, given, only of
        ``writes``) not above its height."""
        height = action.height
        triggers_map = self._triggers
        for space, entity_id, path in (action.writes if writes is None else writes):
            triggers = triggers_map.get((space, entity_id))
            if not triggers:
                continue
            if len(triggers) >= BULK_READERS and path:  # readers by path (a map's output)
                groups = self._reader_groups((space, entity_id), triggers)
                if groups is not None:
                    by_path = groups.by_path
                    for p in groups.overlapping(path):
                        for reader in by_path[p]:
                            if reader.height <= height and reader is not action:
                                work.append(reader)
                    continue
            for reader, paths in triggers.items():
                if reader.height <= height and reader is not action:
                    for p in paths:
                        if not p or not path or paths_overlap(path, p):
                            work.append(reader)
                            break

    def _on_cycle(self, action: Action) -> bool:
        """Whether ``action`` reads, through other actions, what it writes (breadth first)."""
        seen: set[Action] = set()
        frontier = [action]
        while frontier:
            following = []
            for current in frontier:
                for reader in self._readers_of(current):
                    if reader is action:
                        return True
                    if reader not in seen:
                        seen.add(reader)
                        following.append(reader)
            frontier = following
        return False

    def _schedule(self, action: Action) -> None:
        if action in self._pending or not action.active:
            return
        self._pending.add(action)
        self._push(action)

    def _push(self, action: Action) -> None:
        key = (action.height << SEQ_BITS) | action.seq
        self._queued[key] = action
        heapq.heappush(self._heap, key)

    # -- change notification ------------------------------------------------------

    def notify(self, changes: Iterable[Change], source: Action | None = None,
               tx: Transaction | None = None) -> None:
        """Schedule the actions whose read values changed (not ``source`` itself).

        ``tx``, when given, is the transaction that made ``changes``: the paths it
        wrote narrow a document many actions read, as ``note_written`` does for a
        write outside any action.
        """
        triggers_map = self._triggers
        heap = self._heap
        queued = self._queued
        heappush = heapq.heappush
        for change in changes:
            doc_key = (change.space, change.entity_id)
            triggers = triggers_map.get(doc_key)
            if not triggers:
                continue
            before = change.before.value if change.before is not None else None
            after = change.after.value
            if len(triggers) >= BULK_READERS:
                if doc_key in self._groups:
                    groups = self._groups[doc_key]
                else:
                    groups = self._groups[doc_key] = path_groups(triggers)
                if groups is not None:
                    written = self._written_by(doc_key, change, tx)
                    if tx is not None:  # (a map among the many readers asks for them)
                        self._note_one(doc_key, change, tx)
                    reached = groups.reached(before, after, written) if written else None
                    self._schedule_groups(groups.by_path, groups.by_path if reached is None
                                          else reached, before, after, source, written)
                    continue
            pending = self._pending
            # many readers of one document mostly read the same few paths: compare each once
            root_differs: bool | None = None
            changed: dict[Path, bool] = {}
            # (scheduling touches only the pending set and heap, never ``triggers``)
            for action, paths in triggers.items():
                if action is source:
                    continue
                if action in pending:
                    if action.changed is not None:  # (it reads the new value when it runs)
                        action.changed.add((change.space, change.entity_id))
                    if tx is not None and action.kind == KEYED:
                        self._note_one(doc_key, change, tx)
                    continue
                for path in paths:
                    if path == ():  # the whole document: get_path(x, ()) is x
                        if root_differs is None:
                            t = type(after)
                            if t is type(before) and (t is int or t is str or t is float):
                                root_differs = before != after  # ``json_equal`` of scalars
                            elif isinstance(after, list) and len(after) >= _LARGE:
                                root_differs = _root_differs(
                                    before, after, self._written_by(doc_key, change, tx))
                            else:
                                root_differs = not json_equal(before, after)
                        differs = root_differs
                    else:
                        # only str-key paths are cached, and a path equal to one of those
                        # looks up the same (``_cacheable``): a hit needs no check
                        known = changed.get(path) if type(path) is tuple else None
                        if known is not None:
                            differs = known
                        else:
                            differs = not json_equal(get_path(before, path), get_path(after, path))
                            if _cacheable(path):
                                changed[path] = differs
                    if differs:
                        if action.active:  # ``_schedule``, inline: it runs per trigger
                            pending.add(action)
                            key = (action.height << SEQ_BITS) | action.seq
                            queued[key] = action
                            heappush(heap, key)
                            if action.changed is not None:
                                action.changed.add((change.space, change.entity_id))
                            if tx is not None and action.kind == KEYED:
                                self._note_one(doc_key, change, tx)  # (an action's write)
                        break

    def _written_by(self, doc_key: DocKey, change: Change, tx: Transaction | None
                    ) -> list[Path] | None:
        """The paths the write that made ``change`` went through, if known (``notify``)."""
        hint = self._written.get(doc_key)
        if hint is not None:
            before = change.before.value if change.before is not None else None
            if hint[0] is before and hint[1] is change.after.value:
                return hint[2]
        if tx is not None and change.before is not None:
            return tx.paths_written(doc_key)
        return None

    def _schedule_groups(self, by_path: dict[Path, dict[Action, None]], paths: Iterable[Path],
                         before: Any, after: Any, source: Action | None,
                         written: list[Path] | None = None) -> None:
        """``notify`` for a document many actions read: each of ``paths`` compared once,
        its readers scheduled in bulk (a fan-out's thousand readers of one input)."""
        pending = self._pending
        heap = self._heap
        for path in paths:
            actions = by_path[path]
            if path == ():
                if not _root_differs(before, after, written):
                    continue
            elif json_equal(get_path(before, path), get_path(after, path)):
                continue
            fresh = [a for a in actions if a not in pending and a.active and a is not source]
            if not fresh:
                continue
            pending.update(fresh)
            keys = [(a.height << SEQ_BITS) | a.seq for a in fresh]
            self._queued.update(zip(keys, fresh, strict=True))
            if len(keys) * 2 > len(heap):
                heap.extend(keys)
                heapq.heapify(heap)  # (linear, in C)
            else:
                for key in keys:
                    heapq.heappush(heap, key)

    # -- events ---------------------------------------------------------------------

    def add_handler(self, handler: EventHandler) -> None:
        self._handlers.setdefault(handler.stream, []).append(handler)

    def remove_handler(self, handler: EventHandler) -> None:
        handler.active = False
        handlers = self._handlers.get(handler.stream)
        if handlers and handler in handlers:
            handlers.remove(handler)
            if not handlers:
                del self._handlers[handler.stream]

    def actions(self, name: str | None = None) -> list[Action]:
        """The actions with a place in the graph now (those named ``name``), for
        inspection: a test, a debugger, a notebook asking what runs."""
        return [a for a in self._known if name is None or a.name == name]

    def has_handlers(self, stream: Address) -> bool:
        return bool(self._handlers.get(stream))

    def queue_event(self, stream: Address, event: Any) -> int:
        """Queue ``event`` for every handler of ``stream``; returns how many."""
        handlers = self._handlers.get(stream, ())
        for handler in handlers:
            self._events.append((handler, event, EVENT_RETRIES, None))
        if not handlers:
            self._rt._on_unhandled_event(stream, event)
        return len(handlers)

    # -- running ------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._settling

    def settle(self) -> None:
        """Run until nothing is pending and the event queue is empty."""
        if self._settling or (not self._heap and not self._events):
            return  # busy already, or nothing to do (a busy period leaves nothing to clear)
        self._settling = True
        try:
            while True:
                self._drain()
                if self._flush():  # derived writes land before any handler runs
                    continue  # lost to another writer: their nodes re-run
                if self._events:
                    self._run_event(*self._events.popleft())
                    continue
                break
        finally:
            self._flush(final=True)
            self._settling = False
            self._runs.clear()
            self._dormant.clear()
            self._flush_conflicts = 0
            if not self._pending:  # (a set keeps the table it grew to: a fan-out's thousands)
                self._pending.clear()
            if not self._queued:
                self._queued.clear()
        for callback in self.on_quiet:
            callback()

    def _flush(self, final: bool = False) -> bool:
        """Commit the drain's derived writes (one store commit per space).

        Returns True when the commit lost to another writer: its documents are
        dropped and the nodes that wrote them are scheduled again, so they
        recompute from the fresh data (after ``REACTIVE_RETRIES`` losses in one
        busy period, each records the conflict instead).
        """
        writeback = self._rt.writeback
        if writeback is None or not writeback:
            return False
        landed, self._landed = self._landed, set()
        try:
            writeback.flush()
        except ConflictError as exc:
            writeback.discard()
            self._flush_conflicts += 1
            tb = traceback.format_exc()
            if final or self._flush_conflicts >= REACTIVE_RETRIES:
                for action in landed:
                    self._record(action, exc, tb)
                return False
            self._rt._poll()  # the other writer's documents, and who reads them
            for action in landed:
                self._schedule(action)
            return True
        except Exception as exc:  # the store refused the commit (an outage, a closed store)
            writeback.discard()
            tb = traceback.format_exc()
            for action in landed:
                self._record(action, exc, tb)
        return False

    def _drain(self) -> None:
        heap = self._heap
        pending = self._pending
        runs = self._runs
        queued = self._queued
        heappop = heapq.heappop
        io = None  # ``_plan_io()``, asked for once at the first plan
        while heap:
            key = heappop(heap)
            action = queued.pop(key, None)  # (None: the same key was queued twice)
            if action is None or action not in pending or key >> SEQ_BITS != action.height:
                continue  # stale entry: already run, or a newer entry carries its height
            pending.discard(action)
            if not action.active:
                continue
            count = runs.get(action, 0) + 1
            runs[action] = count
            if count > MAX_ITERATIONS:
                if action not in self._dormant:
                    self._dormant.add(action)
                    self._record(
                        action,
                        IterationLimitError(
                            f"{action.name} was scheduled more than {MAX_ITERATIONS} times in "
                            "one busy period (a cycle?); it stays dormant until its inputs "
                            "change from outside the cycle"
                        ),
                        "",
                    )
                continue
            plan = action.plan
            if plan is not None and not action.retries and action.reads:
                # the common case, without ``run_action``'s frames (a fan-out runs thousands)
                if io is None:
                    io = self._plan_io()
                if not self._run_planned(action, plan, *io):
                    self._run_general(action)
                continue
            self.run_action(action)

    def run_action(self, action: Action) -> None:
        """Run one action now, commit, re-subscribe, and notify readers."""
        if action.retries:  # a retry after a conflict: spread contending writers apart
            time.sleep(backoff_delay(action.retries))
            if action.retries >= REACTIVE_RETRIES - 1:  # the last attempt cannot lose
                with write_lock(self._rt.store):
                    self._run_action(action)
                return
        self._run_action(action)

    def _plan_io(self) -> tuple[Callable[[DocKey], Any], Any, bool]:
        """(load by key, the land_value a plan lands with now, whether that is the layer's)."""
        io = self._plan_stores
        if io is None:  # worked out once: the store and its layer never change
            rt = self._rt
            view = rt.writeback if rt.writeback is not None else rt.store
            load_key = getattr(view, "load_key", None)
            if load_key is None:  # (a store without it: its ``load``, by key)
                load = view.load
                load_key = lambda key: load(*key)  # noqa: E731
            io = self._plan_stores = (load_key, getattr(rt.store, "land_value", None),
                                      getattr(rt.writeback, "land_value", None))
        deferred = io[2] is not None and self._settling
        return io[0], io[2] if deferred else io[1], deferred

    def _run_planned(self, action: Action, plan: Callable[[Any, Any], Any],
                     load: Callable[[DocKey], Any], land: Any, deferred: bool) -> bool:
        """Run ``action``'s plan; False when it hands the run to the general path.

        ``load``, ``land`` and ``deferred`` are ``_plan_io()``'s (a drain asks once).
        """
        if land is None:  # a store without the one-document landing: the general run
            return False
        try:
            changes = plan(load, land)
        except ConflictError as exc:
            action.retries += 1
            if action.retries < REACTIVE_RETRIES:
                self._schedule(action)
            else:
                action.retries = 0
                self._record(action, exc, traceback.format_exc())
            self.run_count += 1
            return True
        except Exception as exc:
            self.run_count += 1
            self._record(action, exc, traceback.format_exc())
            return True
        if changes is NOT_PLANNED:
            return False
        self.run_count += 1
        action.retries = 0
        for callback in self.on_run:
            callback(action)
        if changes:
            if deferred:
                self._landed.add(action)
            # (a leaf nobody reads needs no call; ``change[:2]`` is its document's key)
            if len(changes) > 1 or changes[0][:2] in self._triggers:
                self.notify(changes, action)
        return True

    def _run_action(self, action: Action) -> None:
        plan = action.plan
        if plan is not None and action.reads and self._run_planned(action, plan,
                                                                    *self._plan_io()):
            return
        self._run_general(action)

    def _run_general(self, action: Action) -> None:
        """Run ``action`` in a transaction of its own (anything a plan does not cover)."""
        rt = self._rt
        writeback = rt.writeback
        tx = Transaction(rt.store, frame=action.frame, view=writeback)
        if writeback is not None and self._settling:
            tx.defer = writeback  # group commit: lands in the layer, flushed after the drain
        token = current_tx.set(tx)
        self.run_count += 1
        failed = False
        try:
            result = action.fn(tx)
            if result is not None and inspect.isawaitable(result):
                self._async.append(self._guarded(action, result))
        except Exception as exc:
            failed = True
            tx.abort()
            self._record(action, exc, traceback.format_exc())
        finally:
            current_tx.reset(token)
        reads = tx.reads if tx.reads or not failed else action.reads or list(action.declared_reads)
        # (_set_reads copies the list when it keeps it)
        manual = action.changed is not None  # an incremental action keeps its subscription
        if failed:
            if not manual:
                self._set_reads(action, reads)
            return
        try:
            changes = tx.commit()
        except ConflictError as exc:
            action.retries += 1
            if not manual:
                self._set_reads(action, reads)
            if action.retries < REACTIVE_RETRIES:
                self._schedule(action)
            else:  # give up for now, visibly: the next change of an input runs it again
                action.retries = 0
                self._record(action, exc, traceback.format_exc())
            return
        action.retries = 0
        if changes and tx.defer is not None:
            self._landed.add(action)
        if not manual and (reads != action.reads or not reads):  # (usually what it read last)
            self._set_reads(action, reads)
        learned: list[tuple[str, str, Path]] = []
        all_writers = self._writers
        for space, entity_id, path in tx.writes:
            writers = all_writers.get((space, entity_id))
            if writers is None:
                writers = all_writers[(space, entity_id)] = {}
            known = writers.get(action, ())
            if path not in known and not any(paths_overlap(path, k) for k in known):
                writers[action] = _with_path(known, path)
                _own_writes(action)[(space, entity_id, path)] = None
                learned.append((space, entity_id, path))
                if self._wgroups:
                    self._wgroup((space, entity_id), action, path)
        if learned:  # only readers of what is new: a map starting one child is O(1), not O(N)
            for reader in list(self._readers_of(action, learned)):
                self._adjust_height(reader)
        for callback in self.on_run:
            callback(action)
        if changes:
            self.notify(changes, action, tx)

    def _run_event(self, handler: EventHandler, event: Any, retries: int, _cb: Any) -> None:
        if not handler.active:
            return
        attempt = EVENT_RETRIES - retries  # 0: the first try
        if attempt > 0:
            time.sleep(backoff_delay(attempt))  # a retry: spread contending writers apart
        # the last attempt holds the store's write lock, so it cannot conflict (not for an
        # async handler: the lock would be held across its awaits)
        lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if retries == 0 and attempt > 0 and not handler.is_async:
            lock = write_lock(self._rt.store)
        with lock:
            self._run_event_once(handler, event, retries)

    def _run_event_once(self, handler: EventHandler, event: Any, retries: int) -> None:
        rt = self._rt
        tx = rt._begin(frame={"event": rt._new_event_id(), "handler": handler.node})
        token = current_tx.set(tx)
        try:
            result = handler.fn(tx, event)
            if inspect.isawaitable(result):
                # an async handler is one transaction that commits when it returns
                self._async.append(self._finish_event(handler, event, retries, tx, result))
                return
        except Exception as exc:
            tx.abort()
            self._record(handler, exc, traceback.format_exc(), event)
            return
        finally:
            current_tx.reset(token)
        self._commit_event(handler, event, retries, tx)

    def _commit_event(
        self, handler: EventHandler, event: Any, retries: int, tx: Transaction
    ) -> None:
        try:
            changes = tx.commit()
        except ConflictError as exc:
            if retries > 0:
                self._events.appendleft((handler, event, retries - 1, None))
            else:
                self._record(handler, _dropped(exc, event), traceback.format_exc(), event)
            return
        except Exception as exc:  # the store refused the commit (bad data, an outage)
            self._record(handler, exc, traceback.format_exc(), event)
            return
        for callback in self.on_run:  # a view flashes the handler, however the event came
            callback(handler)
        if changes:
            self.note_written(changes, tx)
            self.notify(changes, None)

    async def _finish_event(
        self, handler: EventHandler, event: Any, retries: int, tx: Transaction, awaitable: Any
    ) -> None:
        """Await an async handler inside its transaction, then commit it (or land nothing)."""
        token = current_tx.set(tx)
        try:
            await awaitable
        except Exception as exc:
            tx.abort()
            self._record(handler, exc, traceback.format_exc(), event)
            return
        finally:
            current_tx.reset(token)
        if tx.status != "open":  # aborted meanwhile (the runtime closed)
            return
        self._commit_event(handler, event, retries, tx)

    async def _guarded(self, action: Action, awaitable: Any) -> Any:
        """Await an action's awaitable; its failure is recorded on it, never lost."""
        try:
            return await awaitable
        except Exception as exc:
            self._record(action, exc, traceback.format_exc())
            return None

    def _record(
        self, action: Action | EventHandler, exc: BaseException, tb: str, *event: Any
    ) -> None:
        """Record ``exc`` on ``action`` (for a handler, ``event`` names what it failed on)."""
        error = NodeError(
            action.node,
            exc,
            pattern=action.pattern,
            space=action.space,
            traceback=tb,
            name=action.name,
            event=event[0] if event else None,
            has_event=bool(event),
        )
        log.debug("node %s failed: %s", action.name, exc)
        self._rt._record_error(error)
        on_error = getattr(action, "on_error", None)
        if on_error is not None:
            on_error(error)

    # -- sinks ------------------------------------------------------------------

    def sink(self, cell: Cell[Any], callback: Callable[[Any], Any]) -> Callable[[], None]:
        """An effect that calls ``callback(cell.get())`` now and on every change."""

        def run(tx: Transaction) -> None:
            callback(cell.with_tx(tx).get())

        action = Action(run, name=f"sink {cell!r}", kind="effect", space=cell.space)
        action.active = True
        self.run_action(action)
        self._rt._settle_if_free()  # not inside rt.batch(): that settles at its end

        def cancel() -> None:
            self.unsubscribe(action)

        return cancel

    # -- async ------------------------------------------------------------------

    def take_async(self) -> list[Any]:
        pending, self._async = self._async, []
        return pending

    def quiet(self) -> bool:
        return not self._pending and not self._events and not self._async

    def stats(self) -> dict[str, int]:
        return {
            "runs": self.run_count,
            "triggers": sum(len(t) for t in self._triggers.values()),
            "handlers": sum(len(h) for h in self._handlers.values()),
        }


def _dropped(exc: ConflictError, event: Any) -> ConflictError:
    """The conflict that dropped ``event``, saying so (the original is its cause)."""
    try:
        text = repr(event)
    except Exception:
        text = f"<{type(event).__name__}>"
    if len(text) > 200:
        text = text[:197] + "..."
    dropped = ConflictError(
        f"event {text} dropped after {EVENT_RETRIES + 1} attempts, each lost to a "
        f"concurrent commit; the last: {exc}",
        conflicts=exc.conflicts,
    )
    dropped.__cause__ = exc
    return dropped
