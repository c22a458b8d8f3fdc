"""The readers of one document grouped by the path they read, and which paths a write reaches.

A document that many actions read (a list whose elements each feed a lift) is
notified by groups: each path is compared once and its readers are scheduled
together.  When the scheduler also knows the paths a write went through (its
transaction's journal: ``Scheduler.note_written`` for a write outside any action,
the action's own transaction otherwise), ``PathGroups.reached`` names the few read paths
that write can have changed, so a one-element write compares O(depth + those
readers), not every path of the document.  The values at the named paths are
still compared: this narrows, it never decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cellkernel.data.values import MISSING, Path, as_index

#: a trie node's key for the read paths that end at that node (paths hold str and int)
_END: Any = None
#: a list whose length changed by more than this is searched whole, not index by index
_SPAN = 64


class PathGroups:
    """Readers by path (``by_path``), and a trie of those paths (``reached``).

    Kept up to date as readers come and go (``add``, ``remove``): a map whose
    element changed re-subscribes one reader, which must not rebuild the groups
    of every other reader of the document.
    """

    __slots__ = ("_trie", "by_path")

    def __init__(self, by_path: dict[Path, dict[Any, None]]) -> None:
        self.by_path = by_path
        self._trie: dict[Any, Any] | None = None

    def _root(self) -> dict[Any, Any]:
        trie = self._trie
        if trie is None:
            trie = self._trie = {}
            for path in self.by_path:
                _insert(trie, path)
        return trie

    def add(self, action: Any, paths: Sequence[Any], *, reader: bool = True) -> bool:
        """``action`` reads (or, not ``reader``, writes) ``paths`` too; False if it cannot
        be grouped (see ``path_groups``)."""
        if reader and action.changed is not None:
            return False
        by_path = self.by_path
        for path in paths:
            if type(path) is not tuple:
                return False
            readers = by_path.get(path)
            if readers is None:
                readers = by_path[path] = {}
                if self._trie is not None:
                    _insert(self._trie, path)
            readers[action] = None
        return True

    def remove(self, action: Any, paths: Sequence[Any]) -> None:
        """``action`` no longer reads ``paths``."""
        by_path = self.by_path
        for path in paths:
            readers = by_path.get(path)
            if readers is None or readers.pop(action, MISSING) is MISSING or readers:
                continue
            del by_path[path]
            if self._trie is not None:
                _delete(self._trie, path)

    def reached(self, before: Any, after: Any, written: list[Path]) -> list[Path] | None:
        """The read paths that a write along ``written`` can have changed, or None.

        A read path is reached when it is a prefix of a written path or lies
        below one.  Every spelling of a list index is one trie key (``"3"`` and
        ``3`` read the same element).  Where a written path crosses a list whose
        length changed, the indices between the old and the new length are
        reached (a write past the end pads with ``None``), and so is a read of
        ``"length"``.  Where the container on the way is not the same kind
        before and after, everything below it is.  None when a length moved by
        more than ``_SPAN``: the caller compares every path.
        """
        found: list[Path] = []
        whole: list[dict[Any, Any]] = []  # subtrees reached whole
        root = self._root()
        for path in written:
            node: dict[Any, Any] | None = root
            b, a = before, after
            for part in path:
                assert node is not None
                tb = type(b)
                if tb is not type(a) or (tb is not dict and tb is not list):
                    break  # a container replaced or made here: all below it
                if _END in node:
                    found.extend(node[_END])
                key = as_index(part)
                if tb is list:
                    if len(b) != len(a):
                        low, high = sorted((len(b), len(a)))
                        if high - low > _SPAN:
                            return None
                        for i in (*range(low, high), "length"):
                            child = node.get(i)
                            if child is not None:
                                whole.append(child)
                    b = b[key] if type(key) is int and 0 <= key < len(b) else MISSING
                    a = a[key] if type(key) is int and 0 <= key < len(a) else MISSING
                else:
                    b, a = b.get(part, MISSING), a.get(part, MISSING)
                node = node.get(key)
                if node is None:
                    break
            if node is not None:
                whole.append(node)
        _ends_below(whole, found)
        return list(dict.fromkeys(found))  # (a path met twice is compared once)

    def overlapping(self, path: Path) -> list[Path]:
        """The grouped paths on or above ``path`` (its prefixes) and below it, every
        spelling of an index alike: the actions a reader or writer of ``path`` is
        ordered against (``Scheduler._needed_height`` / ``_lower_readers``)."""
        found: list[Path] = []
        node: dict[Any, Any] | None = self._root()
        for part in path:
            assert node is not None
            if _END in node:
                found.extend(node[_END])
            node = node.get(as_index(part))
            if node is None:
                return found
        _ends_below([node] if node is not None else [], found)
        return found


def _ends_below(nodes: list[dict[Any, Any]], found: list[Path]) -> None:
    """Extend ``found`` with the paths ending in or below ``nodes`` (each node once;
    iterative: paths are as deep as the user's data)."""
    seen: set[int] = set()
    while nodes:
        node = nodes.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        for key, child in node.items():
            if key is _END:
                found.extend(child)
            else:
                nodes.append(child)


def _insert(trie: dict[Any, Any], path: Path) -> None:
    node = trie
    for part in path:
        node = node.setdefault(as_index(part), {})
    node.setdefault(_END, []).append(path)  # (every spelling of it)


def _delete(trie: dict[Any, Any], path: Path) -> None:
    """Take ``path`` out of the trie, and the nodes it alone kept (iterative)."""
    way: list[tuple[dict[Any, Any], Any]] = []
    node = trie
    for part in path:
        key = as_index(part)
        way.append((node, key))
        node = node[key]
    ends = node[_END]
    ends.remove(path)
    if not ends:
        del node[_END]
    while way and not node:
        parent, key = way.pop()
        del parent[key]
        node = parent



def path_groups(triggers: Mapping[Any, Sequence[Any]]) -> PathGroups | None:
    """The readers of one document by the path they read; None if one is incremental.

    An incremental action (``Action.changed``) is told of every change to a
    document it reads while pending, which the per-action loop of ``notify`` does;
    that loop also takes a path that is not a tuple (it cannot key a group).
    """
    groups = PathGroups({})
    for action, paths in triggers.items():
        if not groups.add(action, paths):
            return None
    return groups
