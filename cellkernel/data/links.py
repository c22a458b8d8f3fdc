"""The ``link@1`` sigil: how one JSON value points at another cell.

``{"/": {"link@1": {"id": ..., "path": [...], "space"?: ..., "schema"?: ...,
"overwrite"?: "redirect"}}}``.  A plain link is followed on read and replaced
on write; a write redirect is followed on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from cellkernel.data.values import JSON, Path

LINK_TAG: Final = "link@1"
MAX_HOPS: Final = 100


@dataclass(frozen=True, slots=True)
class Link:
    """A parsed link, with its space made explicit."""

    space: str
    id: str
    path: Path
    schema: JSON = None
    redirect: bool = False

    def to_json(self, base_space: str | None = None) -> dict[str, Any]:
        return make_link(
            self.space, self.id, self.path, self.schema, self.redirect, base_space=base_space
        )


def is_link(value: Any) -> bool:
    """Cheap test used on hot paths: is this a ``link@1`` sigil?"""
    if type(value) is not dict or len(value) != 1:
        return False
    inner = value.get("/")
    return type(inner) is dict and LINK_TAG in inner


def is_sigil(value: Any) -> bool:
    """Any ``{"/": {...}}`` sigil (links, factories)."""
    return type(value) is dict and len(value) == 1 and type(value.get("/")) is dict


def make_link(
    space: str,
    entity_id: str,
    path: Sequence[str | int] = (),
    schema: JSON = None,
    redirect: bool = False,
    *,
    base_space: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"id": entity_id, "path": list(path)}
    if space != base_space:
        body["space"] = space
    if schema is not None:
        body["schema"] = schema
    if redirect:
        body["overwrite"] = "redirect"
    return {"/": {LINK_TAG: body}}


_plain_links: dict[tuple[str, str, bool], Link] = {}
_PLAIN_LINKS_MAX: Final = 32_768  # (a lift over 10 000 map outputs meets 20 000 per run)


def as_link(value: Any, base_space: str) -> Link | None:
    """The parsed link ``value`` is, None if it is no ``link@1`` sigil (``is_link``).

    Raises ``ValueError`` for a malformed link, as ``parse_link`` does.  One look
    at the sigil for what resolution asks of every value on its way ("a link?
    to where?"), where ``is_link`` then ``parse_link`` take two.  The common
    shape, a whole-cell link (plain or a write redirect, its space given or
    not), is answered from ``_plain_links``: only checked links are kept there,
    keyed by content (never by the dict: user dicts are mutable), so a hit with
    the same field types and no other field is the checked parse.
    """
    if type(value) is not dict or len(value) != 1:
        return None
    inner = value.get("/")
    if type(inner) is not dict or LINK_TAG not in inner:
        return None
    body = inner[LINK_TAG]
    if len(inner) == 1 and type(body) is dict:
        path = body.get("path")
        entity_id = body.get("id")
        if type(path) is list and not path and type(entity_id) is str:
            key = _whole_cell_key(body, entity_id, base_space)
            if key is not None:
                link = _plain_links.get(key)
                if link is not None:
                    return link
    return _parse_checked(value, base_space)


#: links parsed from sigils inside stored values, by where they were met (space, entity
#: id, path), each kept with the sigil dict it was parsed from.  A store never changes a
#: value in place, so while that place holds that very dict its parse stands: one
#: identity check instead of a look at every field.  Keyed by place, a sigil replaced
#: there replaces its entry (a map's output rewritten per write leaves nothing behind);
#: bounded like ``_plain_links`` (a read of 10 000 map results meets 10 000 places).
_stored_links: dict[tuple[str, str, tuple[str | int, ...]], tuple[dict[str, Any], Link]] = {}
_STORED_LINKS_MAX: Final = 32_768


def stored_link(value: dict[str, Any], where: tuple[str, str, tuple[str | int, ...]]
                ) -> Link | None:
    """``as_link`` of the dict a stored value holds at ``where`` (its document's space
    is the base space), answered by identity once seen there.

    Only for values a store holds (a transaction's documents it did not write):
    a caller's dict may be changed after it was parsed.
    """
    hit = _stored_links.get(where)
    if hit is not None and hit[0] is value:
        return hit[1]
    link = as_link(value, where[0])
    if link is not None:
        if len(_stored_links) >= _STORED_LINKS_MAX:
            _stored_links.clear()
        _stored_links[where] = (value, link)
    return link


def _whole_cell_key(body: dict[str, Any], entity_id: str,
                    base_space: str) -> tuple[str, str, bool] | None:
    """The ``_plain_links`` key of a link body with an empty ``path``, or None.

    The common cases, a whole-cell link, plain or a write redirect (every binding
    a start plans), with or without its space: no field but these.
    """
    size = len(body)
    space = base_space
    if "space" in body:
        space = body["space"]
        size -= 1
    overwrite = body.get("overwrite")
    if overwrite is not None:
        size -= 1
    if size == 2 and type(space) is str and space and (
        overwrite is None or overwrite == "redirect" or overwrite == "this"
    ):
        return (space, entity_id, overwrite == "redirect")
    return None


def parse_link(value: Any, base_space: str) -> Link:
    """Parse a sigil, raising ``ValueError`` that says what is malformed."""
    link = as_link(value, base_space)
    if link is None:
        raise ValueError(f"not a link@1 sigil: {value!r}")
    return link


def _parse_checked(value: Any, base_space: str) -> Link:
    """Every check of a ``link@1`` sigil (``value`` is one, ``is_link``), its first error raised."""
    inner = value["/"]
    if len(inner) != 1:
        raise ValueError(
            f"malformed link: the sigil holds tags {sorted(inner)}, a link holds only {LINK_TAG!r}"
        )
    body = inner[LINK_TAG]
    if type(body) is not dict:
        raise ValueError(f"malformed link: link@1 must hold an object, got {body!r}")
    entity_id = body.get("id")
    if type(entity_id) is not str or not entity_id.startswith("of:") or len(entity_id) < 4:
        raise ValueError(
            f"malformed link: 'id' must be an entity id ('of:' + a reference), got {entity_id!r}"
        )
    path = body.get("path", [])
    if type(path) is list and not path and "path" in body:
        key = _whole_cell_key(body, entity_id, base_space)
        if key is not None:  # Links are immutable: one per target
            link = _plain_links.get(key)
            if link is None:
                if len(_plain_links) >= _PLAIN_LINKS_MAX:
                    _plain_links.clear()
                link = _plain_links[key] = Link(key[0], entity_id, (), None, key[2])
            return link
    if type(path) is not list or not all(
        type(p) is str or (type(p) is int and p >= 0) for p in path
    ):
        raise ValueError(
            f"malformed link: 'path' must be a list of keys (strings, ints >= 0), got {path!r}"
        )
    schema = body.get("schema")
    if schema is not None and type(schema) is not dict and type(schema) is not bool:
        raise ValueError(
            f"malformed link: 'schema' must be a JSON schema (an object or a boolean), "
            f"got {schema!r}"
        )
    space = body.get("space", base_space)
    if type(space) is not str or not space:
        raise ValueError(f"malformed link: 'space' must be a string, got {space!r}")
    overwrite = body.get("overwrite", "this")
    if overwrite not in ("this", "redirect"):
        raise ValueError(
            f"malformed link: 'overwrite' must be 'this' or 'redirect', got {overwrite!r}"
        )
    unknown = set(body) - {"id", "path", "space", "schema", "overwrite"}
    if unknown:
        raise ValueError(f"malformed link: unknown fields {sorted(unknown)}")
    return Link(space, entity_id, tuple(path), schema, overwrite == "redirect")
