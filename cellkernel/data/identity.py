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

Where this deliberately differs from, or is easy to confuse with, the JS package:

* ``str(ref)`` is the ``toJSON()["/"]`` form (``baedrei…``, with the CIDv1 version
  byte); JavaScript's ``String(ref)`` drops that byte and prints ``ba4jc…``.
* ``merkle-reference/json`` (a second entry point) calls ``toJSON()`` first, so an
  embedded Reference hashes there as the map ``{"/": cid}``; embed ``ref.to_json()``
  to get that id here.
* JavaScript hashes NaN and ±Infinity as doubles; JSON cannot carry them, so they
  raise ``ValueError`` here.
* The JS builder memoises trees per object identity, so mutating an object after
  hashing it there yields a stale id; nothing but leaves is memoised here.
"""

from __future__ import annotations

import builtins
import hashlib
import math
import struct
from collections.abc import Iterator, Mapping
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

# base32 (RFC 4648, lower case, no padding) of the 36 CID bytes, without a per-symbol loop:
# the bytes as one int, shifted so its 58 five-bit symbols (and six zero ones) fill 320
# bits, are spread out to one symbol per byte of a 64-byte int in six steps, each moving
# the upper half of every block of symbols up by its share of the widening (a block of
# ``g`` symbols grows from ``5g`` to ``8g`` bits); ``bytes.translate`` then spells them.
_B32: Final = "abcdefghijklmnopqrstuvwxyz234567"
_B32_INDEX: Final = {c: i for i, c in enumerate(_B32)}
_B32_SPELL: Final = bytes.maketrans(bytes(range(32)), _B32.encode())


def _b32_spread_steps() -> list[tuple[int, int]]:
    """``(mask, factor)`` per step: ``x += (x & mask) * factor`` adds ``(x & mask) << s``."""
    steps = []
    g = 64
    while g > 1:
        half = g // 2
        mask = 0
        for base in range(0, 64 * 8, 8 * g):  # the upper half of each block's symbols
            mask |= ((1 << (5 * half)) - 1) << (base + 5 * half)
        steps.append((mask, (1 << (3 * half)) - 1))
        g = half
    return steps


(_M1, _K1), (_M2, _K2), (_M3, _K3), (_M4, _K4), (_M5, _K5), (_M6, _K6) = _b32_spread_steps()


def _cid_string(raw: bytes) -> str:
    """Multibase ``b`` + base32 of the 36 CID bytes; hand-rolled because stdlib is slow."""
    x = int.from_bytes(raw, "big") << 32
    x += (x & _M1) * _K1
    x += (x & _M2) * _K2
    x += (x & _M3) * _K3
    x += (x & _M4) * _K4
    x += (x & _M5) * _K5
    x += (x & _M6) * _K6
    return "b" + x.to_bytes(64, "big")[:58].translate(_B32_SPELL).decode("ascii")


class Reference:
    """A merkle reference: the sha2-256 root of a value's reference tree.

    Immutable; equal when the digests are equal; ordered by the CID string so
    sorted references read in the same order as their printed ids.
    """

    __slots__ = ("_cid", "_digest")

    _digest: builtins.bytes
    _cid: str | None

    def __init__(self, digest: builtins.bytes) -> None:
        if type(digest) is not builtins.bytes:
            digest = builtins.bytes(digest)
        if len(digest) != 32:
            raise ValueError(f"a sha2-256 digest is 32 bytes, got {len(digest)}")
        self._digest = digest
        self._cid = None

    @classmethod
    def _of(cls, digest: builtins.bytes) -> Reference:
        """Trusted constructor for digests computed here (skips validation)."""
        self = object.__new__(cls)
        self._digest = digest
        self._cid = None
        return self

    @classmethod
    def from_bytes(cls, raw: builtins.bytes) -> Reference:
        """Reference from the 36 raw CID bytes (as :attr:`bytes` returns)."""
        raw = builtins.bytes(raw)
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
    def digest(self) -> builtins.bytes:
        """The 32-byte sha2-256 root."""
        return self._digest

    @property
    def bytes(self) -> builtins.bytes:
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

    def __reduce__(self) -> tuple[type[Reference], tuple[builtins.bytes]]:
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


def _str_digest(s: str) -> bytes:
    """A string leaf's digest, uncached."""
    try:
        payload = s.encode("utf-8")
    except UnicodeEncodeError:
        # JavaScript's TextEncoder: surrogate pairs combine, lone surrogates become U+FFFD.
        payload = _js_utf8(s)
    return _h(_TAG_STR + payload)


def _str_leaf(s: str) -> bytes:
    d = _str_digest(s)
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
    n = len(layer)
    if n == 2:
        return h(layer[0] + layer[1]).digest()
    if n == 3:
        return h(h(layer[0] + layer[1]).digest() + layer[2]).digest()
    if n == 4:
        return h(h(layer[0] + layer[1]).digest() + h(layer[2] + layer[3]).digest()).digest()
    if n <= 8:  # a cause has 6 entries: its levels spelled out, no list per level
        # the subtree of the first four: a start's causes share them (config, helper,
        # impl, index), so it is kept briefly, like the recent entries below
        four = layer[0] + layer[1] + layer[2] + layer[3]
        a = _recent_quads.get(four)
        if a is None:
            a = h(h(layer[0] + layer[1]).digest() + h(layer[2] + layer[3]).digest()).digest()
            if len(_recent_quads) >= _RECENT_MAX:
                _recent_quads.clear()
            _recent_quads[four] = a
        if n == 5:
            return h(a + layer[4]).digest()
        if n == 6:
            return h(a + h(layer[4] + layer[5]).digest()).digest()
        if n == 7:
            return h(a + h(h(layer[4] + layer[5]).digest() + layer[6]).digest()).digest()
        b = h(h(layer[4] + layer[5]).digest() + h(layer[6] + layer[7]).digest()).digest()
        return h(a + b).digest()
    while n > 1:
        nxt = [h(layer[j] + layer[j + 1]).digest() for j in range(0, n - 1, 2)]
        if n & 1:
            nxt.append(layer[-1])
        layer = nxt
        n = len(layer)
    return layer[0]


def _js_utf8(s: str) -> bytes:
    """UTF-8 as JavaScript's TextEncoder writes it, for strings holding surrogate code points."""
    return s.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace").encode()


def _link_digest(d: dict[Any, Any]) -> bytes | None:
    """JS ``Reference.is``: any object whose ``"/"`` holds raw reference CID bytes is a link."""
    raw = d["/"]
    if type(raw) in (bytes, bytearray) and len(raw) == _CID_LEN and raw[:4] == _PREFIX:
        return bytes(raw[4:])
    return None


def _type_error(value: object) -> TypeError:
    return TypeError(
        f"cannot hash a {type(value).__module__}.{type(value).__qualname__}: "
        "expected JSON (None, bool, int, float, str, list, tuple, dict with str keys), "
        "bytes, a Reference, or an object with __ck_ref_json__"
    )


def _cycle_error() -> ValueError:
    return ValueError("cannot hash a cyclic structure")


def _map_items(v: Mapping[Any, Any]) -> list[Any]:
    """``[k0, v0, k1, v1, …]`` in merkle-reference order: by the UTF-8 bytes of the keys."""
    try:
        joined = "".join(v)
    except TypeError:
        bad = next(k for k in v if not isinstance(k, str))
        raise TypeError(
            f"cannot hash a dict with a {type(bad).__name__} key {bad!r}: keys must be str"
        ) from None
    # Code point order is UTF-8 byte order, except for lone surrogates, which JavaScript's
    # TextEncoder turns into U+FFFD.
    keys = sorted(v)
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            keys = sorted(v, key=_js_utf8)
    flat: list[Any] = keys + keys
    flat[0::2] = keys
    flat[1::2] = map(v.__getitem__, keys)
    return flat


def _replacement(v: object) -> object:
    """Slow path: what to hash instead of ``v`` (``__ck_ref_json__``, subclasses), or raise."""
    t = type(v)
    convert = getattr(t, "__ck_ref_json__", None)
    if convert is not None:
        replacement: object = convert(v)
        if replacement is v:
            raise TypeError(f"{t.__qualname__}.__ck_ref_json__ returned the object itself")
        return replacement
    if isinstance(v, int):  # bool cannot be subclassed, so this is int (e.g. IntEnum)
        return int(v)
    if isinstance(v, float):
        return float(v)
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, dict):
        return dict(v)
    raise _type_error(v)


_CAUSAL_LEAF: Final = _h(_TAG_STR + b"causal")

#: digest of a map entry by its key and value digests (see ``_digest``)
_entry_cache: dict[bytes, bytes] = {}
#: the entry digests of flat maps (causes) by key and value: ``(k, str)``, ``(k, int)``
#: and ``k`` for null (separate dicts: ``(k, 1) == (k, 1.0) == (k, True)``)
_entries_by_str: dict[tuple[str, str], bytes] = {}
_entries_by_int: dict[tuple[str, int], bytes] = {}
_null_entries: dict[str, bytes] = {}

#: the same for the list entries of flat maps (a cause's ``inputs``) and the strings in
#: them (cell ids): nearly every one is met once, so the long-lived caches above would
#: keep ~200 bytes per cell of a start alive for nothing.  A small cache still serves
#: the ones that recur back to back (a fan-out whose leaves all read one input).
_RECENT_MAX: Final = 512
_recent_entries: dict[bytes, bytes] = {}
_recent_strs: dict[str, bytes] = {}
#: cause keys whose string values name one instance or one element (a parent's id, a
#: map key): met by one start's causes, then hardly again, so their entries go to the
#: small caches (a map whose elements keep changing grew the long-lived ones by about
#: 700 bytes a write, up to their bound)
_ONE_START_KEYS: Final = frozenset({"parent", "key"})
_recent_pairs: dict[tuple[str, str], bytes] = {}
#: the merkle subtree of four digests by their concatenation (see ``_fold``)
_recent_quads: dict[bytes, bytes] = {}

_PASS: Final = 0  # a frame of one value hashed as itself (the root, replacements)
_LIST: Final = 1
_MAP: Final = 2


def _flat_map_digest(v: dict[Any, Any]) -> bytes | None:
    """Digest of a small map of scalars and lists of strings (a cause), or None.

    Same bytes as the general walk in ``_digest``, without its frames: causes
    are hashed once per cell, thousands per start.  None for anything else
    (nested maps, other lists, non-ASCII or non-string keys, unusual types).
    The entry of a key and a str or int value is cached by the pair itself, so
    the entries a start's causes share (parent, helper, impl, index) cost one
    lookup each.
    """
    try:
        joined = "".join(v)
    except TypeError:
        return None
    if not joined.isascii():
        return None
    by_str = _entries_by_str
    by_int = _entries_by_int
    h = _sha256
    entries: list[bytes] = []
    for k in sorted(v):
        value = v[k]
        t = type(value)
        if t is str:
            if k in _ONE_START_KEYS:
                e = _recent_pairs.get((k, value))
                if e is None:
                    e = _recent_str_entry(k, value)
            else:
                e = by_str.get((k, value))
                if e is None:
                    e = _scalar_entry(by_str, k, value,
                                      _str_cache.get(value) or _str_leaf(value))
        elif t is int:  # (not bool: its type is bool, and these caches hold no bools)
            e = by_int.get((k, value))
            if e is None:
                e = _scalar_entry(by_int, k, value, _int_cache.get(value) or _int_leaf(value))
        elif t is list:
            e = _list_entry(k, value)
            if e is None:
                return None
        elif value is None:
            e = _null_entries.get(k) or _scalar_entry(_null_entries, k, k, _NULL)
        elif t is bool:
            e = _scalar_entry(None, k, value, _TRUE if value else _FALSE)
        else:
            return None
        entries.append(e)
    if not entries:
        return _EMPTY_MAP
    return h(_TAG_MAP + (entries[0] if len(entries) == 1 else _fold(entries))).digest()


def _scalar_entry(cache: dict[Any, bytes] | None, k: str, value: Any, d: bytes) -> bytes:
    """The entry digest of key ``k`` with a value of digest ``d``, kept in ``cache``."""
    kd = _str_cache.get(k)
    e = _sha256((kd if kd is not None else _str_leaf(k)) + d).digest()
    if cache is not None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[k if cache is _null_entries else (k, value)] = e
    return e


def _recent_str_entry(k: str, value: str) -> bytes:
    """The entry of key ``k`` with a one-start string, kept in the small caches only."""
    leaf = _str_cache.get(value) or _recent_strs.get(value) or _recent_str_leaf(value)
    kd = _str_cache.get(k)
    e = _sha256((kd if kd is not None else _str_leaf(k)) + leaf).digest()
    if len(_recent_pairs) >= _RECENT_MAX:
        _recent_pairs.clear()
    _recent_pairs[(k, value)] = e
    return e


def _list_entry(k: str, value: list[Any]) -> bytes | None:
    """The entry digest of key ``k`` with a list of strings (None for any other list)."""
    h = _sha256
    if not value:
        d = _EMPTY_LIST
    else:
        sc = _str_cache
        rs = _recent_strs
        leaves = []
        for item in value:
            if type(item) is not str:
                return None
            leaf = sc.get(item)
            if leaf is None:
                leaf = rs.get(item)
                if leaf is None:
                    leaf = _recent_str_leaf(item)
            leaves.append(leaf)
        d = h(_TAG_LIST + (leaves[0] if len(leaves) == 1 else _fold(leaves))).digest()
    kd = _str_cache.get(k)
    pair = (kd if kd is not None else _str_leaf(k)) + d
    rec = _recent_entries
    e = rec.get(pair)
    if e is None:
        if len(rec) >= _RECENT_MAX:
            rec.clear()
        e = rec[pair] = h(pair).digest()
    return e


def _recent_str_leaf(s: str) -> bytes:
    """``_str_leaf`` of a string in a flat map's list, kept only in the small cache."""
    d = _str_digest(s)
    if len(_recent_strs) >= _RECENT_MAX:
        _recent_strs.clear()
    _recent_strs[s] = d
    return d


def _map_digest(pairs: list[bytes]) -> bytes:
    """A non-empty map's digest from its entries' key + value digests, in key order.

    Entry digests are cached: the same key and value recur across many maps (every
    cause names its parent, helper and implementation).
    """
    pc = _entry_cache
    h = _sha256
    entries = []
    for pair in pairs:
        e = pc.get(pair)
        if e is None:
            if len(pc) >= _CACHE_MAX:
                pc.clear()
            e = pc[pair] = h(pair).digest()
        entries.append(e)
    return h(_TAG_MAP + (entries[0] if len(entries) == 1 else _fold(entries))).digest()


def _digest(value: object, flat: bool = True) -> bytes:
    """Root digest of ``value``'s reference tree, depth-first with an explicit stack.

    The current container is an iterator over its children (``it``) and the digests
    of the children seen so far (``acc``); descending into a child container pushes
    that pair on ``frames`` and the ``for`` loop resumes the iterator on the way back.
    Maps are iterated as ``[key, value, key, value, …]`` in hashing order.
    """
    sc = _str_cache
    ic = _int_cache
    fc = _float_cache
    h = _sha256
    frames: list[tuple[Iterator[Any], list[bytes], int, object]] = []
    active: set[int] = set()  # ids of containers on the current path: a cycle never ends
    it: Iterator[Any] = iter((value,))
    acc: list[bytes] = []
    kind = _PASS
    owner: object = None

    while True:
        for v in it:
            t = type(v)
            if t is str:
                d = sc.get(v)
                acc.append(d if d is not None else _str_leaf(v))
            elif t is dict:
                if not v:
                    acc.append(_EMPTY_MAP)
                    continue
                if "/" in v:
                    link = _link_digest(v)
                    if link is not None:
                        acc.append(link)
                        continue
                if flat and len(v) <= 8:  # ``flat=False``: the walk alone (tests compare)
                    d = _flat_map_digest(v)
                    if d is not None:
                        acc.append(d)
                        continue
                i = id(v)
                if i in active:
                    raise _cycle_error()
                children = _map_items(v)
                active.add(i)
                frames.append((it, acc, kind, owner))
                it, acc, kind, owner = iter(children), [], _MAP, v
                break
            elif t is list or t is tuple:
                if not v:
                    acc.append(_EMPTY_LIST)
                    continue
                i = id(v)
                if i in active:
                    raise _cycle_error()
                active.add(i)
                frames.append((it, acc, kind, owner))
                it, acc, kind, owner = iter(v), [], _LIST, v
                break
            elif t is int:
                d = ic.get(v)
                acc.append(d if d is not None else _int_leaf(v))
            elif v is None:
                acc.append(_NULL)
            elif t is bool:
                acc.append(_TRUE if v else _FALSE)
            elif t is float:
                d = fc.get(v)
                acc.append(d if d is not None else _float_leaf(v))
            elif t is Reference:
                acc.append(v._digest)
            elif t is bytes or t is bytearray:
                acc.append(h(_TAG_BYTES + v).digest())
            else:
                replacement = _replacement(v)
                i = id(v)
                if i in active:
                    raise _cycle_error()
                active.add(i)
                frames.append((it, acc, kind, owner))
                it, acc, kind, owner = iter((replacement,)), [], _PASS, v
                break
        else:
            # the current container is exhausted: fold it into its parent
            if kind == _MAP:
                d = _map_digest([acc[j] + acc[j + 1] for j in range(0, len(acc), 2)])
            elif kind == _LIST:
                d = h(_TAG_LIST + (acc[0] if len(acc) == 1 else _fold(acc))).digest()
            else:
                d = acc[0]
            if not frames:
                return d
            active.discard(id(owner))
            it, acc, kind, owner = frames.pop()
            acc.append(d)


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
    if not source and type(cause) is dict and len(cause) <= 8:
        # {"causal": cause} for a flat cause (every cell id of a start): the outer map's one
        # entry hashed directly, the same bytes as the walk in ``_digest``
        flat = _flat_map_digest(cause)
        if flat is not None:
            entry = _sha256(_CAUSAL_LEAF + flat).digest()
            return Reference._of(_sha256(_TAG_MAP + entry).digest())
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


def short_id(entity_id: str, length: int = 10) -> str:
    """``length`` distinguishing characters of an id (for display).

    Every CIDv1 here starts with the same ``baedrei`` header (version, codec,
    hash type), so the characters after it are the ones that tell ids apart.
    """
    _prefix, sep, rest = entity_id.partition(":")
    cid = rest if sep else entity_id
    if cid.startswith("baedrei"):
        cid = cid[7:]
    return cid[:length]
