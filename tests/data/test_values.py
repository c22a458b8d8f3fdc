"""cellkernel.data.values: JSON normalisation (SPEC §2), path helpers, strict equality."""

from __future__ import annotations

import copy
import datetime
import enum
import json
import math
import random
from collections import OrderedDict
from typing import Any

import pydantic
import pytest

from cellkernel.data.values import (
    MISSING,
    delete_path,
    format_path,
    get_path,
    json_equal,
    paths_overlap,
    set_path,
    to_json_value,
)

# --------------------------------------------------------------------------- to_json_value


@pytest.mark.parametrize("value", [None, True, False, 0, 7, -3, "", "text", 1.5, -2.25])
def test_json_scalars_pass_through_unchanged(value: Any) -> None:
    out = to_json_value(value)
    assert out == value
    assert type(out) is type(value)


def test_negative_zero_becomes_integer_zero() -> None:
    out = to_json_value(-0.0)
    assert out == 0 and type(out) is int
    assert json.dumps(to_json_value({"z": -0.0, "l": [-0.0]})) == '{"z": 0, "l": [0]}'


def test_integral_floats_become_ints_like_javascript_numbers() -> None:
    assert to_json_value(3.0) == 3 and type(to_json_value(3.0)) is int
    assert type(to_json_value(1.25)) is float
    # beyond 2**53 a float is kept as a float (not every such int is representable)
    big = float(2**60)
    assert type(to_json_value(big)) is float


def test_tuples_become_lists_at_every_depth() -> None:
    assert to_json_value((1, (2, 3), {"t": (4,)})) == [1, [2, 3], {"t": [4]}]
    assert type(to_json_value((1,))) is list


def test_key_order_is_kept_at_every_depth() -> None:
    out: Any = to_json_value({"z": 1, "a": {"y": 1, "b": 2}, "m": [{"k2": 1, "k1": 2}]})
    assert list(out) == ["z", "a", "m"]
    assert list(out["a"]) == ["y", "b"]
    assert list(out["m"][0]) == ["k2", "k1"]


def test_dict_subclasses_become_plain_dicts() -> None:
    out = to_json_value(OrderedDict([("b", 1), ("a", (2,))]))
    assert out == {"b": 1, "a": [2]}
    assert type(out) is dict


def test_enum_members_and_scalar_subclasses_store_their_plain_value() -> None:
    class Colour(enum.Enum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    class Name(str):
        pass

    out = to_json_value({"level": Level.HIGH, "name": Name("x")})
    assert out == {"level": 3, "name": "x"}
    assert type(out["level"]) is int and type(out["name"]) is str
    with pytest.raises(ValueError, match="/colour"):
        to_json_value({"colour": Colour.RED})  # a plain Enum is not JSON


def test_pydantic_models_are_dumped_in_json_mode() -> None:
    class Inner(pydantic.BaseModel):
        when: datetime.date
        pair: tuple[int, int]

    class Outer(pydantic.BaseModel):
        name: str
        inner: Inner
        tags: set[str] = set()

    model = Outer(name="n", inner=Inner(when=datetime.date(2024, 1, 2), pair=(1, 2)), tags={"a"})
    assert to_json_value({"m": model}) == {
        "m": {"name": "n", "inner": {"when": "2024-01-02", "pair": [1, 2]}, "tags": ["a"]}
    }


def test_objects_with_ck_to_json_become_their_sigil() -> None:
    class Sigil:
        def __ck_to_json__(self) -> Any:
            return {"/": {"thing@1": (1, 2)}}

    assert to_json_value([Sigil()]) == [{"/": {"thing@1": [1, 2]}}]


def test_hook_converts_objects_and_may_decline() -> None:
    class Special:
        pass

    def hook(value: Any) -> Any:
        return "special" if isinstance(value, Special) else NotImplemented

    assert to_json_value({"a": [Special()]}, hook=hook) == {"a": ["special"]}
    with pytest.raises(ValueError, match="/a/0"):
        to_json_value({"a": [object()]}, hook=hook)


def test_hook_sees_dict_subclasses_before_they_are_copied() -> None:
    class Tagged(dict[str, Any]):
        pass

    def hook(value: Any) -> Any:
        return "tagged" if isinstance(value, Tagged) else NotImplemented

    assert to_json_value({"x": Tagged(a=1)}, hook=hook) == {"x": "tagged"}


@pytest.mark.parametrize(
    ("value", "path"),
    [
        (math.nan, "/"),
        (math.inf, "/"),
        ({"a": [1, -math.inf]}, "/a/1"),
        ({"a": {"b": {1, 2}}}, "/a/b"),
        ({"a": frozenset()}, "/a"),
        ([b"bytes"], "/0"),
        ({"x": bytearray(b"x")}, "/x"),
        ({"x": object()}, "/x"),
        ({"x": 1 + 2j}, "/x"),
        ({"x": {2: "int key"}}, "/x"),
    ],
)
def test_non_json_values_raise_value_error_naming_the_path(value: Any, path: str) -> None:
    with pytest.raises(ValueError) as info:
        to_json_value(value)
    assert f"at {path}" in str(info.value)


def test_normalisation_does_not_mutate_its_input() -> None:
    value = {"a": (1, 2), "b": [{"c": -0.0}]}
    snapshot = repr(value)
    to_json_value(value)
    assert repr(value) == snapshot


def test_normalisation_is_iterative_for_deep_values() -> None:
    depth = 5_000  # well past the recursion limit
    value: Any = "leaf"
    for _ in range(depth):
        value = [value]
    out = to_json_value(value)
    for _ in range(depth):
        assert type(out) is list and len(out) == 1
        out = out[0]
    assert out == "leaf"


# --------------------------------------------------------------------------- paths


def test_format_path() -> None:
    assert format_path([]) == "/"
    assert format_path(["a", 0, "b"]) == "/a/0/b"


def test_missing_is_falsy_and_distinct_from_none() -> None:
    assert not MISSING
    assert MISSING is not None
    assert repr(MISSING) == "MISSING"


def test_get_path() -> None:
    value = {"a": {"b": [10, {"c": None}]}}
    assert get_path(value, ()) is value
    assert get_path(value, ("a", "b", 0)) == 10
    assert get_path(value, ("a", "b", "1", "c")) is None  # digit strings index lists
    assert get_path(value, ("a", "b", "length")) == 2
    assert get_path(value, ("a", "x")) is MISSING
    assert get_path(value, ("a", "b", 5)) is MISSING
    assert get_path(value, ("a", "b", -1)) is MISSING
    assert get_path(value, ("a", "b", 0, "deeper")) is MISSING  # through a scalar
    assert get_path(None, ("a",)) is MISSING


def test_set_path_copies_only_the_spine() -> None:
    root = {"a": {"b": 1}, "keep": {"deep": [1, 2]}}
    out = set_path(root, ("a", "b"), 2)
    assert out == {"a": {"b": 2}, "keep": {"deep": [1, 2]}}
    assert root == {"a": {"b": 1}, "keep": {"deep": [1, 2]}}  # never mutated
    assert out["keep"] is root["keep"]  # untouched subtrees are shared


def test_set_path_creates_missing_containers() -> None:
    assert set_path(None, ("a", 0, "b"), 1) == {"a": [{"b": 1}]}
    assert set_path({"l": [1]}, ("l", 3), 4) == {"l": [1, None, None, 4]}
    assert set_path({"l": [1, 2]}, ("l", "1"), 9) == {"l": [1, 9]}
    assert set_path({"x": 1}, (), "new") == "new"


def test_delete_path() -> None:
    root = {"a": {"b": 1, "c": 2}}
    assert delete_path(root, ("a", "b")) == {"a": {"c": 2}}
    assert root == {"a": {"b": 1, "c": 2}}
    assert delete_path(root, ("a", "zzz")) is root  # no-op when absent
    assert delete_path(root, ()) is None


def test_paths_overlap_when_one_is_a_prefix() -> None:
    assert paths_overlap((), ("a", "b"))
    assert paths_overlap(("a",), ("a", "b"))
    assert paths_overlap(("a", "b"), ("a",))
    assert paths_overlap(("a", 0), ("a", 0))
    assert not paths_overlap(("a", "b"), ("a", "c"))
    assert not paths_overlap(("a",), ("b",))


def test_paths_overlap_takes_an_index_in_either_spelling() -> None:
    """``("3",)`` reads the element ``(3,)`` names (``get_path``), so they overlap."""
    assert get_path([0, 1, 2, 3], ("3",)) == get_path([0, 1, 2, 3], (3,))
    assert paths_overlap(("xs", "3"), ("xs", 3, "v"))
    assert paths_overlap(("xs", 3), ("xs", "3"))
    assert not paths_overlap(("xs", "3"), ("xs", 4))
    assert not paths_overlap(("xs", "3a"), ("xs", 3))


# --------------------------------------------------------------------------- equality


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        (1, 1, True),
        ({"x": [1, {"y": None}]}, {"x": [1, {"y": None}]}, True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        (True, 1, False),
        (0, False, False),
        ({"done": True}, {"done": 1}, False),
        ([0, 1], [False, True], False),
        ({"deep": [{"flag": 1}]}, {"deep": [{"flag": True}]}, False),
        (1, 1.5, False),
        ([1, 2], [2, 1], False),
        ([1], [1, 2], False),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": None}, {"b": None}, False),
        (None, MISSING, False),
        (MISSING, MISSING, True),
        ("1", 1, False),
    ],
)
def test_json_equal_is_strict_at_every_depth(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


def _strict_reference(a: Any, b: Any) -> bool:
    """The definition, recursively (test values are shallow): same kinds, same parts."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return a.keys() == b.keys() and all(_strict_reference(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(map(_strict_reference, a, b))
    return bool(a == b)


def _json_value(rng: random.Random, depth: int = 0) -> Any:
    if depth > 2 or rng.random() < 0.4:
        return rng.choice([0, 1, 1.0, 0.0, True, False, None, "a", "1", 2])
    if rng.random() < 0.5:
        return [_json_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {k: _json_value(rng, depth + 1) for k in rng.sample("abc", rng.randint(0, 3))}


def _respelled(rng: random.Random, value: Any) -> Any:
    """A copy of ``value`` with, at random, one scalar swapped for a ``==``-equal kind."""
    swaps = {(int, 1): True, (bool, True): 1, (int, 0): False, (bool, False): 0,
             (float, 1.0): 1, (float, 0.0): 0}
    if type(value) is dict:
        return {k: _respelled(rng, v) for k, v in value.items()}
    if type(value) is list:
        return [_respelled(rng, v) for v in value]
    swapped = swaps.get((type(value), value), MISSING)
    return swapped if swapped is not MISSING and rng.random() < 0.15 else value


@pytest.mark.parametrize("seed", range(30))
def test_json_equal_agrees_with_its_definition(seed: int) -> None:
    """Random values against a copy with kinds swapped (``True`` for ``1``, ``1`` for
    ``1.0``), a copy sharing parts, and a long list of scalars with one kind changed."""
    rng = random.Random(seed)
    for _ in range(50):
        a = _json_value(rng)
        for b in (_respelled(rng, a), _json_value(rng), copy.deepcopy(a)):
            assert json_equal(a, b) is _strict_reference(a, b), (a, b)
            assert json_equal(b, a) is _strict_reference(a, b), (a, b)
    long = list(range(1000))
    other = [*long[:500], 500.0, *long[501:]]
    assert long == other and not json_equal(long, other)
    nested = [{"v": i} for i in range(100)]
    flipped = [*nested[:40], {"v": True} if nested[40]["v"] == 1 else {"v": 40.0}, *nested[41:]]
    assert not json_equal(nested, flipped) and json_equal(nested, copy.deepcopy(nested))
