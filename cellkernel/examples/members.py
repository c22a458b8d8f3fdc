"""Members and Record: dynamic instantiation from a factory value (SPEC §8).

The use case of the design notes (seeds 000/001): ``Members`` keeps a list of
records.  Typing a name (sending ``{"name": ...}`` to ``submit``) either links
the record that already has that title, or creates a new, live ``Record``
instance.  ``Members`` never imports ``Record``: it receives the record
factory as a plain value (a ``nodeFactory@1`` sigil in its argument), so
``Record`` can itself use ``Members`` — each record has a team of members,
and passes ``SELF.factory`` (itself, as a value) to it.

    from cellkernel import Runtime
    from cellkernel.examples.members import Members, Record

    rt = Runtime()
    people = rt.run(Members, {"factory": Record}, cause="people")
    people.submit.send({"name": "Ada"})        # creates a live Record "Ada"
    people.submit.send({"name": "ada"})        # already a member: error, nothing created
    people.titles.get()                        # ["Ada"]
    ada = people.members[0]
    ada.rename.send({"title": "Ada L."})       # its handlers fire, its lifts recompute
    ada.members.submit.send({"name": "Grace"}) # Ada's own team: a new Record "Grace"
    people.submit.send({"name": "Grace"})      # links the existing Grace, no duplicate
    people.submit.send({"name": "  "})         # people.error.get() explains; nothing lands

Errors the user can fix (an empty name, a duplicate, a factory that cannot be
resolved) are written to the instance's ``error`` field by the handler, and
the handler returns before writing anything else.  Anything unexpected
raises: the event's transaction is aborted (nothing of it lands, a child it
started is stopped) and ``rt.errors`` records the ``NodeError``.

Reads are path-precise (each member's ``title`` only), so records that list
each other do not make ``Members`` read in circles.
"""

from __future__ import annotations

from typing import Any

from cellkernel.data.links import is_link
from cellkernel.patterns.builder import SELF, Pattern, handler, lift, pattern
from cellkernel.patterns.builtins import instantiate, wish
from cellkernel.patterns.signatures import Default
from cellkernel.reactive.cells import Cell

__all__ = ["Members", "Record", "describe", "member_titles", "rename", "set_notes", "submit"]


def _entries(cell: Cell[Any]) -> list[Any]:
    """The stored list at ``cell`` (its links unfollowed): one entry per member."""
    raw = cell.get_raw()
    if is_link(raw):
        raw = cell.resolve_as_cell().get_raw()
    return raw if isinstance(raw, list) else []


def _title_key(title: Any) -> str:
    return " ".join(str(title).split()).casefold() if title is not None else ""


def _clean_name(event: Any) -> str | None:
    """The name an event carries (``{"name": ...}`` or a bare string), trimmed."""
    if isinstance(event, str):
        value: Any = event
    elif isinstance(event, dict):
        value = event.get("name")
    else:
        return None
    if not isinstance(value, str):
        return None
    return " ".join(value.split()) or None


@lift
def member_titles(members: Cell[list[Any]]) -> list[str]:
    """Each member's title (reads only the titles)."""
    titles = []
    for i in range(len(_entries(members))):
        title = members.key(i).key("title").get()
        titles.append(title if isinstance(title, str) else "")
    return titles


@lift
def count_of(titles: list[str]) -> int:
    return len(titles or [])


@handler
def submit(
    event: Any,
    members: Cell[list[Any]],
    error: Cell[Any],
    directory: Cell[list[Any]],
    factory: Cell[Any],
) -> None:
    """``{"name": ...}``: link the record with that title, or create one."""
    name = _clean_name(event)
    if name is None:
        error.set("A member needs a name: type one, then press enter.")
        return
    key = _title_key(name)
    for i in range(len(_entries(members))):
        if _title_key(members.key(i).key("title").get()) == key:
            error.set(f"{name!r} is already a member.")
            return
    # an existing record with that title anywhere in the space: link it, no duplicate
    for i in range(len(_entries(directory))):
        entry = directory.key(i)
        if _title_key(entry.key("title").get()) == key:
            members.push(entry.resolve_as_cell())
            error.set(None)
            return
    # a new record: resolve the factory first, so a bad one writes nothing at all
    try:
        template = factory.get()
    except Exception as exc:
        error.set(f"Cannot create {name!r}: the record factory does not load ({exc}).")
        return
    if not isinstance(template, Pattern):
        error.set(f"Cannot create {name!r}: no record factory was given to Members.")
        return
    record = instantiate(template, {"title": name})
    members.push(record)
    error.set(None)


@pattern
def Members(  # type: ignore[no-untyped-def]
    members: Default[list[Any], []],  # type: ignore[type-arg,valid-type]
    factory: Any = None,
):
    """A list of records; ``submit`` links or creates them with ``factory``."""
    error = Cell.of(None).for_("error")
    titles = member_titles(members)
    return {
        "members": members,
        "titles": titles,
        "count": count_of(titles),
        "error": error,
        "submit": submit(members=members, error=error, directory=wish("#all"),
                         factory=factory),
    }


@lift
def describe(title: str, notes: str, count: int) -> str:
    text = title or "(untitled)"
    if notes:
        text += f": {notes}"
    return f"{text} ({count} member{'s' if count != 1 else ''})"


@handler
def rename(event: Any, title: Cell[str], error: Cell[Any]) -> None:
    """``{"title": ...}``: rename the record (an empty title is refused)."""
    new = _clean_name({"name": (event or {}).get("title")} if isinstance(event, dict) else event)
    if new is None:
        error.set("A record needs a title.")
        return
    title.set(new)
    error.set(None)


@handler
def set_notes(event: Any, notes: Cell[str]) -> None:
    notes.set(str((event or {}).get("notes", "")) if isinstance(event, dict) else str(event))


@pattern
def Record(title: str = "", notes: str = ""):  # type: ignore[no-untyped-def]
    """A record with a title, notes and its own team of members (of records)."""
    error = Cell.of(None).for_("error")
    team = Members(factory=SELF.factory)  # Record uses Members, passing itself as a value
    return {
        "title": title,
        "notes": notes,
        "summary": describe(title, notes, team.count),
        "error": error,
        "rename": rename(title=title, error=error),
        "set_notes": set_notes(notes=notes),
        "members": team,
    }
