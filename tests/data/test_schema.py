"""cellkernel.data.schema: narrowing, defaults, validation.

Also schemas applied by cells (SPEC §3).
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers.core import raw, store_state, version

from cellkernel.data import schema as schemas
from cellkernel.reactive.cells import Cell
from cellkernel.runtime import Runtime

NUMBER = {"type": "number"}

DEFS_SCHEMA: dict[str, Any] = {
    "$defs": {"N": {"type": "number", "default": 3}},
    "type": "object",
    "properties": {
        "n": {"$ref": "#/$defs/N"},
        "list": {"type": "array", "items": {"$ref": "#/$defs/N"}},
    },
}

# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("schema", [None, True, {}])
def test_empty_schemas_accept_anything(schema: Any) -> None:
    schemas.validate(schema, {"any": object()})
    assert schemas.is_valid(schema, [1, "x"])


def test_false_schema_rejects_everything() -> None:
    with pytest.raises(ValueError, match="no value is allowed"):
        schemas.validate(False, None)
    assert not schemas.is_valid(False, 1)


def test_violation_raises_value_error_naming_where() -> None:
    with pytest.raises(ValueError, match=r"schema violation at /there: .*must be number"):
        schemas.validate(NUMBER, "x", "/there")
    assert schemas.is_valid(NUMBER, 1.5)
    assert not schemas.is_valid(NUMBER, "1")


def test_runtime_markers_do_not_affect_validation() -> None:
    schema = {
        "type": "object",
        "properties": {"c": {"type": "number", "asCell": True}, "s": {"asStream": True}},
    }
    schemas.validate(schema, {"c": 1, "s": {"$stream": True}})
    with pytest.raises(ValueError):
        schemas.validate(schema, {"c": "one"})


def test_validation_does_not_inject_defaults() -> None:
    value: dict[str, Any] = {}
    schemas.validate({"type": "object", "properties": {"a": {"default": 1}}}, value)
    assert value == {}


def test_refs_are_validated() -> None:
    schemas.validate(DEFS_SCHEMA, {"n": 1, "list": [1, 2]})
    with pytest.raises(ValueError):
        schemas.validate(DEFS_SCHEMA, {"list": [1, "two"]})


# --------------------------------------------------------------------------- narrowing


def test_at_path_follows_properties_items_and_prefix_items() -> None:
    schema = {
        "type": "object",
        "properties": {
            "tuple": {"type": "array", "prefixItems": [{"type": "string"}], "items": NUMBER},
            "map": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
    }
    assert schemas.at_path(schema, ()) == schema
    assert schemas.at_path(schema, ("tuple", 0)) == {"type": "string"}
    assert schemas.at_path(schema, ("tuple", "1")) == NUMBER
    assert schemas.at_path(schema, ("map", "anything")) == {"type": "boolean"}
    assert schemas.at_path(schema, ("missing",)) is None
    assert schemas.at_path(schema, ("tuple", 0, "deeper")) is None


def test_at_path_through_nullable_any_of() -> None:
    schema = {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"a": NUMBER}}]}
    assert schemas.at_path(schema, ("a",)) == NUMBER
    ambiguous = {"anyOf": [{"type": "object"}, {"type": "array"}]}
    assert schemas.at_path(ambiguous, ("a",)) is None


def test_at_path_resolves_refs_and_keeps_defs_reachable() -> None:
    assert schemas.at_path(DEFS_SCHEMA, ("n",)) == {"type": "number", "default": 3}
    assert schemas.at_path(DEFS_SCHEMA, ("list", 0)) == {"type": "number", "default": 3}
    narrowed = schemas.at_path(DEFS_SCHEMA, ("list",))
    assert isinstance(narrowed, dict) and narrowed["$defs"] == DEFS_SCHEMA["$defs"]
    schemas.validate(narrowed, [1, 2])  # still usable on its own


@pytest.mark.parametrize("schema", [None, True, False])
def test_at_path_of_non_object_schemas_is_unconstrained(schema: Any) -> None:
    assert schemas.at_path(schema, ("a",)) is None


# --------------------------------------------------------------------------- defaults and markers


def test_default_of_returns_a_copy() -> None:
    schema = {"type": "array", "default": [1, [2]]}
    first = schemas.default_of(schema)
    first[1].append(3)
    assert schemas.default_of(schema) == [1, [2]]
    assert schemas.default_of(NUMBER) is None
    assert schemas.default_of(None) is None
    assert schemas.default_of({"$ref": "#/$defs/N"}, DEFS_SCHEMA) == 3


def test_fill_defaults_adds_only_missing_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"default": 1}, "b": {"default": 2}, "c": NUMBER},
    }
    value = {"b": 20}
    assert schemas.fill_defaults(value, schema) == {"b": 20, "a": 1}
    assert value == {"b": 20}  # the input is not mutated
    assert schemas.fill_defaults(None, {"default": {"x": 1}}) == {"x": 1}
    assert schemas.fill_defaults(5, schema) == 5
    assert schemas.fill_defaults({}, DEFS_SCHEMA) == {"n": 3}


def test_markers() -> None:
    assert schemas.marker({"asCell": True}) == "cell"
    assert schemas.marker({"asStream": True}) == "stream"
    assert schemas.marker({"asCell": False}) is None
    assert schemas.marker({"type": "number"}) is None
    assert schemas.marker(None) is None


def test_object_schema() -> None:
    assert schemas.object_schema({"a": NUMBER}) == {"type": "object", "properties": {"a": NUMBER}}
    assert schemas.object_schema({"a": NUMBER}, ["a"])["required"] == ["a"]


# --------------------------------------------------------------------------- schemas on cells

PROFILE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "default": "anon"},
        "age": {"type": "number"},
        "settings": {
            "type": "object",
            "default": {},
            "properties": {"theme": {"type": "string", "default": "dark"}},
        },
        "tags": {"type": "array", "items": {"type": "string"}, "default": []},
    },
}


def test_get_fills_schema_defaults_at_every_depth(rt: Runtime) -> None:
    profile = rt.get_cell("profile", schema=PROFILE)
    profile.set({"age": 3})
    assert profile.get() == {
        "age": 3,
        "name": "anon",
        "settings": {"theme": "dark"},
        "tags": [],
    }
    assert raw(rt, profile) == {"age": 3}  # defaults are applied on read, never stored
    assert profile.key("settings", "theme").get() == "dark"
    assert profile.key("name").get() == "anon"


def test_a_default_object_gets_its_own_nested_defaults(rt: Runtime) -> None:
    schema = {"type": "object", "default": {}, "properties": {"theme": {"default": "dark"}}}
    settings = rt.get_cell("settings", schema=schema)
    assert settings.get() == {"theme": "dark"}


def test_defaults_apply_through_links(rt: Runtime) -> None:
    inner = rt.get_cell("inner")
    inner.set({"age": 1})
    outer = rt.get_cell("outer", schema={"type": "object", "properties": {"profile": PROFILE}})
    outer.set({"profile": inner})
    assert outer.get()["profile"]["name"] == "anon"
    assert outer.key("profile", "settings").get() == {"theme": "dark"}


def test_as_schema_changes_how_a_value_is_read(rt: Runtime) -> None:
    plain = rt.get_cell("p")
    plain.set({"age": 3})
    viewed = plain.as_schema(PROFILE)
    assert plain.get() == {"age": 3}
    assert viewed.get()["name"] == "anon"
    assert viewed.entity_id == plain.entity_id and viewed.path == plain.path
    assert viewed.schema == PROFILE and plain.schema is None


def test_key_narrows_the_schema(rt: Runtime) -> None:
    profile = rt.get_cell("profile", schema=PROFILE)
    assert profile.key("settings").schema == PROFILE["properties"]["settings"]
    assert profile.key("tags", 0).schema == {"type": "string"}
    assert profile.key("unknown").schema is None


def test_as_cell_fields_come_back_as_cells_whose_get_is_the_value(rt: Runtime) -> None:
    schema = {"type": "object", "properties": {"count": {"type": "number", "asCell": True}}}
    state = rt.get_cell("state", schema=schema)
    state.set({"count": 3})
    count = state.get()["count"]
    assert isinstance(count, Cell)
    assert count.get() == 3
    assert state.key("count").get() == 3
    count.set(4)
    assert state.key("count").get() == 4


@pytest.mark.parametrize(
    ("path", "value"),
    [((), {"age": "old"}), ((), {"tags": [1]}), (("age",), "old"), (("settings", "theme"), 3)],
)
def test_a_write_violating_the_schema_raises_and_writes_nothing(
    rt: Runtime, path: tuple[str, ...], value: Any
) -> None:
    profile = rt.get_cell("profile", schema=PROFILE)
    profile.set({"age": 3, "settings": {"theme": "light"}})
    before = store_state(rt)
    with pytest.raises(ValueError, match="schema violation"):
        profile.key(*path).set(value)
    assert store_state(rt) == before


def test_update_and_push_violating_the_schema_write_nothing(rt: Runtime) -> None:
    profile = rt.get_cell("profile", schema=PROFILE)
    profile.set({"age": 3, "tags": ["a"]})
    before = store_state(rt)
    with pytest.raises(ValueError):
        profile.update({"name": "ok", "age": "not a number"})
    with pytest.raises(ValueError):
        profile.key("tags").push("fine", 2)
    with pytest.raises(ValueError):
        profile.key("tags").push({"objects": "become documents first"})
    assert store_state(rt) == before
    assert profile.get()["tags"] == ["a"]


def test_a_valid_write_lands(rt: Runtime) -> None:
    profile = rt.get_cell("profile", schema=PROFILE)
    profile.set({"age": 3})
    start = version(rt, profile)
    profile.update({"name": "Ada"})
    profile.key("tags").push("x")
    assert profile.get()["name"] == "Ada"
    assert profile.get()["tags"] == ["x"]
    assert version(rt, profile) == start + 2


# --------------------------------------------------------------------------- checker


_CHECKER_SCHEMAS = [
    {"type": t} for t in ("integer", "number", "string", "boolean", "object", "array", "null")
] + [
    {"type": "object", "additionalProperties": True},
    {"type": "array", "items": {}},
    {"type": "integer", "minimum": 3},
    {"type": "array", "items": {"type": "integer"}},
    {"type": ["integer", "null"]},
]
_CHECKER_VALUES = [0, 5, -1, True, False, 1.0, 2.5, "x", "", None, {}, {"a": 1}, [], [1, "a"]]


@pytest.mark.parametrize("schema", _CHECKER_SCHEMAS, ids=lambda s: str(s))
def test_checker_answers_as_validate_does(schema: Any) -> None:
    """The compiled checker (with its exact-type fast yes) never disagrees with ``validate``."""
    check = schemas.checker(schema)
    assert check is not None
    for value in _CHECKER_VALUES:
        assert check(value) is schemas.is_valid(schema, value), (schema, value)
