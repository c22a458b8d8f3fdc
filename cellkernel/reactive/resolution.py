"""Link resolution: where a (space, entity id, path) leads through ``link@1`` sigils.

Every read and write of a cell walks its path through the links it meets
(SPEC §3): plain links are followed on read and replaced on write, write
redirects are followed on both, and a cycle or more than ``MAX_HOPS`` hops is
a ``LinkCycleError``.  The walk journals what it read, path-precise, so the
scheduler subscribes to exactly that.  Walks are remembered (``_crossed``)
and a sigil's parse too (``links.stored_link``): both rest on a store never
changing a value in place.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cellkernel.data.links import MAX_HOPS, Link, as_link, stored_link
from cellkernel.data.values import MISSING, Path, format_path, get_path
from cellkernel.errors import LinkCycleError
from cellkernel.store.transactions import WRITTEN

if TYPE_CHECKING:
    from cellkernel.store.documents import Document
    from cellkernel.store.transactions import Address, Transaction


def resolve(tx: Transaction, space: str, entity_id: str, path: Path, *, for_write: bool = False,
            track: bool = True) -> tuple[str, str, Path, Any]:
    """Follow links along ``path``; return the final address and the link schema seen.

    For reads every link is followed; for writes a plain link at the final
    position is not (the write replaces it), a redirect is.  Raises
    ``LinkCycleError`` on a cycle or after ``MAX_HOPS`` hops.
    """
    return resolve_read(tx, space, entity_id, path, for_write=for_write, track=track)[:4]


#: resolutions that crossed links, by where they started: entity id -> (space, path,
#: for_write) -> (the documents crossed, by key, the journal entries the walk made in
#: them, the addresses it hopped from, where it went on from and the link schema seen).
#: Stored documents never change in place (a commit replaces them), so while each crossed
#: document is still the stored one the walk through them is the same: it goes on from the
#: last link's target.  Keyed by id first, so a walk from a document no walk crossed a
#: link from pays one lookup.  Bounded (``_crossed_count`` walks); an entry holds the
#: documents it crossed until it is replaced or cleared.
_crossed: dict[str, dict[tuple[str, Path, bool], tuple[
    tuple[tuple[tuple[str, str], Document], ...], tuple[Address, ...], tuple[Address, ...],
    tuple[str, str, Path, Any]]]] = {}
_crossed_count = 0
_CROSSED_MAX = 4_096


def resolve_read(
    tx: Transaction,
    space: str,
    entity_id: str,
    path: Path,
    *,
    for_write: bool = False,
    track: bool = True,
) -> tuple[str, str, Path, Any, Any]:
    """``resolve``, plus the raw stored value at the final address (``MISSING`` if none).

    The walk finds that value anyway: callers that want it need not read again.
    A walk that crossed links is remembered (``_crossed``): the next one from the
    same start checks that the documents crossed hold the same values and goes
    on from where that walk went on, journaling what it journaled.
    """
    track = track and tx.track  # an untracked transaction journals nothing: skip the calls
    hops = 0
    seen: set[tuple[str, str, Path]] | None = None
    link_schema: Any = None
    #: a walk from the start remembers each hop: (space, id, journal entry, address hopped
    #: from); None once resumed
    hopped: list[tuple[str, str, Address, Address]] | None = []
    start_path = path
    starts = _crossed.get(entity_id)  # (None for a document no walk crossed a link from)
    if starts is not None:
        known = starts.get((space, path, for_write)) if type(path) is tuple else None
        if known is not None and tx.holds(known[0]):
            if track:
                tx.reads.extend(known[1])
            walked = known[2]
            first = walked[0]
            hops = len(walked)
            if hops > 1:
                seen = set(walked)
            space, entity_id, path, link_schema = known[3]
            hopped = None
    while True:
        node = tx.value(space, entity_id)
        found = 0
        link: Link | None = None
        if type(node) is not dict or "/" not in node or (link := (
            as_link(node, space) if tx.wrote(space, entity_id)
            else stored_link(node, (space, entity_id, ()))
        )) is None:
            for key in path:
                # one step of ``get_path`` inline for the usual dict key and list index
                found += 1
                t = type(node)
                if t is dict:
                    node = node.get(key, MISSING)
                elif t is list and type(key) is int and 0 <= key < len(node):
                    node = node[key]
                else:
                    node = get_path(node, (key,))
                if node is MISSING:
                    break
                if type(node) is dict and "/" in node:
                    where = (space, entity_id, path[:found])  # (the hop's journal entry, too)
                    link = (as_link(node, space) if tx.wrote(space, entity_id)
                            else stored_link(node, where))
                    if link is not None:
                        break
        if link is None or (found == len(path) and for_write and not link.redirect):
            if link is None and track:  # (the document is read already: only its entry is new)
                tx.reads.append((space, entity_id, path))
            if hopped and type(start_path) is tuple:
                _remember_walk(tx, hopped, start_path, for_write,
                               (space, entity_id, path, link_schema))
            return space, entity_id, path, link_schema, node
        # (a link met inside the path set ``where`` just before the break; one at the root: ())
        entry = where if found else (space, entity_id, ())
        if track:
            tx.reads.append(entry)
        hops += 1
        here = (space, entity_id, path)
        if hopped is not None:
            hopped.append((space, entity_id, entry, here))
        space, entity_id, path = link.space, link.id, link.path + tuple(path[found:])
        if link.schema is not None:
            link_schema = link.schema
        if hops == 1:  # one hop (the usual case) is a cycle only if it comes straight back
            first = here
            if (space, entity_id, path) != here:
                continue
            seen = {here}
        else:
            if seen is None:
                seen = {first}
            seen.add(here)
        if (space, entity_id, path) in seen or hops > MAX_HOPS:
            reason = "a cycle" if (space, entity_id, path) in seen else f"more than {MAX_HOPS} hops"
            raise LinkCycleError(
                f"link resolution met {reason} at {entity_id}{format_path(path)}"
            )


def _remember_walk(tx: Transaction, hopped: list[tuple[str, str, Address, Address]],
                   start_path: Path, for_write: bool, resume: tuple[str, str, Path, Any]) -> None:
    """Keep a walk that crossed links for the next one from the same start (``_crossed``);
    not one that crossed a document this transaction wrote (no stored document is it)."""
    global _crossed_count
    crossed = []
    for s, e, _entry, _here in hopped:
        doc = tx.read_document((s, e))
        if doc is WRITTEN or doc is None:
            return
        crossed.append(((s, e), doc))
    if _crossed_count >= _CROSSED_MAX:
        _crossed.clear()
        _crossed_count = 0
    first_space, first_id = hopped[0][0], hopped[0][1]
    starts = _crossed.get(first_id)
    if starts is None:
        starts = _crossed[first_id] = {}
    if (first_space, start_path, for_write) not in starts:
        _crossed_count += 1
    starts[(first_space, start_path, for_write)] = (
        tuple(crossed),
        tuple(entry for *_doc, entry, _here in hopped),
        tuple(here for *_doc, here in hopped), resume)
