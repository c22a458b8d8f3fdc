"""Property-based tests (hypothesis) for the functions that take untrusted input.

* ``refer``: any Python value gives a ``Reference`` or a ``ValueError``/``TypeError``;
  equal JSON gives equal references (key order, tuples, integral floats, a
  JSON round trip and embedded references change nothing).
* ``values.to_json_value``: only ``ValueError`` escapes; its output is plain
  JSON and normalising it again changes nothing.
* ``links.parse_link``: any dict gives a ``Link`` or a ``ValueError``; a parsed
  link round-trips through ``Link.to_json``.
* ``GraphSnapshot.model_validate``: any dict validates or raises pydantic's
  ``ValidationError``.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import decimal
import enum
import fractions
import json
import math
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from cellkernel import GraphSnapshot, Reference, refer
from cellkernel.data.links import Link, parse_link
from cellkernel.data.values import json_equal, to_json_value

SETTINGS = settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


class Color(enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Opaque:
    """An arbitrary object: not JSON, no conversion hooks."""


class Flag(enum.StrEnum):
    ON = "on"


# --------------------------------------------------------------------------- strategies

finite = st.floats(allow_nan=False, allow_infinity=False)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), finite, st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)

weird_leaves = st.one_of(
    st.floats(),  # NaN and infinities included
    st.integers(),  # beyond the double range too
    st.binary(max_size=8),
    st.builds(bytearray, st.binary(max_size=4)),
    st.sets(st.integers(), max_size=3),
    st.frozensets(st.text(max_size=3), max_size=3),
    st.complex_numbers(allow_nan=True),
    st.decimals(allow_nan=True),
    st.fractions(),
    st.datetimes(),
    st.dates(),
    st.just(Opaque()),
    st.just(Ellipsis),
    st.just(Color.RED),
    st.just(Level.HIGH),
    st.just(Flag.ON),
    st.just(object),
    st.builds(lambda v: refer(v), json_scalars),
)
keys = st.one_of(
    st.text(max_size=6),
    st.integers(),
    st.none(),
    st.booleans(),
    st.floats(),
    st.tuples(st.integers()),
    st.just(Flag.ON),
)
python_values = st.recursive(
    st.one_of(json_scalars, weird_leaves),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(keys, inner, max_size=4),
        st.dictionaries(st.text(max_size=4), inner, max_size=4).map(collections.OrderedDict),
    ),
    max_leaves=20,
)


def _reordered(value: Any) -> Any:
    """The same JSON with every dict's insertion order reversed and lists as tuples."""
    if isinstance(value, dict):
        return {k: _reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return tuple(_reordered(v) for v in value)
    return value


def _integral_as_float(value: Any) -> Any:
    """Ints that a double holds exactly, as floats (the same JavaScript number)."""
    if isinstance(value, dict):
        return {k: _integral_as_float(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_as_float(v) for v in value]
    if type(value) is int and abs(value) <= 2**53:
        return float(value)
    return value


# --------------------------------------------------------------------------- refer


@SETTINGS
@given(python_values)
def test_refer_accepts_anything_or_raises_value_or_type_error(value: Any) -> None:
    try:
        ref = refer(value)
    except (ValueError, TypeError):
        return
    assert isinstance(ref, Reference)
    assert str(ref).startswith("baedrei") and ref.to_json() == {"/": str(ref)}
    assert refer(value) == ref and hash(refer(value)) == hash(ref)  # deterministic


@SETTINGS
@given(json_values)
def test_equal_json_gives_equal_references(value: Any) -> None:
    ref = refer(value)
    assert refer(json.loads(json.dumps(value))) == ref
    assert refer(_reordered(value)) == ref
    assert refer(_integral_as_float(value)) == ref
    # an embedded Reference hashes as the structure it names
    assert refer({"wrapped": value}) == refer({"wrapped": ref})
    assert refer([value, 1]) == refer([ref, 1])


@SETTINGS
@given(json_values, json_values)
def test_different_json_gives_different_references(a: Any, b: Any) -> None:
    same = json_equal(to_json_value(a), to_json_value(b))
    assert (refer(a) == refer(b)) == same


def test_refer_rejects_cycles_with_value_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    mapping: dict[str, Any] = {}
    mapping["self"] = [mapping]
    for value in (loop, mapping):
        with pytest.raises(ValueError, match="cyclic"):
            refer(value)


# --------------------------------------------------------------------------- values


@SETTINGS
@given(python_values)
def test_to_json_value_raises_only_value_error_and_is_idempotent(value: Any) -> None:
    try:
        out = to_json_value(value)
    except ValueError:
        return
    # plain JSON: survives a strict round trip unchanged
    text = json.dumps(out, allow_nan=False)
    assert json_equal(json.loads(text), out)
    again = to_json_value(out)
    assert json_equal(again, out)
    assert json.dumps(again, allow_nan=False) == text


@SETTINGS
@given(json_values)
def test_to_json_value_keeps_json_values(value: Any) -> None:
    out = to_json_value(value)
    assert refer(out) == refer(value)  # the same JavaScript value
    assert to_json_value(_reordered(value)) == out  # tuples become lists


def test_to_json_value_deep_nesting_is_iterative() -> None:
    deep: Any = "leaf"
    for _ in range(10_000):
        deep = [deep]
    out: Any = to_json_value(deep)
    for _ in range(10_000):
        out = out[0]
    assert out == "leaf"


def _in_child(code: str, timeout: float) -> str:
    """Run ``code`` in a child process capped at 600 MB; its stdout, or "timeout"."""
    prelude = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_AS, (600 * 2**20, 600 * 2**20))\n"
        "from cellkernel.data.values import to_json_value\n"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", prelude + textwrap.dedent(code)],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return done.stdout.strip() or done.stderr.strip()[-300:]


def test_to_json_value_rejects_cycles_with_value_error() -> None:
    code = """
        loop = []
        loop.append(loop)
        mapping = {}
        mapping["self"] = [mapping]
        for value in (loop, mapping):
            try:
                to_json_value(value)
            except ValueError:
                print("ValueError")
    """
    assert _in_child(code, timeout=2).split() == ["ValueError", "ValueError"]


def test_to_json_value_is_linear_in_nesting_depth() -> None:
    """Work, counted as calls (not timed): twice the depth is twice the calls, past the limit."""
    code = """
        import sys
        counts = []
        for depth in (20_000, 40_000):
            deep = "leaf"
            for _ in range(depth):
                deep = [deep]
            calls = [0]
            def count(frame, event, arg):
                calls[0] += 1
            sys.setprofile(count)
            to_json_value(deep)
            sys.setprofile(None)
            counts.append(calls[0])
        print(counts[0], counts[1])
    """
    out = _in_child(code, timeout=60)
    small, large = (int(n) for n in out.split())
    assert 1.8 < large / small < 2.2, out


# --------------------------------------------------------------------------- links

link_keys = st.sampled_from(["id", "path", "space", "schema", "overwrite", "extra"])
link_field_values = st.one_of(
    python_values,
    st.text(min_size=1, max_size=10),
    st.lists(st.one_of(st.text(max_size=3), st.integers(-3, 3)), max_size=3),
    st.sampled_from(["this", "redirect"]),
)
link_bodies = st.dictionaries(link_keys, link_field_values, max_size=5)
link_like = st.one_of(
    link_bodies.map(lambda body: {"/": {"link@1": body}}),
    python_values.map(lambda body: {"/": {"link@1": body}}),
    st.dictionaries(keys, python_values, max_size=3),
    st.dictionaries(st.just("/"), st.dictionaries(st.text(max_size=8), python_values, max_size=3)),
)


@SETTINGS
@given(link_like)
def test_parse_link_raises_only_value_error(value: dict[Any, Any]) -> None:
    try:
        link = parse_link(value, "did:base")
    except ValueError:
        return
    assert isinstance(link, Link)
    assert isinstance(link.id, str) and link.id and isinstance(link.space, str)
    assert all(type(p) in (str, int) for p in link.path)
    # a parsed link round-trips
    assert parse_link(link.to_json(), "did:base") == link
    assert parse_link(link.to_json(base_space=link.space), link.space) == link


# --------------------------------------------------------------------------- snapshots

snapshot_keys = st.sampled_from(
    ["graphVersion", "generation", "pattern", "patternName", "result", "cells", "nodes",
     "links", "predecessor", "extra"]
)
node_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=5), python_values),
        "helper": st.one_of(st.sampled_from(["lift", "handler"]), python_values),
        "module": st.one_of(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["python", "builtin", "pattern", "wasm"])},
                optional={"ref": st.text(max_size=5), "hash": python_values},
            ),
            python_values,
        ),
        "inputs": st.one_of(st.lists(st.text(max_size=5), max_size=2), python_values),
        "outputs": st.one_of(st.lists(st.text(max_size=5), max_size=2), python_values),
    },
)
cell_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(st.text(max_size=6).map(lambda s: "of:" + s), python_values),
        "name": python_values,
        "capability": python_values,
    },
)
snapshot_field = st.one_of(
    python_values,
    st.lists(node_like, max_size=3),
    st.lists(cell_like, max_size=3),
    st.lists(st.dictionaries(st.sampled_from(["from", "to", "kind"]), python_values), max_size=2),
)
snapshot_like = st.one_of(
    st.dictionaries(snapshot_keys, snapshot_field, max_size=10),
    st.fixed_dictionaries(
        {
            "graphVersion": st.sampled_from([1, 1.0, "1", 2, True]),
            "generation": st.one_of(st.integers(-2, 5), python_values),
            "pattern": st.one_of(st.text(max_size=5), python_values),
            "cells": st.lists(cell_like, max_size=3),
            "nodes": st.lists(node_like, max_size=3),
            "links": st.lists(
                st.fixed_dictionaries(
                    {"from": st.text(max_size=3), "to": st.text(max_size=3)},
                    optional={"kind": python_values},
                ),
                max_size=2,
            ),
        }
    ),
    st.dictionaries(keys, python_values, max_size=4),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshot_like)
def test_graph_snapshot_raises_only_validation_error(value: dict[Any, Any]) -> None:
    try:
        snapshot = GraphSnapshot.model_validate(value)
    except ValidationError:
        return
    assert snapshot.graphVersion == 1 and snapshot.generation >= 1
    # what validated can be dumped and validates again to the same model
    dumped = snapshot.model_dump(mode="python", by_alias=True)
    assert GraphSnapshot.model_validate(dumped) == snapshot


def test_graph_snapshot_json_schema_is_published() -> None:
    schema = GraphSnapshot.model_json_schema(by_alias=True)
    assert {"generation", "pattern", "cells", "nodes", "links"} <= set(schema["properties"])


# a few fixed values that the strategies above rarely hit
@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        -0.0,
        2**1024,
        decimal.Decimal("1.5"),
        fractions.Fraction(1, 3),
        datetime.date(2024, 1, 1),
        {"/": {"link@1": {"id": "of:x", "path": [True]}}},
        {"/": b"\x01\x07\x12\x20" + bytes(32)},
    ],
    ids=repr,
)
def test_fixed_edge_values(value: Any) -> None:
    for fn, allowed in (
        (refer, (ValueError, TypeError)),
        (to_json_value, (ValueError,)),
    ):
        with contextlib.suppress(*allowed):
            fn(value)
    if isinstance(value, dict):
        with contextlib.suppress(ValueError):
            parse_link(value, "did:base")
