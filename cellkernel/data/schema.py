"""The JSON-Schema subset the runtime interprets itself, plus validation.

Validation is delegated to ``fastjsonschema`` (compiled validators, cached by
canonical schema text).  What the runtime does itself is small: narrow a
schema along a path, fill in defaults, and find the ``asCell`` / ``asStream``
markers that change what ``get()`` hands back.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import fastjsonschema

from cellkernel.data.values import JSON

Schema = dict[str, Any] | bool | None

#: Keywords that are runtime markers, not validation.
_MARKERS = ("asCell", "asStream", "default")


def canonical(schema: Any) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


#: keywords whose values are data, not schemas (a default may hold a link with an ``id``)
_VALUE_KEYWORDS = frozenset({"default", "const", "enum", "examples"})


def _refuse_remote_refs(schema: Any) -> None:
    """Raise ``ValueError`` for a ``$ref`` that leaves the schema (``file:``, ``http:``, ...).

    Schemas come from stored data; ``fastjsonschema`` would fetch such a
    reference with ``urlopen`` (reading local files or the network) and compile
    what it found.  Only references inside the schema (``#...``) are followed.
    """
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None and not (isinstance(ref, str) and ref.startswith("#")):
                raise ValueError(
                    f"schema $ref {ref!r} is not allowed: only references inside the schema "
                    "('#/...') are followed"
                )
            if isinstance(node.get("$id"), str) or isinstance(node.get("id"), str):
                # an id changes what a relative '#...' reference resolves against
                raise ValueError("schema '$id' / 'id' is not supported: references stay local")
            stack.extend(v for k, v in node.items() if k not in _VALUE_KEYWORDS)
        elif isinstance(node, list):
            stack.extend(node)


@lru_cache(maxsize=1024)
def _compiled(text: str) -> Callable[[Any], Any]:
    schema = json.loads(text)
    _refuse_remote_refs(schema)
    try:
        return fastjsonschema.compile(schema, use_default=False)
    except fastjsonschema.JsonSchemaDefinitionException as exc:  # pragma: no cover - author bug
        raise ValueError(f"invalid JSON schema {text[:200]}: {exc}") from exc


def check_schema(schema: Any, what: str = "schema") -> None:
    """Raise ``ValueError`` unless ``schema`` is a JSON schema: an object, a boolean or None."""
    if schema is None or type(schema) is bool or type(schema) is dict:
        return
    raise ValueError(
        f"{what} must be a JSON schema (an object, true or false), "
        f"got {type(schema).__name__} {schema!r:.200}"
    )


def validate(schema: Schema, value: Any, where: str = "") -> None:
    """Raise ``ValueError`` if ``value`` violates ``schema``; None/True accept all."""
    if schema is None or schema is True or schema == {}:
        return
    if type(schema) is not dict and schema is not False:
        check_schema(schema, f"schema{' of ' + where if where else ''}")
    if schema is False:
        raise ValueError(f"schema violation{' at ' + where if where else ''}: no value is allowed")
    try:
        _compiled(canonical(schema))(value)
    except fastjsonschema.JsonSchemaValueException as exc:
        at = f" at {where}" if where else ""
        shown = canonical(schema)
        shown = shown if len(shown) <= 200 else shown[:200] + "…"
        raise ValueError(
            f"schema violation{at}: {exc.message} (value {value!r:.100}, schema {shown})"
        ) from None


def checker(schema: Schema) -> Callable[[Any], bool] | None:
    """A compiled yes/no test for ``schema``, or None when every value passes.

    For hot paths that check the same schema many times: the schema is
    serialised and compiled once here, not on every call as in ``validate``.
    """
    if schema is None or schema is True or schema == {}:
        return None
    if schema is False:
        return lambda _value: False
    check_schema(schema)
    compiled = _compiled(canonical(schema))
    failure = fastjsonschema.JsonSchemaValueException

    def check(value: Any) -> bool:
        try:
            compiled(value)
        except failure:
            return False
        return True

    sure = _sure_types(schema)
    if sure is None:
        return check
    if sure == (dict,):
        return lambda value: isinstance(value, dict) or check(value)
    fast = lambda value: type(value) in sure or check(value)  # noqa: E731
    setattr(fast, SURE_TYPES, sure)  # a compiled plan tests these inline (``lift_plans``)
    return fast


#: the attribute of a ``checker`` result naming the exact types that always pass it
SURE_TYPES = "sure_types"


#: JSON types whose values of these exact Python types always pass ``{"type": t}``.
_SURE_TYPES: dict[str, tuple[type, ...]] = {
    "integer": (int,), "number": (int, float), "string": (str,), "boolean": (bool,),
    "object": (dict,), "array": (list,), "null": (type(None),),
}
_INERT_KEYS = frozenset(
    {"type", "title", "description", "default", "additionalProperties", "items"}
)


def _sure_types(schema: Schema) -> tuple[type, ...] | None:
    """For a bare ``{"type": t}`` schema: the types that pass without running the validator.

    Only a fast *yes*: any other value still goes to the compiled validator, so
    answers (and edge cases such as ``True`` for integers) are unchanged.
    """
    if type(schema) is not dict or not set(schema) <= _INERT_KEYS:
        return None
    kind = schema.get("type")
    sure = _SURE_TYPES.get(kind) if type(kind) is str else None
    if sure is None:
        return None
    extra = schema.get("additionalProperties", True)
    items = schema.get("items", True)
    if (extra is not True and extra != {}) or (items is not True and items != {}):
        return None
    return sure


def is_valid(schema: Schema, value: Any) -> bool:
    try:
        validate(schema, value)
    except ValueError:
        return False
    return True


def resolve_ref(schema: Schema, root: Schema) -> Schema:
    """Follow a local ``$ref`` (``#/$defs/X``) against ``root``."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 32:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/") or not isinstance(root, dict):
            return schema
        target: Any = root
        for part in ref[2:].split("/"):
            if not isinstance(target, dict) or part not in target:
                return schema
            target = target[part]
        extra = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **extra} if extra else target
        seen += 1
    return schema


def _with_defs(child: Schema, root: Schema) -> Schema:
    """Keep ``$defs`` reachable when a narrowed schema still uses ``$ref``."""
    if (
        isinstance(child, dict)
        and isinstance(root, dict)
        and "$defs" in root
        and "$defs" not in child
        and "$ref" in json.dumps(child)
    ):
        return {**child, "$defs": root["$defs"]}
    return child


def at_path(schema: Schema, path: Sequence[str | int]) -> Schema:
    """Narrow ``schema`` to the value at ``path`` (None means "anything")."""
    root = schema
    for key in path:
        schema = resolve_ref(schema, root)
        if not isinstance(schema, dict):
            return None
        if "anyOf" in schema and not ("properties" in schema or "items" in schema):
            resolved = [resolve_ref(o, root) for o in schema["anyOf"]]
            options = [o for o in resolved if isinstance(o, dict) and o.get("type") != "null"]
            if len(options) != 1:
                return None
            schema = options[0]
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit()):
            items = schema.get("items")
            prefix = schema.get("prefixItems")
            if isinstance(prefix, list) and int(key) < len(prefix):
                schema = prefix[int(key)]
            elif items is not None:
                schema = items
            else:
                return None
        else:
            props = schema.get("properties", {})
            if key in props:
                schema = props[key]
            elif isinstance(schema.get("additionalProperties"), dict):
                schema = schema["additionalProperties"]
            else:
                return None
    return _with_defs(resolve_ref(schema, root), root)


def default_of(schema: Schema, root: Schema | None = None) -> Any:
    """The value to use when nothing is stored: the schema default, filled in."""
    schema = resolve_ref(schema, root if root is not None else schema)
    if not isinstance(schema, dict):
        return None
    if "default" in schema:
        return copy.deepcopy(schema["default"])
    return None


def fill_defaults(value: Any, schema: Schema, root: Schema | None = None) -> Any:
    """Return ``value`` with missing properties taken from schema defaults."""
    root = root if root is not None else schema
    schema = resolve_ref(schema, root)
    if not isinstance(schema, dict):
        return value
    if value is None and "default" in schema:
        value = copy.deepcopy(schema["default"])
    props = schema.get("properties")
    if isinstance(value, dict) and isinstance(props, dict):
        missing = {
            k: default_of(s, root)
            for k, s in props.items()
            if k not in value and isinstance(resolve_ref(s, root), dict)
            and "default" in resolve_ref(s, root)  # type: ignore[operator]
        }
        if missing:
            value = {**value, **missing}
    return value


def marker(schema: Schema) -> str | None:
    """``"cell"`` / ``"stream"`` when the schema asks for a Cell or Stream back."""
    if isinstance(schema, dict):
        if schema.get("asStream"):
            return "stream"
        if schema.get("asCell"):
            return "cell"
    return None


def object_schema(properties: dict[str, Any], required: Sequence[str] = ()) -> dict[str, JSON]:
    schema: dict[str, JSON] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema
