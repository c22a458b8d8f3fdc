"""Documents, changes and the ``Store`` contract every store keeps (SPEC §2).

A store holds documents keyed by ``(space, entity_id)``. Every commit is a
compare-and-swap over every document the transaction touched (read or written),
so two writers — threads, ``Store`` objects or processes — can never silently
lose each other's updates: the loser gets a ``ConflictError`` and retries.

Returned ``Document`` objects are shared with the store's cache: treat their
``value``/``source``/``meta`` as immutable (copy before editing).  This module
also holds what every store uses to check and encode a commit before it
touches storage.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple, Protocol, TypeAlias, runtime_checkable

from cellkernel.data.values import json_equal
from cellkernel.errors import ConflictError

JSON: TypeAlias = bool | int | float | str | list["JSON"] | dict[str, "JSON"] | None

Key: TypeAlias = tuple[str, str]
#: what a one-document landing (``land_value``) read besides the document it replaces: each
#: document as it was read (None: absent), checked to be so still
ReadBasis: TypeAlias = list[tuple[Key, "Document | None"]]

#: builds a tuple subclass's instance from a tuple, in C (``new_document``)
_tuple_new = tuple.__new__

#: an ASCII string's JSON text (what ``dumps`` gives it), in C
_encode_ascii = json.encoder.encode_basestring_ascii


class _DocumentFields(NamedTuple):
    value: JSON
    source: JSON
    meta: Mapping[str, JSON]
    version: int


class Document(_DocumentFields):
    """One stored document; ``version`` lets a transaction prove what it read.

    An immutable tuple rather than a frozen dataclass: stores build one per
    write (thousands per settle), and a tuple is built in C in a quarter of
    the time a frozen dataclass's slots take to set.
    """

    __slots__ = ()

    def __new__(
        cls, value: JSON, source: JSON = None, meta: Mapping[str, JSON] | None = None,
        version: int = 0,
    ) -> Document:
        return _tuple_new(cls, (value, source, {} if meta is None else meta, version))


class Change(NamedTuple):
    """A committed write, with both sides so subscribers can diff at their path."""

    space: str
    entity_id: str
    before: Document | None
    after: Document


@runtime_checkable
class Store(Protocol):
    """What the transaction layer needs from durable storage."""

    url: str

    def load(self, space: str, entity_id: str) -> Document | None: ...

    def commit(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]: ...

    def poll(self) -> list[Change]: ...

    def entity_ids(self, space: str) -> list[str]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- encoding


def encode_part(part: str, value: Any) -> tuple[str, Any]:
    """Encode one part and return (text, decoded copy).

    The decoded copy is what gets cached, so later mutation of the caller's
    object cannot leak into the store. Comparing it with the input catches what
    ``json.dumps`` would silently coerce (non-string keys, tuples, duplicate keys
    after coercion) — a store that rewrote data on the way in would be lying.

    Exact scalars (and the empty meta) need no round trip: their text is
    direct and the value is its own immutable copy.
    """
    t = type(value)
    if value is None:
        return "null", None
    if t is bool:
        return ("true" if value else "false"), value
    if t is int and INT_FLOOR < value < INT_LIMIT:
        return int.__repr__(value), value
    if t is str and value.isascii():
        return _encode_ascii(value), value
    if t is dict and not value:
        return "{}", {}
    text = _text(part, value)
    decoded = loads(text)
    if not json_equal(decoded, value):
        raise ValueError(
            f"document {part} is not normalised JSON (tuples, non-string keys or "
            f"JSON-like subclasses are not allowed): {value!r}"
        )
    return text, decoded


def _text(part: str, value: Any) -> str:
    """The JSON text of ``value``, refused (``ValueError`` naming ``part``) when it is not JSON
    or holds a lone surrogate, which UTF-8 cannot store."""
    try:
        text = dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValueError(f"document {part} is not JSON: {exc}") from None
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError(
                f"document {part} is not JSON: a lone surrogate {text[exc.start]!r} "
                "is not a Unicode character"
            ) from None
    return text


class OwnedCommits:
    """A store that encodes JSON text: ``commit`` is ``commit_owned`` with nothing owned.

    ``commit_owned`` names the documents whose value the transaction layer owns
    (``encode_owned``): their values are encoded without the round trip that
    checks a caller's value, so a large document written one element at a time
    costs its text, not a decode and a comparison too.  ``Transaction.commit``
    calls it where a store has it.
    """

    def commit(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
    ) -> list[Change]:
        return self.commit_owned(space, writes, basis, ())

    def commit_owned(
        self,
        space: str,
        writes: Mapping[str, Document],
        basis: Mapping[tuple[str, str], int],
        owned: Collection[str],
    ) -> list[Change]:
        raise NotImplementedError


class Encoded(NamedTuple):
    value: str
    source: str
    meta: str
    doc: Document  # decoded copy, version still unassigned


def encode_owned(part: str, value: Any) -> tuple[str, Any]:
    """``encode_part`` of a value the transaction layer owns: its own decoded copy.

    Owned means built from the store's own JSON and checked scalars, or handed
    over by its maker (``Transaction.hand_over``): plain, normalised JSON that
    nobody changes again, which ``MemoryStore`` keeps uncopied for the same
    reason.  So no round trip and no comparison: only the text, and its check
    for a lone surrogate (a ``str`` the write did not check).
    """
    t = type(value)
    if t is not dict and t is not list:
        return encode_part(part, value)
    return _text(part, value), value


def encode_document(space: str, entity_id: str, doc: object, owned: bool = False) -> Encoded:
    if type(doc) is not Document and not isinstance(doc, Document):
        raise TypeError(
            f"write of {entity_id!r} in space {space!r} is {type(doc).__name__}, not Document"
        )
    value, source, meta = doc.value, doc.source, doc.meta
    if type(value) is int and INT_FLOOR < value < INT_LIMIT and source is None and (
        type(meta) is dict and not meta
    ):  # the usual derived document: a number, no source, no meta (no names to build)
        encoded: Encoded = new_encoded((int.__repr__(value), "null", "{}",
                                        new_document((value, None, {}, 0))))
        return encoded
    where = f"{entity_id!r} in space {space!r}"
    if not isinstance(meta, Mapping):
        raise ValueError(f"document meta of {where} is not a mapping: {meta!r}")
    value_text, value = (encode_owned if owned else encode_part)(f"value of {where}", value)
    source_text, source = encode_part(f"source of {where}", source)
    meta_text, meta = encode_part(f"meta of {where}", dict(meta))
    encoded = new_encoded(
        (value_text, source_text, meta_text, new_document((value, source, meta, 0)))
    )
    return encoded


def check_key(space: object, entity_id: object) -> None:
    if not isinstance(space, str) or not isinstance(entity_id, str):
        raise TypeError(f"space and entity id must be str, got {space!r}, {entity_id!r}")


def conflict_error(space: str, conflicts: list[tuple[Key, int, int]]) -> ConflictError:
    details = ", ".join(
        f"{cid!r} in space {cspace!r} is at version {current}, transaction read {read}"
        for (cspace, cid), read, current in conflicts
    )
    return ConflictError(
        f"commit to space {space!r} conflicts: {details}",
        conflicts=[key for key, _, _ in conflicts],
    )


def encode_commit(
    space: str, writes: Mapping[str, Document], basis: Mapping[tuple[str, str], int],
    owned: Collection[str] = (),
) -> dict[str, Encoded]:
    """Encode everything before touching storage, so bad input writes nothing.

    ``owned`` names the documents whose value the transaction layer owns
    (``encode_owned``).
    """
    for (space_id, entity_id), version in basis.items():
        if type(space_id) is not str or type(entity_id) is not str:
            check_key(space_id, entity_id)
        if type(version) is not int or version < 0:
            raise ValueError(f"basis versions must be ints >= 0, got {version!r}")
    encoded: dict[str, Encoded] = {}
    for entity_id, doc in writes.items():
        if type(space) is not str or type(entity_id) is not str:
            check_key(space, entity_id)
        encoded[entity_id] = encode_document(space, entity_id, doc, entity_id in owned)
    return encoded


# --------------------------------------------------------------------------- shared fast paths

#: ``json.dumps`` refuses ints past 4300 digits (``sys.int_info.str_digits_check_threshold``).
INT_LIMIT = 1 << 14_000
#: ``-INT_LIMIT``, made once: negating it anew costs a 1.8 KB allocation per compare
INT_FLOOR = -INT_LIMIT
#: Deeper values (and cycles) take the ``encode_part`` path, which reports them exactly as before.
FAST_DEPTH = 100


def landable(value: Any) -> bool:
    """A JSON scalar a store keeps as is: ``land_value`` takes only these (no copy, no check)."""
    t = type(value)
    if t is int:
        return bool(INT_FLOOR < value < INT_LIMIT)
    if t is str:
        if value.isascii():
            return True
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    return t is bool or value is None or (t is float and math.isfinite(value))


#: ``Document`` from its four fields as one tuple, built in C: no Python frame on the
#: per-write paths (``new_document((value, source, meta, version))``)
new_document: Callable[[tuple[Any, Any, Any, int]], Document] = functools.partial(
    _tuple_new, Document)
#: ``Change`` from ``(space, entity_id, before, after)``, likewise (one per landed write)
new_change: Callable[[tuple[str, str, Document | None, Document]], Change] = functools.partial(
    _tuple_new, Change)
#: ``Encoded`` from ``(value, source, meta, doc)``, likewise (one per stored document)
new_encoded: Callable[[tuple[str, str, str, Document]], Encoded] = functools.partial(
    _tuple_new, Encoded)


def replaced(before: Document | None, value: Any, version: int) -> Document:
    """``before`` with its value replaced (source and meta kept), at ``version``.

    What ``land_value`` stores: a new document when ``before`` is None.
    """
    if before is None:
        return new_document((value, None, {}, version))
    return new_document((value, before.source, before.meta, version))


# --------------------------------------------------------------------------- deep JSON
# ``json`` recurses once per nesting level (in C, against the recursion limit), so a
# document nested ~990 deep that was stored from a shallow stack cannot be read back
# from a deeper one.  Depth comes from data: these fall back to loops when it bites.

_WS = re.compile(r"[ \t\n\r]*")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None}


def loads(text: str) -> Any:
    """``json.loads`` that does not depend on the recursion limit."""
    try:
        return json.loads(text)
    except RecursionError:
        return _loads_iterative(text)


def _skip(text: str, pos: int) -> int:
    """The position after any whitespace at ``pos``."""
    m = _WS.match(text, pos)
    return m.end() if m is not None else pos


def _object_key(text: str, pos: int, scan: Any) -> tuple[str, int]:
    """An object's ``"key":`` at ``pos``: the key and the position of its value."""
    if pos >= len(text) or text[pos] != '"':
        raise json.JSONDecodeError("Expecting property name", text, pos)
    key, pos = scan(text, pos + 1)
    pos = _skip(text, pos)
    if pos >= len(text) or text[pos] != ":":
        raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
    return key, _skip(text, pos + 1)


def _loads_iterative(text: str) -> Any:
    """A JSON parser with an explicit stack (strings through the C ``scanstring``)."""
    number = _NUMBER.match
    scan = json.decoder.scanstring  # type: ignore[attr-defined]
    stack: list[tuple[Any, str | None]] = []  # (container, pending key of a dict)
    pos = _skip(text, 0)
    root: list[Any] = []
    while True:
        # -- a value starts at pos
        if pos >= len(text):
            raise json.JSONDecodeError("Expecting value", text, pos)
        ch = text[pos]
        value: Any
        if ch == "{" or ch == "[":
            container: Any = {} if ch == "{" else []
            pos = _skip(text, pos + 1)
            close = "}" if ch == "{" else "]"
            if pos < len(text) and text[pos] == close:
                value = container
                pos += 1
            else:
                if ch == "{":
                    first_key, pos = _object_key(text, pos, scan)
                    stack.append((container, first_key))
                else:
                    stack.append((container, None))
                continue
        elif ch == '"':
            value, pos = scan(text, pos + 1)
        else:
            m = number(text, pos)
            if m is not None and m.end() > pos:
                token = m.group(0)
                value = float(token) if m.group(1) or m.group(2) else int(token)
                pos = m.end()
            else:
                for word, constant in _CONSTANTS.items():
                    if text.startswith(word, pos):
                        value = constant
                        pos += len(word)
                        break
                else:
                    raise json.JSONDecodeError("Expecting value", text, pos)
        # -- a value ended: hand it to its container, closing containers as they end
        while True:
            pos = _skip(text, pos)
            if not stack:
                if pos != len(text):
                    raise json.JSONDecodeError("Extra data", text, pos)
                root.append(value)
                return root[0]
            container, key = stack[-1]
            if key is not None:
                container[key] = value
            else:
                container.append(value)
            close = "}" if key is not None else "]"
            if pos < len(text) and text[pos] == ",":
                pos = _skip(text, pos + 1)
                if key is not None:
                    next_key, pos = _object_key(text, pos, scan)
                    stack[-1] = (container, next_key)
                break  # the next value starts at pos
            if pos < len(text) and text[pos] == close:
                pos += 1
                stack.pop()
                value = container
                continue
            raise json.JSONDecodeError(f"Expecting ',' or '{close}'", text, pos)


def dumps(value: Any) -> str:
    """Compact JSON text (``ensure_ascii=False``, no NaN) not bound by the recursion limit."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except RecursionError:
        return _dumps_iterative(value)


def _dumps_iterative(value: Any) -> str:
    """The same text as ``json.dumps`` above, with an explicit stack (plain JSON only)."""
    quote = json.encoder.encode_basestring
    out: list[str] = []
    stack: list[Any] = [value]
    active: set[int] = set()
    while stack:
        item = stack.pop()
        t = type(item)
        if t is _Close:
            out.append(item.text)
            active.discard(item.ident)
        elif t is _Raw:
            out.append(item.text)
        elif t is str:
            out.append(quote(item))
        elif item is None:
            out.append("null")
        elif item is True:
            out.append("true")
        elif item is False:
            out.append("false")
        elif t is int:
            out.append(int.__repr__(item))
        elif t is float:
            if item != item or item in (float("inf"), float("-inf")):
                raise ValueError(f"Out of range float values are not JSON compliant: {item!r}")
            out.append(float.__repr__(item))
        elif t is dict or t is list:
            if id(item) in active:
                raise ValueError("Circular reference detected")
            active.add(id(item))
            if t is dict:
                out.append("{")
                stack.append(_Close("}", id(item)))
                entries = list(item.items())
                for i in range(len(entries) - 1, -1, -1):
                    k, v = entries[i]
                    if type(k) is not str:
                        raise TypeError(f"keys must be str, not {type(k).__name__}")
                    stack.append(v)
                    stack.append(_Raw(("," if i else "") + quote(k) + ":"))
            else:
                out.append("[")
                stack.append(_Close("]", id(item)))
                for i in range(len(item) - 1, -1, -1):
                    stack.append(item[i])
                    if i:
                        stack.append(_Raw(","))
        else:
            raise TypeError(f"Object of type {t.__name__} is not JSON serializable")
    return "".join(out)


class _Raw:
    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class _Close:
    __slots__ = ("ident", "text")

    def __init__(self, text: str, ident: int) -> None:
        self.text = text
        self.ident = ident
