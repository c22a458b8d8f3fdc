"""Ports of labs runner schema tests (commontoolsinc/labs packages/runner/test), issue 17 item 3."""

from __future__ import annotations

from typing import Any

from cellkernel import Runtime


def _read(rt: Runtime, value: Any, schema: Any) -> Any:
    cell = rt.get_cell({"labs-schema": repr(schema)})
    cell.set(value)
    return cell.as_schema(schema).get()


def test_anyof_selects_number_candidate(rt: Runtime) -> None:
    # labs schema-anyof.test.ts: "should select the correct candidate for primitive types (number)"
    schema = {"anyOf": [{"type": "number"}, {"type": "string"}]}
    assert _read(rt, 42, schema) == 42


def test_anyof_selects_string_candidate(rt: Runtime) -> None:
    # labs schema-anyof.test.ts: "should select the correct candidate for primitive types (string)"
    schema = {"anyOf": [{"type": "number"}, {"type": "string"}]}
    assert _read(rt, "hi", schema) == "hi"


def test_anyof_no_candidate_reads_as_missing(rt: Runtime) -> None:
    # labs schema-anyof.test.ts: "should return undefined if no anyOf candidate matches for
    # primitive types" (labs: undefined; here None, SPEC §3 "read as missing")
    schema = {"type": "object", "properties": {"v": {"anyOf": [{"type": "number"}]}}}
    assert _read(rt, {"v": "text"}, schema) == {"v": None}


def test_anyof_object_value_without_object_candidate(rt: Runtime) -> None:
    # labs schema-anyof.test.ts: "should return undefined when value is an object but no anyOf
    # candidate is an object"
    schema = {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}]}}}
    assert _read(rt, {"v": {"a": 1}}, schema) == {"v": None}


def test_anyof_in_array_items(rt: Runtime) -> None:
    # labs schema-anyof.test.ts: "should handle anyOf in array items"
    schema = {"type": "array", "items": {"anyOf": [{"type": "number"}, {"type": "string"}]}}
    assert _read(rt, [1, "a", True], schema) == [1, "a", None]


def test_additional_properties_false_drops_undeclared_keys(rt: Runtime) -> None:
    # labs schema-basic.test.ts: "should handle nested objects" (undeclared keys are not
    # returned under additionalProperties: false)
    schema = {
        "type": "object",
        "properties": {"user": {
            "type": "object", "properties": {"name": {"type": "string"}},
            "additionalProperties": False,
        }},
    }
    assert _read(rt, {"user": {"name": "ada", "x": 1}}, schema) == {"user": {"name": "ada"}}


def test_primitive_types_and_defaults(rt: Runtime) -> None:
    # labs schema-basic.test.ts: "should handle primitive types"
    schema = {"type": "object", "properties": {
        "s": {"type": "string"}, "n": {"type": "number"}, "b": {"type": "boolean", "default": True},
    }}
    assert _read(rt, {"s": "x", "n": 1.5}, schema) == {"s": "x", "n": 1.5, "b": True}
