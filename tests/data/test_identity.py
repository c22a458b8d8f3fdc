"""cellkernel.data.identity: byte-compatibility with npm merkle-reference and the Python-side rules.

The vectors in tests/vectors/refer_vectors.json come from the JavaScript package
(tests/vectors/make_vectors.mjs); node is not needed to run these tests.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pickle
import sys
from collections import OrderedDict
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.data import identity
from cellkernel.data.identity import (
    Reference,
    SupportsRefJSON,
    create_ref,
    entity_id,
    entity_id_from_cause,
    parse_entity_id,
    refer,
)

VECTORS_PATH = Path(__file__).resolve().parents[1] / "vectors" / "refer_vectors.json"
VECTORS: list[dict[str, Any]] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
TAGS = {"$int", "$float", "$bytes", "$ref", "$link"}


def decode(value: Any, *, json_mode: bool = False) -> Any:
    """The tagged vector encoding (see make_vectors.mjs) as Python values.

    ``json_mode`` mirrors merkle-reference/json, where an embedded Reference is its toJSON().
    """
    if not any(f'"{tag}"' in json.dumps(value) for tag in TAGS):
        return value  # also keeps the 500-deep vectors away from Python's recursion limit
    if isinstance(value, list):
        return [decode(v, json_mode=json_mode) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and next(iter(value)) in TAGS:
        ((tag, inner),) = value.items()
        if tag == "$int":
            return int(inner)
        if tag == "$float":
            return float(inner)
        if tag == "$bytes":
            return bytes.fromhex(inner)
        if tag == "$ref":
            ref = refer(decode(inner))  # the generator builds references with plain refer
            return ref.to_json() if json_mode else ref
        if tag == "$link":
            return {"/": refer(decode(inner, json_mode=json_mode)).bytes}
    return {k: decode(v, json_mode=json_mode) for k, v in value.items()}


def short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) < 80 else text[:77] + "..."


def test_vector_file_is_substantial() -> None:
    assert len(VECTORS) >= 300
    assert all(v["cid"].startswith("baedrei") for v in VECTORS)


@pytest.mark.parametrize("vector", VECTORS, ids=[short(v["value"]) for v in VECTORS])
def test_matches_javascript(vector: dict[str, Any]) -> None:
    ref = refer(decode(vector["value"]))
    assert str(ref) == vector["cid"]
    assert ref.to_json() == {"/": vector["cid"]}


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if "json_cid" in v], ids=lambda v: short(v["value"])
)
def test_embedding_to_json_matches_merkle_reference_json(vector: dict[str, Any]) -> None:
    """merkle-reference/json hashes an embedded Reference as its toJSON() map."""
    assert str(refer(decode(vector["value"], json_mode=True))) == vector["json_cid"]


def test_known_spec_values() -> None:
    assert str(refer(None)) == "baedreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx56544"
    assert str(refer({})) == "baedreiejlbo3grw733nk7wp5mzjfqyzpa7hquspn4yt4np6zq3375fpavq"
    # the spec's diagrams print bare digests: "hello world" is b2ip5bc…v2tq there
    digest = refer("hello world").digest
    assert (
        digest
        == hashlib.sha256(
            hashlib.sha256(b"merkle-structure:string/utf-8").digest() + b"hello world"
        ).digest()
    )


# -- numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, -1, 7, 2**31, 2**53 - 1, 2**53, -(2**60), 10**21, 2**1000])
def test_integral_floats_hash_as_ints(n: int) -> None:
    assert refer(float(n)) == refer(n)
    assert refer([float(n)]) == refer([n])


def test_negative_zero_is_zero() -> None:
    assert refer(-0.0) == refer(0) == refer(0.0)
    assert refer({"x": -0.0}) == refer({"x": 0})


def test_floats_and_ints_differ_when_not_integral() -> None:
    assert refer(0.5) != refer(0)
    assert refer(1.5) != refer(1)


def test_big_ints_round_like_javascript_numbers() -> None:
    assert refer(2**53 + 1) == refer(2**53)
    assert refer(2**64 - 1) == refer(2**64) == refer(float(2**64))
    assert refer(-(2**63) - 1) == refer(-(2**63))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_non_finite_numbers_raise_value_error(bad: float | int) -> None:
    with pytest.raises(ValueError):
        refer(bad)
    with pytest.raises(ValueError):
        refer({"nested": [1, bad]})


def test_bool_is_not_int() -> None:
    assert refer(True) != refer(1)
    assert refer(False) != refer(0)
    assert refer([True, 1]) != refer([1, 1])
    assert refer({"a": True}) != refer({"a": 1})


# -- containers ----------------------------------------------------------------------------


def test_tuples_hash_as_lists() -> None:
    assert refer((1, "a", None)) == refer([1, "a", None])
    assert refer(()) == refer([])
    assert refer({"x": (1, (2, 3))}) == refer({"x": [1, [2, 3]]})


def test_subclasses_hash_as_their_base_type() -> None:
    class Color(StrEnum):
        RED = "red"

    class Level(IntEnum):
        HIGH = 3

    class Point(NamedTuple):
        x: int
        y: int

    assert refer(Color.RED) == refer("red")
    assert refer(Level.HIGH) == refer(3)
    assert refer(Point(1, 2)) == refer([1, 2])
    assert refer(OrderedDict([("b", 1), ("a", 2)])) == refer({"a": 2, "b": 1})
    assert refer(bytearray(b"\x01\x02")) == refer(b"\x01\x02")


def test_key_order_does_not_matter() -> None:
    assert refer({"a": 1, "b": 2, "c": 3}) == refer({"c": 3, "a": 1, "b": 2})


def test_non_str_keys_raise_type_error() -> None:
    with pytest.raises(TypeError, match="int key 1"):
        refer({1: "x"})
    with pytest.raises(TypeError, match="keys must be str"):
        refer({"ok": {"a": 1, None: 2}})
    with pytest.raises(TypeError):
        refer([{(1, 2): 3}])


@pytest.mark.parametrize("bad", [{1, 2}, frozenset(), object(), 1j, refer])
def test_unsupported_types_raise_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match=type(bad).__qualname__):
        refer(bad)
    with pytest.raises(TypeError):
        refer({"deep": [bad]})


def test_cycles_raise_value_error() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(ValueError, match="cyclic"):
        refer(loop)
    d: dict[str, Any] = {}
    d["self"] = [d]
    with pytest.raises(ValueError, match="cyclic"):
        refer(d)


def test_shared_substructures_are_not_cycles() -> None:
    shared = {"x": [1, 2]}
    assert refer([shared, shared, {"y": shared}]) == refer(
        [{"x": [1, 2]}, {"x": [1, 2]}, {"y": {"x": [1, 2]}}]
    )


def test_deep_nesting_is_iterative() -> None:
    depth = 100_000
    assert sys.getrecursionlimit() < depth
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    # a one-element list folds to its element: H(H(list-tag) || child)
    tag = hashlib.sha256(b"merkle-structure:list/item/ref-tree").digest()
    expected = refer("leaf").digest
    for _ in range(depth):
        expected = hashlib.sha256(tag + expected).digest()
    assert refer(value).digest == expected

    mapping: Any = None
    for i in range(depth):
        mapping = {"k": mapping, "i": i % 7}
    assert len(str(refer(mapping))) == 59


def test_mutation_is_seen() -> None:
    """Unlike the JS package (which caches trees per object), a mutated value rehashes."""
    value: dict[str, Any] = {"a": [1]}
    before = refer(value)
    value["a"].append(2)
    assert refer(value) != before
    assert refer(value) == refer({"a": [1, 2]})


def test_caches_are_bounded() -> None:
    for i in range(identity._CACHE_MAX + 10):
        refer(f"s{i}")
    assert len(identity._str_cache) <= identity._CACHE_MAX
    hello = "baedreigsd7iitanwblasrs5kim43ukvwpereged6ehgxjxsgfoboq7vou4"
    assert str(refer("hello world")) == hello


# -- references ----------------------------------------------------------------------------


def test_reference_embedded_hashes_as_the_value_it_names() -> None:
    inner = {"x": 1, "y": [True, None]}
    assert refer({"a": refer(inner)}) == refer({"a": inner})
    assert refer([refer(inner)]) == refer([inner])
    assert refer(refer(inner)) == refer(inner)


def test_reference_value_semantics() -> None:
    a, b = refer("a"), refer("b")
    assert a == refer("a") and a != b
    assert len({a, refer("a"), b}) == 2
    assert (a < b) == (str(a) < str(b))
    assert sorted([b, a]) == sorted([a, b])
    assert a <= a and a >= a and not a < a
    assert (a > b) == (str(a) > str(b))
    assert a != "a" and a != str(a)
    assert repr(a) == f"Reference({str(a)!r})"
    assert a.bytes == b"\x01\x07\x12\x20" + a.digest
    assert len(a.digest) == 32
    assert a.to_json() == {"/": str(a)}
    assert Reference.from_json(a.to_json()) == a
    assert Reference.from_bytes(a.bytes) == a
    assert Reference(a.digest) == a
    assert pickle.loads(pickle.dumps(a)) == a
    assert copy.deepcopy(a) is a


def test_reference_constructor_validates() -> None:
    with pytest.raises(ValueError):
        Reference(b"short")
    with pytest.raises(ValueError):
        Reference.from_bytes(b"\x01\x55\x12\x20" + bytes(32))
    with pytest.raises(ValueError):
        Reference.from_json({"/": "baedrei"})
    with pytest.raises(ValueError):
        Reference.from_json("nope")


# -- __ck_ref_json__ -----------------------------------------------------------------------


class FakeCell:
    def __init__(self, entity: str | None) -> None:
        self.entity = entity

    def __ck_ref_json__(self) -> Any:
        return None if self.entity is None else {"/": self.entity[3:]}


def test_ck_ref_json_objects_hash_as_their_json() -> None:
    cell = FakeCell(entity_id({"some": "cause"}))
    assert isinstance(cell, SupportsRefJSON)
    assert refer(cell) == refer({"/": cell.entity[3:]})  # type: ignore[index]
    assert refer({"inputs": [cell, 1]}) == refer({"inputs": [{"/": cell.entity[3:]}, 1]})  # type: ignore[index]
    assert refer(FakeCell(None)) == refer(None)


def test_ck_ref_json_can_nest_and_cycles_are_caught() -> None:
    class Wrapper:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __ck_ref_json__(self) -> Any:
            return {"wrapped": self.inner}

    assert refer(Wrapper(Wrapper(1))) == refer({"wrapped": {"wrapped": 1}})
    w = Wrapper(None)
    w.inner = [w]
    with pytest.raises(ValueError, match="cyclic"):
        refer(w)

    class Selfish:
        def __ck_ref_json__(self) -> Any:
            return self

    with pytest.raises(TypeError):
        refer(Selfish())


# -- causes and entity ids -----------------------------------------------------------------


def test_create_ref_is_refer_with_causal() -> None:
    source = {"the": "application/json", "n": 1}
    cause = {"parent": "of:x", "index": 2}
    assert create_ref(source, cause) == refer({**source, "causal": cause})
    assert create_ref({}, None) == refer({"causal": None})
    assert create_ref({"causal": "overridden"}, 5) == refer({"causal": 5})
    cell = FakeCell(entity_id("c"))
    assert create_ref({}, cell) == refer({"causal": {"/": cell.entity[3:]}})  # type: ignore[index]


def test_entity_ids() -> None:
    cause = {"helper": "lift", "index": 0}
    ref = create_ref({}, cause)
    assert entity_id_from_cause(cause) == "of:" + str(ref) == entity_id(ref)
    assert entity_id({"a": 1}) == "of:" + str(refer({"a": 1}))
    assert parse_entity_id(entity_id(ref)) == ref
    assert parse_entity_id(entity_id(ref)) is not ref


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "of:",
        "baedreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx56544",  # no "of:"
        "of:baedreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx5654",  # too short
        "of:baedreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx565444",  # too long
        "of:BAEDREIBQVXP76EC6HNQSU54YURDKDOC7FG4UFWMK4DA2VBV4LIUPX56544",  # upper case
        "of:baedreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx5654!",  # not base32
        "of:baedreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx56547",  # non-zero pad bits
        "of:zaedreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx56544",  # other multibase
        "of:bafyreibqvxp76ec6hnqsu54yurdkdoc7fg4ufwmk4da2vbv4liupx56544",  # dag-cbor codec
        "of:ba4jcamfn377raxr3mevhpgfei2q3qxzjxfbntcxaygvinpc2fd57pxph",  # JS toString() form
        None,
        42,
    ],
)
def test_parse_entity_id_rejects_malformed(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_entity_id(bad)


@settings(max_examples=300, deadline=None)
@given(cause=st.dictionaries(
    st.text(max_size=6),
    st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.text(max_size=8),
              st.lists(st.text(max_size=5), max_size=4),
              st.floats(allow_nan=False, allow_infinity=False),
              st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)),
    max_size=8,
))
def test_flat_cause_shortcuts_hash_as_the_general_walk(cause: dict[str, Any]) -> None:
    """create_ref's and _digest's shortcuts for flat causes give the walk's exact bytes."""
    from cellkernel.data import identity

    walked = identity._digest({"causal": cause}, flat=False)
    assert identity.create_ref({}, cause)._digest == walked
    assert identity._digest({"causal": cause}) == walked


def _fold_by_levels(layer: list[bytes]) -> bytes:
    """The merkle fold by its definition: pairs hashed level by level, an odd last raised."""
    level = list(layer)
    while len(level) > 1:
        paired = [
            hashlib.sha256(level[j] + level[j + 1]).digest() for j in range(0, len(level) - 1, 2)
        ]
        level = paired + ([level[-1]] if len(level) % 2 else [])
    return level[0]


@pytest.mark.parametrize("n", range(2, 21))
def test_the_merkle_fold_matches_the_level_by_level_definition(n: int) -> None:
    """Pairs hashed level by level, an odd last node raised as is (the spelled-out cases too)."""
    from cellkernel.data.identity import _fold

    layer = [hashlib.sha256(bytes([i])).digest() for i in range(n)]
    assert _fold(layer) == _fold_by_levels(layer)
    assert _fold(list(layer)) == _fold_by_levels(layer)  # again: the first four from the cache


@settings(max_examples=200, deadline=None)
@given(prefix=st.lists(st.sampled_from([bytes([i]) * 32 for i in range(3)]), min_size=4,
                       max_size=4),
       rest=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=4))
def test_the_fold_cache_serves_only_the_same_four(prefix: list[bytes], rest: list[bytes]) -> None:
    """Layers sharing (or not) their first four digests fold as the plain definition."""
    from cellkernel.data.identity import _fold

    layer = prefix + rest
    assert _fold(layer) == _fold_by_levels(layer)


def test_flat_cause_lists_stay_out_of_the_long_lived_caches() -> None:
    """Issue 20: a cause's input list (nearly always new) is cached only briefly."""
    identity._entry_cache.clear()
    identity._str_cache.clear()
    causes = [{"parent": "of:p", "helper": "lift", "inputs": [f"of:input-{i}"], "index": 0}
              for i in range(3 * identity._RECENT_MAX)]
    refs = [identity.create_ref({}, cause) for cause in causes]
    assert len(identity._entry_cache) <= 8  # parent, helper and index: a few shared entries
    assert "of:input-0" not in identity._str_cache
    assert len(identity._recent_entries) <= identity._RECENT_MAX
    assert len(identity._recent_strs) <= identity._RECENT_MAX
    for cause, ref in zip(causes, refs, strict=True):
        assert ref._digest == identity._digest({"causal": cause}, flat=False)
    # the same list again, back to back (a fan-out's leaves): the same digest from the cache
    again = {"parent": "of:p", "helper": "lift", "inputs": ["of:input-0"], "index": 0}
    assert identity.create_ref({}, again) == identity.create_ref({}, dict(again)) == refs[0]


def test_one_start_strings_stay_out_of_the_long_lived_caches() -> None:
    """Issue 18: a map whose elements keep changing hashes a new parent id and key per child.

    Kept in the long-lived caches, they grew memory by about 700 bytes a write up to
    the caches' bound; the small caches hold them, and the digests are the walk's.
    """
    identity._entries_by_str.clear()
    identity._str_cache.clear()
    causes = [{"parent": f"of:child-{i}", "helper": "map", "key": f"v:{i}#0"}
              for i in range(3 * identity._RECENT_MAX)]
    refs = [identity.create_ref({}, cause) for cause in causes]
    assert len(identity._entries_by_str) <= 2  # ("helper", "map"), and nothing per child
    assert "of:child-0" not in identity._str_cache and "v:0#0" not in identity._str_cache
    assert len(identity._recent_pairs) <= identity._RECENT_MAX
    for cause, ref in zip(causes, refs, strict=True):
        assert ref._digest == identity._digest({"causal": cause}, flat=False)
    again = dict(causes[-1])  # met again back to back: from the small cache, the same digest
    assert identity.create_ref({}, again) == refs[-1]


@settings(max_examples=300, deadline=None)
@given(cause=st.dictionaries(
    st.sampled_from(["parent", "key", "helper", "impl", "index", "inputs", "pärent"]),
    st.one_of(st.none(), st.integers(-5, 5), st.sampled_from(["of:a", "of:b", "v:1#0", "é"]),
              st.lists(st.sampled_from(["of:a", "of:b"]), max_size=3)),
    max_size=6,
))
def test_causes_with_one_start_keys_hash_as_the_general_walk(cause: dict[str, Any]) -> None:
    """The small-cache branch for ``parent`` and ``key`` gives the walk's exact bytes."""
    walked = identity._digest({"causal": cause}, flat=False)
    assert identity.create_ref({}, cause)._digest == walked
    assert identity.create_ref({}, dict(cause))._digest == walked  # from the caches now


@settings(max_examples=500, deadline=None)
@given(raw=st.binary(min_size=36, max_size=36))
def test_cid_string_is_rfc4648_base32(raw: bytes) -> None:
    """The spread-out base32 spells any 36 bytes as the stdlib does (lower case, no padding)."""
    import base64

    expected = "b" + base64.b32encode(raw).decode("ascii").lower().rstrip("=")
    assert identity._cid_string(raw) == expected
    assert len(expected) == 59


@pytest.mark.parametrize("fill", [0x00, 0xFF, 0x55, 0xAA])
def test_cid_string_round_trips_extreme_digests(fill: int) -> None:
    ref = Reference(bytes([fill]) * 32)
    assert Reference.parse(str(ref)) == ref
    assert str(ref).startswith("baedrei")
