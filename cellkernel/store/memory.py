"""``MemoryStore`` (``"memory:"``): process-local, for tests and scratch work.

Same compare-and-swap contract as SQLite; no persistence and nothing to poll.
Commits take the "owned value" fast path: parts already owned by the store are
not copied again (``Transaction.hand_over``, scalars over a copied spine).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from cellkernel.store.documents import (
    FAST_DEPTH,
    INT_FLOOR,
    INT_LIMIT,
    Change,
    Document,
    Key,
    ReadBasis,
    check_key,
    conflict_error,
    encode_part,
    new_change,
    new_document,
)

# --------------------------------------------------------------------------- memory fast path

def _text_ok(text: str) -> bool:
    """No lone surrogate (UTF-8 can hold it): else the slow path refuses it, naming where."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Declined(Exception):
    """The value is not plain normalised JSON: encode it the slow way for the exact error."""


def _plain(value: Any, prev: Any) -> Any:
    """A store-owned copy of plain normalised JSON (what ``encode_part`` would cache).

    Only exact ``dict``/``list``/``str``/``int``/``bool``/``None`` and finite
    ``float`` are copied here; anything else (subclasses, tuples, non-string
    keys, NaN, huge ints, deep nesting or cycles) raises ``_Declined`` so the
    caller falls back to ``encode_part`` and its error messages.  ``prev`` is the
    stored value the document had: a sub-value that *is* the stored object at
    the same position is already a store-owned copy and is shared, not walked
    (a transaction copies only the spine it writes, so siblings stay shared).
    """
    t = type(value)
    if (t is str and _text_ok(value)) or t is bool or value is None:
        return value
    if t is int:
        if INT_FLOOR < value < INT_LIMIT:
            return value
        raise _Declined
    if t is float:
        if value - value == 0.0:  # finite (inf - inf and nan - nan are nan)
            return value
        raise _Declined
    if value is prev:
        return value
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, Any, int]] = [(root, 0, value, prev, 0)]
    limit = INT_LIMIT
    floor = INT_FLOOR
    while stack:
        holder, key, item, before, depth = stack.pop()
        if depth >= FAST_DEPTH:
            raise _Declined
        t = type(item)
        if t is dict:
            out: dict[str, Any] = {}
            holder[key] = out
            old = before if type(before) is dict else None
            for k, v in item.items():
                if type(k) is not str or not (k.isascii() or _text_ok(k)):
                    raise _Declined
                tv = type(v)
                if (
                    (tv is str and v.isascii()) or tv is bool or v is None
                    or (tv is int and floor < v < limit)
                ):
                    out[k] = v
                elif old is not None and v is old.get(k, _Declined):
                    out[k] = v  # the stored object itself: already a store-owned copy
                else:
                    out[k] = None  # placeholder keeps the key order
                    stack.append((out, k, v, None if old is None else old.get(k), depth + 1))
        elif t is list:
            copy = list(item)
            holder[key] = copy
            old_l = before if type(before) is list else None
            n_old = len(old_l) if old_l is not None else 0
            for i, v in enumerate(item):
                tv = type(v)
                if (
                    (tv is str and v.isascii()) or tv is bool or v is None
                    or (tv is int and floor < v < limit)
                ):
                    continue
                prev_v = old_l[i] if i < n_old else None  # type: ignore[index]
                if v is prev_v:
                    continue
                stack.append((copy, i, v, prev_v, depth + 1))
        elif t is float:
            if item - item != 0.0:
                raise _Declined
            holder[key] = item
        elif (
            (t is str and _text_ok(item)) or t is bool or item is None
            or (t is int and floor < item < limit)
        ):
            holder[key] = item
        else:
            raise _Declined
    return root[0]




def _owned(part: str, value: Any, prev: Any, space: str, entity_id: str) -> Any:
    t = type(value)
    if (t is str and _text_ok(value)) or t is bool or value is None or value is prev:
        return value  # immutable, or the stored object itself
    if t is int and INT_FLOOR < value < INT_LIMIT:
        return value
    try:
        return _plain(value, prev)
    except _Declined:
        return encode_part(f"{part} of {entity_id!r} in space {space!r}", value)[1]


def _owned_meta(meta: Any, prev: Mapping[str, Any] | None, space: str, entity_id: str) -> Any:
    if type(meta) is dict and prev is not None and len(meta) == len(prev):
        for k, v in meta.items():
            if prev.get(k, _Declined) is not v:
                break
        else:
            return prev  # every entry is the stored object: nothing to copy
    plain = meta if type(meta) is dict else dict(meta)
    old = prev if type(prev) is dict else None
    return _owned("meta", plain, old, space, entity_id)


def _check_basis(basis: Mapping[tuple[str, str], int]) -> None:
    """The basis checks of ``encode_commit``, in its order (keys, then versions)."""
    for space_id, entity_id in basis:
        check_key(space_id, entity_id)
    for version in basis.values():
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ValueError(f"basis versions must be ints >= 0, got {version!r}")


def _memory_commit_docs(
    space: str,
    writes: Mapping[str, Document],
    basis: Mapping[tuple[str, str], int],
    docs: Mapping[Key, Document],
) -> list[tuple[str, Any, Any, Any]]:
    """``encode_commit`` for ``MemoryStore``: same checks and errors, no JSON text.

    The memory store never needs the encoded text, only a store-owned decoded
    copy; plain values are copied directly and sub-values still shared with
    the stored document are reused.  Anything unusual goes through ``encode_part``.
    Returns ``(entity_id, value, source, meta)`` per write, in order.
    """
    for key, version in basis.items():  # the plain case inline; anything else as before
        if (
            type(version) is not int
            or version < 0
            or type(key) is not tuple
            or len(key) != 2
            or type(key[0]) is not str
            or type(key[1]) is not str
        ):
            _check_basis(basis)
            break
    for entity_id, doc in writes.items():
        if type(entity_id) is not str or type(space) is not str:
            check_key(space, entity_id)  # per write: key, then document, then meta
        if type(doc) is not Document and not isinstance(doc, Document):
            raise TypeError(
                f"write of {entity_id!r} in space {space!r} is {type(doc).__name__}, not Document"
            )
        meta = doc.meta
        if type(meta) is not dict and not isinstance(meta, Mapping):
            where = f"{entity_id!r} in space {space!r}"
            raise ValueError(f"document meta of {where} is not a mapping: {meta!r}")
    parts = [
        (entity_id, doc.value, doc.source, doc.meta, False) for entity_id, doc in writes.items()
    ]
    return owned_parts(space, parts, docs)


def owned_parts(
    space: str,
    parts: list[tuple[str, Any, Any, Any, bool]],
    docs: Mapping[Key, Document],
    handed: set[int] | None = None,
) -> list[tuple[str, Any, Any, Any]]:
    """Store-owned copies of ``(entity_id, value, source, meta, owned)`` writes (see ``_plain``).

    A value marked ``owned`` is store-owned already (see ``commit_working``).
    ``handed`` holds the ids of values handed over by their maker (see
    ``Transaction.hand_over``): fresh plain JSON nobody changes again, kept as is.
    """
    owned: list[tuple[str, Any, Any, Any]] = []
    limit = INT_LIMIT
    floor = INT_FLOOR
    for entity_id, value, source, meta, is_owned in parts:
        if type(entity_id) is not str or type(space) is not str:
            check_key(space, entity_id)
        prev = docs.get((space, entity_id))
        # the usual commit writes a scalar (or the stored object itself) and keeps the
        # stored source and meta: nothing to copy, so no call for it
        pv = prev.value if prev is not None else None
        t = type(value)
        if not ((is_owned and t is not str) or (t is str and value.isascii()) or t is bool
                or value is None or (t is int and floor < value < limit)
                or (prev is not None and value is pv) or (handed and id(value) in handed)):
            value = _owned("value", value, pv, space, entity_id)
        if prev is None:
            if source is not None and not (handed and id(source) in handed):
                source = _owned("source", source, None, space, entity_id)
        elif source is not prev.source and not (handed and id(source) in handed):
            source = _owned("source", source, prev.source, space, entity_id)
        pm = prev.meta if prev is not None else None
        if prev is not None and meta is pm:
            meta_copy = pm
        elif not meta and type(meta) is dict:
            meta_copy = {}  # a new document's (the usual case): nothing to check
        elif handed and (kept := _handed_meta(meta, pm, handed)) is not None:
            meta_copy = kept
        else:
            meta_copy = _owned_meta(meta, pm, space, entity_id)
        owned.append((entity_id, value, source, meta_copy))
    return owned


def _handed_meta(meta: Any, prev: Mapping[str, Any] | None, handed: set[int]) -> Any:
    """A copy of ``meta`` if every entry is handed over, stored already or a small scalar.

    Otherwise None: the usual path copies (and checks) the whole meta.
    """
    if type(meta) is not dict:
        return None
    limit = INT_LIMIT
    floor = INT_FLOOR
    for key, entry in meta.items():
        t = type(entry)
        if type(key) is not str:
            return None
        if (
            id(entry) in handed
            or t is str or t is bool or entry is None or (t is int and floor < entry < limit)
            or (prev is not None and prev.get(key, _Declined) is entry)
        ):
            continue
        return None
    return dict(meta)


# --------------------------------------------------------------------------- memory


class MemoryStore:
    """Process-local store; same CAS contract as SQLite, no persistence, nothing to poll."""

    #: nothing outside this process writes it, so a runtime never needs to ``poll`` it
    external_writes = False

    def __init__(self) -> None:
        self.url = "memory:"
        self._lock = threading.RLock()
        self._docs: dict[Key, Document] = {}
        self._ids: dict[str, dict[str, None]] = {}  # per space, in creation order
        #: ``load`` by key, with no Python frame: the dict's own lookup (compiled plans)
        self.load_key: Callable[[Key], Document | None] = self._docs.get

    def load(self, space: str, entity_id: str) -> Document | None:
        # One dict lookup is atomic on its own; the lock (taken by ``commit``) never gave
        # a multi-document snapshot to a series of loads either: the CAS basis does that.
        return self._docs.get((space, entity_id))

    def commit(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]:
        return self._land(space, _memory_commit_docs(space, writes, basis, self._docs), basis)

    def commit_working(
        self,
        space: str,
        dirty: list[tuple[str, Any, Any, Any, bool]],
        working: Mapping[Key, Any],
        handed: set[int] | None = None,
    ) -> list[Change]:
        """``commit`` for a transaction: its changed documents and what it read them at.

        ``dirty`` holds ``(entity_id, value, source, meta, owned)`` per write, where
        ``owned`` says the value is already store-owned plain JSON (stored parts,
        a spine the transaction copied, scalars).  ``working`` maps every key the
        transaction touched to the document it read if it only read it, else to
        its view, whose ``base`` is the document it read (None if absent): a
        stored document is replaced on every commit, so the compare-and-swap is an
        identity check.  Values in ``handed`` were handed over
        (``Transaction.hand_over``) and are kept as is.
        """
        docs = self._docs
        owned: list[tuple[str, Any, Any, Any]] | None = None
        if len(dirty) == 1:  # the usual commit: one document, its source and meta kept
            entity_id, value, source, meta, is_owned = dirty[0]
            prev = docs.get((space, entity_id))
            if (
                prev is not None and source is prev.source and meta is prev.meta
                and is_owned and (type(value) is not str or value.isascii())
                and type(entity_id) is str and type(space) is str
            ):  # what ``owned_parts`` keeps as is, with no call for it
                owned = [(entity_id, value, source, meta)]
        if owned is None:
            owned = owned_parts(space, dirty, docs, handed)
        with self._lock:
            conflicts: list[tuple[Key, int, int]] | None = None
            for key, read in working.items():
                base = read if type(read) is Document else read.base
                current = docs.get(key)
                if current is not base:
                    if conflicts is None:
                        conflicts = []
                    conflicts.append((key, base.version if base is not None else 0,
                                      current.version if current is not None else 0))
            if conflicts:
                raise conflict_error(space, conflicts)
            return self._land_owned(space, owned)

    def land_value(self, space: str, entity_id: str, before: Document | None, value: Any,
                   read: ReadBasis) -> list[Change]:
        """``commit_working`` for one run that read ``read`` and replaces ``before`` whole.

        ``value`` is a JSON scalar (an owned copy by nature), or the stored value
        rebuilt along one path (``set_path``: a fresh spine, the rest the store's
        own; ``Runtime.set_scalar_at``), kept as it is; the stored source and meta
        stay.  The compare-and-swap is the same identity check.
        """
        key = (space, entity_id)
        docs = self._docs
        get = docs.get
        with self._lock:
            if get(key) is before:
                for k, d in read:
                    if get(k) is not d:
                        break
                else:  # nothing moved: land
                    if before is None:
                        after = new_document((value, None, {}, 1))
                        self._ids.setdefault(space, {})[entity_id] = None
                    else:  # (``replaced``, inline: this runs once per planned node)
                        after = new_document(
                            (value, before.source, before.meta, before.version + 1))
                    docs[key] = after
                    return [new_change((space, entity_id, before, after))]
            stale = [(k, d) for k, d in ((key, before), *read) if get(k) is not d]
            raise conflict_error(space, [
                (k, d.version if d is not None else 0,
                 (c.version if (c := get(k)) is not None else 0)) for k, d in stale])

    def _land(
        self,
        space: str,
        encoded: list[tuple[str, Any, Any, Any]],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]:
        docs = self._docs
        with self._lock:
            conflicts: list[tuple[Key, int, int]] | None = None
            for key, read in basis.items():
                current = docs.get(key)
                current_version = current.version if current is not None else 0
                if current_version != read:
                    if conflicts is None:
                        conflicts = []
                    conflicts.append((key, read, current_version))
            if conflicts:
                raise conflict_error(space, conflicts)
            return self._land_owned(space, encoded)

    def _land_owned(self, space: str, owned: list[tuple[str, Any, Any, Any]]) -> list[Change]:
        """Store checked, store-owned writes (the caller holds the lock, basis checked)."""
        docs = self._docs
        changes: list[Change] = []
        for entity_id, value, source, meta in owned:
            key = (space, entity_id)
            before = docs.get(key)
            after = new_document(
                (value, source, meta, (before.version if before is not None else 0) + 1)
            )
            if before is None:
                self._ids.setdefault(space, {})[entity_id] = None
            docs[key] = after
            changes.append(new_change((space, entity_id, before, after)))
        return changes

    def release(self, space: str, entity_ids: list[str]) -> int:
        """Delete documents nobody reads any more (a stopped map child's); returns how many.

        Not a commit: no version, no change reported.  Only the runner calls it,
        for documents of instances it stopped and did not start again.
        """
        docs = self._docs
        ids = self._ids.get(space, {})
        gone = 0
        with self._lock:
            for entity_id in entity_ids:
                if docs.pop((space, entity_id), None) is not None:
                    gone += 1
                ids.pop(entity_id, None)
        return gone

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the store's lock for a whole attempt: no other thread commits meanwhile."""
        with self._lock:
            yield

    def poll(self) -> list[Change]:
        """Nothing else can write a MemoryStore, so there is never anything to report."""
        return []

    def entity_ids(self, space: str) -> list[str]:
        with self._lock:
            return list(self._ids.get(space, ()))

    def close(self) -> None:
        """Nothing to release; kept so callers can treat every store alike."""

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return "MemoryStore()"


