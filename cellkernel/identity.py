"""Content identity: merkle references, byte-compatible with the npm ``merkle-reference``.

Every derived cell id is a hash of its cause, so ids computed here must equal the
ids the JavaScript runtime computes for the same data (``refer(v).toJSON()["/"]``
of ``merkle-reference`` 2.x), and hashing sits on a hot path.

The construction (github.com/Gozala/merkle-reference, docs/spec.md):

* a scalar is ``H(H(tag) || payload)`` where ``tag`` names the encoding
  (``merkle-structure:string/utf-8`` …) and ``payload`` is the raw encoding
  (UTF-8, signed LEB128, little-endian IEEE-754 double, one byte for booleans,
  nothing for null, the bytes themselves for bytes);
* a list is ``H(H(list-tag) || fold(item digests))``;
* a map is ``H(H(map-tag) || fold(H(key digest || value digest) …))`` with the
  entries sorted by the UTF-8 bytes of their keys;
* ``fold`` is a binary merkle fold (odd node raised, zero leaves is ``H(b"")``);
* a :class:`Reference` embedded in a value stands for the digest it carries, so
  replacing a sub-value by its reference does not change the id of the whole.

Numbers follow JavaScript: integral values (including integral floats, ``-0.0``
and Python ints rounded to the nearest double outside ``±2**53``) hash as LEB128
integers, the rest as doubles. The traversal is iterative, because nesting depth
comes from user data.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any, Final, Protocol, runtime_checkable

__all__ = [
    "Reference",
    "SupportsRefJSON",
    "create_ref",
    "entity_id",
    "entity_id_from_cause",
    "parse_entity_id",
    "refer",
]

_sha256 = hashlib.sha256


def _h(data: bytes) -> bytes:
    return _sha256(data).digest()


# CIDv1 header: version 1, multicodec 0x07 (merkle reference), sha2-256, 32 bytes.
_PREFIX: Final = b"\x01\x07\x12\x20"
_CID_LEN: Final = len(_PREFIX) + 32
_ENTITY_PREFIX: Final = "of:"

_TAG_NULL: Final = _h(b"merkle-structure:null")
_TAG_BOOL: Final = _h(b"merkle-structure:boolean/byte")
_TAG_INT: Final = _h(b"merkle-structure:integer/leb128")
_TAG_FLOAT: Final = _h(b"merkle-structure:float/double-precision")
_TAG_STR: Final = _h(b"merkle-structure:string/utf-8")
_TAG_BYTES: Final = _h(b"merkle-structure:bytes/raw")
_TAG_LIST: Final = _h(b"merkle-structure:list/item/ref-tree")
_TAG_MAP: Final = _h(b"merkle-structure:map/k+v/ref-tree")

_EMPTY_FOLD: Final = _h(b"")
_NULL: Final = _h(_TAG_NULL)
_TRUE: Final = _h(_TAG_BOOL + b"\x01")
_FALSE: Final = _h(_TAG_BOOL + b"\x00")
_EMPTY_LIST: Final = _h(_TAG_LIST + _EMPTY_FOLD)
_EMPTY_MAP: Final = _h(_TAG_MAP + _EMPTY_FOLD)

# JavaScript numbers are doubles; beyond this an int is first rounded to a double.
_SAFE_INT: Final = 2**53

# Leaf digests are pure functions of the leaf, so they are memoised; the dicts are
# cleared wholesale when full, which is cheaper than LRU bookkeeping on a hot path.
_CACHE_MAX: Final = 50_000
_str_cache: dict[str, bytes] = {}
_int_cache: dict[int, bytes] = {}
_float_cache: dict[float, bytes] = {}

_pack_double = struct.Struct("<d").pack

# base32 (RFC 4648, lower case, no padding), ten bits per table lookup.
_B32: Final = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS: Final = tuple(a + b for a in _B32 for b in _B32)
_B32_SHIFTS: Final = tuple(range(280, -10, -10))  # 36 bytes << 2 = 290 bits = 29 pairs
_B32_INDEX: Final = {c: i for i, c in enumerate(_B32)}


def _cid_string(raw: bytes) -> str:
    """Multibase ``b`` + base32 of the 36 CID bytes; hand-rolled because stdlib is slow."""
    n = int.from_bytes(raw, "big") << 2
    pairs = _B32_PAIRS
    return "b" + "".join([pairs[(n >> s) & 1023] for s in _B32_SHIFTS])


class Reference:
    """A merkle reference: the sha2-256 root of a value's reference tree.

    Immutable; equal when the digests are equal; ordered by the CID string so
    sorted references read in the same order as their printed ids.
    """

    __slots__ = ("_digest", "_cid")

    _digest: bytes
    _cid: str | None

    def __init__(self, digest: bytes) -> None:
        if type(digest) is not bytes:
            digest = bytes(digest)
        if len(digest) != 32:
            raise ValueError(f"a sha2-256 digest is 32 bytes, got {len(digest)}")
        self._digest = digest
        self._cid = None

    @classmethod
    def _of(cls, digest: bytes) -> Reference:
        """Trusted constructor for digests computed here (skips validation)."""
        self = object.__new__(cls)
        self._digest = digest
        self._cid = None
        return self

    @classmethod
    def from_bytes(cls, raw: bytes) -> Reference:
        """Reference from the 36 raw CID bytes (as :attr:`bytes` returns)."""
        raw = bytes(raw)
        if len(raw) != _CID_LEN or raw[:4] != _PREFIX:
            raise ValueError("not a merkle reference CID (expected 01 07 12 20 + 32 bytes)")
        return cls._of(raw[4:])

    @classmethod
    def parse(cls, cid: str) -> Reference:
        """Reference from its CID string (``baedrei…``); ``ValueError`` if malformed."""
        if not isinstance(cid, str):
            raise ValueError(f"a reference CID is a str, got {type(cid).__name__}")
        if len(cid) != 59 or cid[0] != "b":
            raise ValueError(f"malformed reference CID {cid!r}")
        index = _B32_INDEX
        n = 0
        try:
            for ch in cid[1:]:
                n = (n << 5) | index[ch]
        except KeyError:
            raise ValueError(f"malformed reference CID {cid!r}: not base32") from None
        if n & 0b11:
            raise ValueError(f"malformed reference CID {cid!r}: non-canonical padding")
        ref = cls.from_bytes((n >> 2).to_bytes(_CID_LEN, "big"))
        ref._cid = cid
        return ref

    @classmethod
    def from_json(cls, data: object) -> Reference:
        """Inverse of :meth:`to_json`."""
        if not isinstance(data, Mapping) or set(data) != {"/"}:
            raise ValueError(f'expected {{"/": cid}}, got {data!r}')
        return cls.parse(data["/"])

    @property
    def digest(self) -> bytes:
        """The 32-byte sha2-256 root."""
        return self._digest

    @property
    def bytes(self) -> bytes:
        """The raw CIDv1 bytes: ``01 07 12 20`` followed by the digest."""
        return _PREFIX + self._digest

    def to_json(self) -> dict[str, str]:
        """``{"/": cid}``, as ``Reference.toJSON()`` in JavaScript."""
        return {"/": str(self)}

    def __str__(self) -> str:
        cid = self._cid
        if cid is None:
            cid = self._cid = _cid_string(_PREFIX + self._digest)
        return cid

    def __repr__(self) -> str:
        return f"Reference({str(self)!r})"

    def __hash__(self) -> int:
        return hash(self._digest)

    def __eq__(self, other: object) -> bool:
        if type(other) is Reference:
            return self._digest == other._digest
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        if type(other) is Reference:
            return self._digest != other._digest
        return NotImplemented

    def __lt__(self, other: Reference) -> bool:
        if type(other) is Reference:
            return str(self) < str(other)
        return NotImplemented

    def __le__(self, other: Reference) -> bool:
        if type(other) is Reference:
            return str(self) <= str(other)
        return NotImplemented

    def __gt__(self, other: Reference) -> bool:
        if type(other) is Reference:
            return str(self) > str(other)
        return NotImplemented

    def __ge__(self, other: Reference) -> bool:
        if type(other) is Reference:
            return str(self) >= str(other)
        return NotImplemented

    def __reduce__(self) -> tuple[type[Reference], tuple[bytes]]:
        return (Reference, (self._digest,))

    def __copy__(self) -> Reference:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Reference:
        return self


@runtime_checkable
class SupportsRefJSON(Protocol):
    """An object hashed as the JSON it returns (cells hash as their entity-id JSON)."""

    def __ck_ref_json__(self) -> object: ...


# ---------------------------------------------------------------------------
# leaves (cache misses only: the hot loop looks the caches up inline)


def _str_leaf(s: str) -> bytes:
    try:
        payload = s.encode("utf-8")
    except UnicodeEncodeError:
        # JavaScript's TextEncoder: surrogate pairs combine, lone surrogates become U+FFFD.
        # Such strings are rare and are not cached (their key order needs care, see _Walk).
        fixed = s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
        return _h(_TAG_STR + fixed.encode("utf-8"))
    d = _h(_TAG_STR + payload)
    if len(_str_cache) >= _CACHE_MAX:
        _str_cache.clear()
    _str_cache[s] = d
    return d


def _leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if (n == 0 and not byte & 0x40) or (n == -1 and byte & 0x40):
            out.append(byte)
            return bytes(out)
        out.append(byte | 0x80)


def _int_leaf(n: int) -> bytes:
    key = n
    if not -_SAFE_INT <= n <= _SAFE_INT:
        try:
            n = int(float(n))  # what JavaScript would hold for this literal
        except OverflowError:
            raise ValueError(f"integer {n} is beyond the range of a JavaScript number") from None
    d = _h(_TAG_INT + _leb128(n))
    if len(_int_cache) >= _CACHE_MAX:
        _int_cache.clear()
    _int_cache[key] = d
    return d


def _float_leaf(f: float) -> bytes:
    if f.is_integer():
        i = int(f)
        d = _int_cache.get(i)
        return d if d is not None else _int_leaf(i)
    if not math.isfinite(f):
        raise ValueError(f"{f!r} cannot be hashed: JSON has no NaN or infinities")
    d = _h(_TAG_FLOAT + _pack_double(f))
    if len(_float_cache) >= _CACHE_MAX:
        _float_cache.clear()
    _float_cache[f] = d
    return d


def _fold(layer: list[bytes]) -> bytes:
    """Binary merkle fold of at least two digests; an odd node is raised a level."""
    h = _sha256
    while len(layer) > 1:
        it = iter(layer)
        nxt = [h(a + b).digest() for a, b in zip(it, it)]
        if len(layer) & 1:
            nxt.append(layer[-1])
        layer = nxt
    return layer[0]


def _js_key_order(key: str) -> bytes:
    return key.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


def _link_digest(d: dict[Any, Any]) -> bytes | None:
    """JS ``Reference.is``: any object whose ``"/"`` holds raw reference CID bytes is a link."""
    raw = d["/"]
    if (
        type(raw) in (bytes, bytearray)
        and len(raw) == _CID_LEN
        and raw[:4] == _PREFIX
    ):
        return bytes(raw[4:])
    return None


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_LIST_END: Final = _Marker("list end")
_MAP_END: Final = _Marker("map end")
_UNMARK: Final = _Marker("unmark")


def _type_error(value: object) -> TypeError:
    return TypeError(
        f"cannot hash a {type(value).__module__}.{type(value).__qualname__}: "
        "expected JSON (None, bool, int, float, str, list, tuple, dict with str keys), "
        "bytes, a Reference, or an object with __ck_ref_json__"
    )


def _digest(value: object) -> bytes:
    """Root digest of ``value``'s reference tree, computed with an explicit stack.

    ``work`` holds values still to visit plus end markers (preceded by their
    container); ``out`` holds finished digests in visiting order, so a container's
    children are the top ``len(container)`` (lists) or ``2 * len`` (maps: key,
    value, …) entries when its marker comes up.
    """
    sc = _str_cache
    ic = _int_cache
    h = _sha256
    work: list[Any] = [value]
    out: list[bytes] = []
    push = work.append
    pop = work.pop
    emit = out.append
    active: set[int] = set()  # ids of containers on the current path: cycles would never end

    while work:
        v = pop()
        t = type(v)
        if t is str:
            d = sc.get(v)
            emit(d if d is not None else _str_leaf(v))
        elif t is _Marker:
            container = pop()
            active.discard(id(container))
            if v is _LIST_END:
                n = len(container)
                if n == 1:
                    root = out.pop()
                else:
                    base = len(out) - n
                    root = _fold(out[base:])
                    del out[base:]
                emit(h(_TAG_LIST + root).digest())
            elif v is _MAP_END:
                n = len(container)
                base = len(out) - 2 * n
                if n == 1:
                    root = h(out[base] + out[base + 1]).digest()
                else:
                    it = iter(out[base:])
                    root = _fold([h(a + b).digest() for a, b in zip(it, it)])
                del out[base:]
                emit(h(_TAG_MAP + root).digest())
            # _UNMARK: only the discard above was needed
        elif t is dict:
            n = len(v)
            if n == 0:
                emit(_EMPTY_MAP)
                continue
            if "/" in v:
                link = _link_digest(v)
                if link is not None:
                    emit(link)
                    continue
            _expand_map(v, n, push, active)
        elif t is list or t is tuple:
            n = len(v)
            if n == 0:
                emit(_EMPTY_LIST)
                continue
            i = id(v)
            if i in active:
                raise ValueError("cannot hash a cyclic structure")
            active.add(i)
            push(v)
            push(_LIST_END)
            work.extend(reversed(v))
        elif t is int:
            d = ic.get(v)
            emit(d if d is not None else _int_leaf(v))
        elif v is None:
            emit(_NULL)
        elif t is bool:
            emit(_TRUE if v else _FALSE)
        elif t is float:
            d = _float_cache.get(v)
            emit(d if d is not None else _float_leaf(v))
        elif t is Reference:
            emit(v._digest)
        elif t is bytes or t is bytearray:
            emit(h(_TAG_BYTES + v).digest())
        else:
            _expand_other(v, push, active)

    return out[0]


def _expand_map(v: Mapping[Any, Any], n: int, push: Any, active: set[int]) -> None:
    i = id(v)
    if i in active:
        raise ValueError("cannot hash a cyclic structure")
    try:
        joined = "".join(v)
    except TypeError:
        bad = next(k for k in v if not isinstance(k, str))
        raise TypeError(
            f"cannot hash a dict with a {type(bad).__name__} key {bad!r}: keys must be str"
        ) from None
    keys: list[str] = sorted(v) if n > 1 else list(v)
    if n > 1 and not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates sort as U+FFFD, as in JavaScript
            keys = sorted(v, key=_js_key_order)
    active.add(i)
    push(v)
    push(_MAP_END)
    for k in reversed(keys):
        push(v[k])
        push(k)


def _expand_other(v: object, push: Any, active: set[int]) -> None:
    """Slow path: ``__ck_ref_json__`` objects, subclasses of the JSON types, errors."""
    t = type(v)
    convert = getattr(t, "__ck_ref_json__", None)
    if convert is not None:
        replacement = convert(v)
        if replacement is v:
            raise TypeError(f"{t.__qualname__}.__ck_ref_json__ returned the object itself")
        _push_guarded(v, replacement, push, active)
    elif isinstance(v, bool):  # pragma: no cover - bool cannot be subclassed
        push(bool(v))
    elif isinstance(v, int):
        push(int(v))
    elif isinstance(v, float):
        push(float(v))
    elif isinstance(v, str):
        push(str.__str__(v))
    elif isinstance(v, (bytes, bytearray)):
        push(bytes(v))
    elif isinstance(v, (list, tuple)):
        _push_guarded(v, list(v), push, active)
    elif isinstance(v, dict):
        _push_guarded(v, dict(v), push, active)
    else:
        raise _type_error(v)


def _push_guarded(original: object, replacement: object, push: Any, active: set[int]) -> None:
    """Visit ``replacement`` in place of ``original`` while ``original`` counts as on the path."""
    i = id(original)
    if i in active:
        raise ValueError("cannot hash a cyclic structure")
    active.add(i)
    push(original)
    push(_UNMARK)
    push(replacement)


# ---------------------------------------------------------------------------
# public API


def refer(value: object) -> Reference:
    """Merkle reference of ``value``, equal to ``refer(value)`` of npm ``merkle-reference`` 2.x.

    Accepts JSON values (``None``, ``bool``, ``int``, ``float``, ``str``, ``list``,
    ``tuple`` — hashed as a list — and ``dict`` with ``str`` keys), ``bytes``
    (``Uint8Array`` in JavaScript), embedded :class:`Reference` objects (hashed as
    the digest they carry) and objects with ``__ck_ref_json__`` (hashed as the
    JSON it returns).

    Raises ``ValueError`` for NaN, infinities, ints beyond the double range and
    cyclic structures; ``TypeError`` for dict keys that are not ``str`` and for
    any other type.
    """
    if type(value) is Reference:
        return value
    return Reference._of(_digest(value))


def create_ref(source: Mapping[str, object], cause: object) -> Reference:
    """``refer({**source, "causal": cause})``: the id of something derived from a cause."""
    return Reference._of(_digest({**source, "causal": cause}))


def entity_id(ref_or_value: object) -> str:
    """``"of:" + cid`` — the document id for a reference, or for the reference of a value."""
    ref = ref_or_value if type(ref_or_value) is Reference else refer(ref_or_value)
    return _ENTITY_PREFIX + str(ref)


def entity_id_from_cause(cause: object) -> str:
    """Entity id of a document created by ``cause`` alone (``create_ref({}, cause)``)."""
    return _ENTITY_PREFIX + str(Reference._of(_digest({"causal": cause})))


def parse_entity_id(entity: str) -> Reference:
    """Inverse of :func:`entity_id`; ``ValueError`` unless ``entity`` is ``"of:" + cid``."""
    if not isinstance(entity, str) or not entity.startswith(_ENTITY_PREFIX):
        raise ValueError(f"malformed entity id {entity!r}: expected 'of:' followed by a CID")
    return Reference.parse(entity[len(_ENTITY_PREFIX) :])
