"""Cells: reactive handles on (space, entity id, path, schema).

A ``Cell`` never holds a value; it reads and writes through a transaction.
Reads inside a running action are tracked (path-precise) so the scheduler can
re-run the action when exactly those values change.  Links inside values are
followed on read; plain links are replaced on write and write redirects are
followed on write.  Capabilities (readonly, writeonly, opaque) are checked on
every operation and survive ``key()``.
"""

from __future__ import annotations

import functools
import itertools
import operator
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from cellkernel.data import schema as schemas
from cellkernel.data.identity import create_ref, short_id
from cellkernel.data.links import (
    MAX_HOPS,
    as_link,
    is_link,
    is_sigil,
    make_link,
    parse_link,
    stored_link,
)
from cellkernel.data.values import (
    MAX_DEPTH,
    MISSING,
    SCALAR_TYPES,
    Path,
    format_path,
    get_path,
    json_equal,
    to_json_value,
)
from cellkernel.errors import CapabilityError, CauseError, LinkCycleError
from cellkernel.reactive.resolution import resolve, resolve_read

if TYPE_CHECKING:
    from cellkernel.reactive.host import CellHost
    from cellkernel.store.documents import Document
    from cellkernel.store.transactions import Address, Transaction

T = TypeVar("T")

_new_object = object.__new__

#: The transaction of the action currently running (reads through any cell are tracked in it).
current_tx: ContextVar[Transaction | None] = ContextVar("cellkernel_current_tx", default=None)

STREAM_MARKER = {"$stream": True}

_NO_IDENTITY = ("this cell has no identity yet: pass it to rt.run(), store it in another "
                "cell, or create it with rt.get_cell(cause)")

#: Hooks set by upper layers (builder, factories) without an upward import.
_hooks: dict[str, Callable[..., Any]] = {}


def set_hook(name: str, fn: Callable[..., Any]) -> None:
    _hooks[name] = fn


class _ForMethod:
    """``cell.for_(cause)`` names a cell; ``Cell.for_(cause)`` makes a named one (SPEC §3)."""

    def __init__(self, method: Callable[..., Any]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return owner.for_cause
        return self._method.__get__(obj, owner)


def is_stream_value(value: Any) -> bool:
    return type(value) is dict and value.get("$stream") is True and len(value) == 1


class DocDict(dict[str, Any]):
    """A dict read through a link: remembers the cell it came from.

    Lets ``remove(item)`` match documents by identity and lets
    ``cell.set(cell.get())`` keep links instead of copying documents.
    """

    __slots__ = ("cell",)

    def __init__(self, data: Mapping[str, Any], cell: Cell[Any]) -> None:
        super().__init__(data)
        self.cell = cell


class Cell(Generic[T]):
    """A reactive handle on a JSON location.  See SPEC §3."""

    __slots__ = (
        "_cap", "_cause", "_id", "_initial", "_origin", "_path", "_rt", "_schema", "_space", "_tx",
    )

    _method_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        runtime: CellHost | None,
        space: str | None,
        entity_id: str | None,
        path: Path = (),
        schema: Any = None,
        tx: Transaction | None = None,
        capability: str = "cell",
    ) -> None:
        self._rt = runtime
        self._space = space
        self._id = entity_id
        self._path = path
        self._schema = schema
        self._tx = tx
        self._cap = capability
        self._cause: Any = None
        self._initial: Any = None
        #: for a handle derived (key, as_schema, ...) from a cell with no identity yet: that
        #: cell; the two share one cause and one document (SPEC §3, as labs' siblings do)
        self._origin: Cell[Any] | None = None

    # -- constructors --------------------------------------------------------

    @classmethod
    def of(cls, value: Any = None, schema: Any = None) -> Cell[Any]:
        """A cell with no identity yet whose schema default is ``value``.

        Inside a pattern body it becomes internal state; inside a handler a new
        document per event; elsewhere it is connected when first stored or run.
        """
        hook = _hooks.get("cell_of")
        if hook is not None:
            made = hook(value, schema)
            if made is not None:
                return made  # type: ignore[no-any-return]
        plain = to_json_value(value)
        if schema is None:
            schema = {}
        if plain is not None:
            schema = {**schema, "default": plain}
        cell: Cell[Any] = Cell(None, None, None, (), schema)
        cell._initial = plain
        return cell

    @classmethod
    def for_cause(cls, cause: Any) -> Cell[Any]:
        named: Cell[Any] = cls.of(None).for_(cause)
        return named

    # -- identity ------------------------------------------------------------

    @property
    def entity_id(self) -> str | None:
        return self._id

    @property
    def space(self) -> str | None:
        return self._space

    @property
    def path(self) -> tuple[str | int, ...]:
        return self._path

    @property
    def schema(self) -> Any:
        return self._schema

    @property
    def capability(self) -> str:
        return self._cap

    @property
    def is_connected(self) -> bool:
        return self._id is not None

    @_ForMethod
    def for_(self, cause: Any, flexible: bool = False) -> Cell[T]:
        """Name this cell explicitly before it is connected (SPEC §6)."""
        origin = self._origin
        if self._id is None and origin is not None:
            origin.for_(cause, flexible)  # one cause names every sibling
            self._cause = origin._cause
            self._identity()
            return self
        if self._id is not None:
            if flexible:
                return self
            raise CauseError(
                f"cell {self._id} is already connected; .for_({cause!r}) must come before "
                "the cell is stored, run or used as a node input"
            )
        if self._cause is not None:
            if flexible:
                self._cause = [self._cause, cause]
                return self
            raise CauseError(f"cell already has the cause {self._cause!r}")
        self._cause = cause
        return self

    def _identity(self) -> None:
        """Take the identity of the cell this handle was derived from, connecting it if it can.

        A cell made inside a lift or handler connects on first use; a sibling
        (``key()``, ``as_schema()``, ...) of it reaches the same document.
        """
        if self._id is not None:
            return
        origin = self._origin if self._origin is not None else self
        pending = type(origin)._check is not Cell._check  # connects on first use
        if origin._id is None and origin._cap != "opaque" and pending:
            origin._check("read")  # a cell that connects on first use does so now
        if origin is not self and origin._id is not None:
            self._rt, self._space, self._id = origin._rt, origin._space, origin._id
            self._cause = origin._cause

    def _connect(self, runtime: CellHost, space: str, cause: Any) -> None:
        """Give an unconnected cell its document (used when it is first stored)."""
        chosen = self._cause if self._cause is not None else cause
        self._rt = runtime
        self._space = space
        self._id = "of:" + str(create_ref({}, chosen))

    def __ck_ref_json__(self) -> Any:
        if self._id is None:
            return None
        return {"/": self._id[3:], "path": list(self._path)} if self._path else {"/": self._id[3:]}

    def __ck_to_json__(self) -> Any:
        return self.get_as_link()

    # -- derived handles -------------------------------------------------------

    def _derive(self, **changes: Any) -> Cell[Any]:
        cls = Stream if changes.get("capability", self._cap) == "stream" else Cell
        if cls is Stream and "capability" not in changes:
            cls = Cell
        cell: Cell[Any] = cls.__new__(cls)
        cell._rt = self._rt
        cell._space = self._space
        cell._id = self._id
        cell._path = changes.get("path", self._path)
        cell._schema = changes.get("schema", self._schema)
        cell._tx = changes.get("tx", self._tx)
        cap = changes.get("capability", self._cap)
        cell._cap = "cell" if cap == "stream" and cls is Cell else cap
        cell._cause = self._cause
        cell._initial = None
        cell._origin = None
        if self._id is None:
            cell._origin = self._origin if self._origin is not None else self
            if "path" in changes:
                cell._initial = get_path(self._initial, cell._path[len(self._path):])
                cell._initial = None if cell._initial is MISSING else cell._initial
            else:
                cell._initial = self._initial
        return cell

    def key(self, *path: str | int) -> Cell[Any]:
        """A child cell; keeps the capability and narrows the schema."""
        if not path:
            return self
        for p in path:
            if type(p) not in (str, int):
                raise TypeError(f"cell keys are str or int, got {type(p).__name__}")
        child_schema = schemas.at_path(self._schema, path) if self._schema else None
        cap = self._cap if self._cap != "stream" else "cell"
        return self._derive(path=self._path + tuple(path), schema=child_schema, capability=cap)

    def as_schema(self, schema: Any) -> Cell[Any]:
        return self._derive(schema=schema)

    def with_tx(self, tx: Transaction | None) -> Cell[T]:
        if self._id is None or type(self) is not Cell or self._cap == "stream":
            return self._derive(tx=tx)
        # ``_derive(tx=tx)`` for a connected plain cell, field by field (an action's run
        # binds each cell it touches: this is on every such run's path)
        cell: Cell[T] = _new_object(Cell)
        cell._rt = self._rt
        cell._space = self._space
        cell._id = self._id
        cell._path = self._path
        cell._schema = self._schema
        cell._tx = tx
        cell._cap = self._cap
        cell._cause = self._cause
        cell._initial = None
        cell._origin = None
        return cell

    def readonly(self) -> Cell[T]:
        return self._derive(capability="readonly")

    def writeonly(self) -> Cell[T]:
        return self._derive(capability="writeonly")

    def __getattr__(self, name: str) -> Cell[Any]:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.key(name)

    def __getitem__(self, key: str | int) -> Cell[Any]:
        return self.key(key)

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a Cell is not iterable; iterate over cell.get()")

    # -- capability checks ------------------------------------------------------

    def _check(self, operation: str) -> None:
        cap = self._cap
        if self._id is None and self._origin is not None:
            self._identity()
        if cap == "cell" or cap == "stream":
            if self._id is None and operation not in ("read",):
                raise CauseError(_NO_IDENTITY)
            return
        if cap == "opaque":
            raise CapabilityError(
                operation, "opaque", "a builder reference (read it inside a lift or handler)"
            )
        if cap == "readonly" and operation in ("write", "send"):
            raise CapabilityError(operation, "readonly", self._where())
        if cap == "writeonly" and operation == "read":
            raise CapabilityError(operation, "writeonly", self._where())

    def _host(self) -> CellHost:
        """The runtime this cell lives in (a cell not connected yet has none)."""
        rt = self._rt
        if rt is None:
            raise CauseError(_NO_IDENTITY)
        return rt

    def _where(self) -> str:
        return f"{self._id}{format_path(self._path)}" if self._id else "an unconnected cell"

    def _read_tx(self) -> tuple[Transaction, bool]:
        """The transaction to read in, and whether reads are tracked."""
        if self._tx is not None:
            return self._tx, True
        rt = self._rt
        if rt is None:  # (``_host``, inline: every read outside a run comes here)
            raise CauseError(_NO_IDENTITY)
        tx = current_tx.get()
        if tx is not None and tx.status == "open" and tx._store is rt.store:
            return tx, True
        return rt.read_tx(), False

    # -- reading ---------------------------------------------------------------

    def get(self) -> T:
        """The current value, links resolved, schema defaults applied."""
        if self._cap != "cell" or self._id is None:  # a connected cell passes every check
            self._check("read")
            if self._id is None:
                return self._initial  # type: ignore[no-any-return]
        tx = self._tx
        if tx is None:  # (bound to a transaction, the usual read in a run: read in it)
            rt, space = self._rt, self._space
            if (
                not self._path and self._schema is None
                and current_tx.get() is None and rt is not None and space is not None
            ):
                # outside any transaction, a document holding a scalar: its value, no
                # transaction
                value = rt.peek(space, self._id)
                if type(value) in SCALAR_TYPES:
                    return value  # type: ignore[no-any-return]
            tx, _ = self._read_tx()
        return self._read(tx, track=True)  # type: ignore[no-any-return]

    def sample(self) -> T:
        """Read without creating a dependency."""
        self._check("read")
        if self._id is None:
            return self._initial  # type: ignore[no-any-return]
        tx, _ = self._read_tx()
        return self._read(tx, track=False)  # type: ignore[no-any-return]

    def _read(self, tx: Transaction, track: bool) -> Any:
        space, entity_id, path, link_schema, raw = resolve_read(
            tx, self._space, self._id, self._path, track=track  # type: ignore[arg-type]
        )
        schema = self._schema if self._schema is not None else link_schema
        if schema is None and type(raw) in SCALAR_TYPES:
            return raw  # what materialize makes of a scalar without a schema
        if schemas.marker(schema) == "cell":
            # asCell applies to fields inside a value; a cell's own get() is its value
            schema = {k: v for k, v in schema.items() if k != "asCell"}
        via_link = (entity_id, path) != (self._id, self._path)
        return materialize(self._host(), tx, raw, space, entity_id, path, schema, track, via_link)

    def get_raw(self) -> Any:
        """The stored JSON at this cell's own location, links not followed."""
        self._check("read")
        tx, track = self._read_tx()
        value = tx.read(self._space, self._id, self._path, track=track)  # type: ignore[arg-type]
        return None if value is MISSING else value

    def resolve_as_cell(self) -> Cell[T]:
        """A cell on the final document and path after following every link."""
        self._check("read") if self._cap != "writeonly" else None
        tx, _ = self._read_tx()
        space, entity_id, path, _s = resolve(
            tx, self._space, self._id, self._path, track=False  # type: ignore[arg-type]
        )
        cell = self._derive(path=path)
        cell._space = space
        cell._id = entity_id
        return cell

    def _address(self) -> tuple[str, str, Path]:
        tx = self._host().read_tx()
        space, entity_id, path, _s = resolve(
            tx, self._space, self._id, self._path, track=False  # type: ignore[arg-type]
        )
        return space, entity_id, path

    def equals(self, other: Any) -> bool:
        """Same location after resolving links (identity, never content)."""
        if isinstance(other, DocDict):
            other = other.cell
        if not isinstance(other, Cell):
            return False
        self._identity()
        other._identity()
        if other._id is None or self._id is None:
            # no identity yet: the same cell, or siblings of one cell at one path
            same = (self._origin or self) is (other._origin or other)
            return same and self._path == other._path and self._id is other._id
        return self._address() == other._address()

    def get_as_link(
        self, base_space: str | None = None, include_schema: bool = False
    ) -> dict[str, Any]:
        if self._id is None:
            raise CauseError("an unconnected cell has no link yet")
        schema = self._schema if include_schema else None
        return make_link(self._space, self._id, self._path, schema, base_space=base_space)  # type: ignore[arg-type]

    def get_as_write_redirect_link(self, base_space: str | None = None) -> dict[str, Any]:
        if self._id is None:
            raise CauseError("an unconnected cell has no link yet")
        return make_link(self._space, self._id, self._path, None, True, base_space=base_space)  # type: ignore[arg-type]

    # -- writing ---------------------------------------------------------------

    def _in_write_tx(self, operation: str, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(tx, *args)`` in this store's running transaction, else in a write of its own."""
        if self._cap != "cell" or self._id is None:  # a connected cell passes every check
            self._check("send" if operation == "send" else "write")
        tx = self._tx
        rt = self._host()
        if tx is None:
            running = current_tx.get()
            if running is not None and running.status == "open" and running._store is rt.store:
                tx = running
        if tx is not None:
            return fn(tx, *args)
        return rt._write(fn, *args)

    def set(self, value: Any) -> Cell[T]:
        """Write ``value``; cells inside become links; on a stream this sends."""
        tx = self._tx
        if tx is not None:
            if self._cap == "cell" and self._id is not None:
                self._set_in(tx, value)  # ``_in_write_tx`` for a bound, connected cell
            else:
                self._in_write_tx("write", self._set_in, value)
            return self
        t = type(value)
        rt, space, entity_id = self._rt, self._space, self._id
        if (
            (t is int or t is str or t is bool or value is None)
            and self._cap == "cell" and entity_id is not None and current_tx.get() is None
            and rt is not None and space is not None
        ):
            if not self._path and self._schema is None:
                if rt.set_scalar(space, entity_id, value):
                    return self  # a scalar over a scalar, outside any transaction: landed
            elif rt.set_scalar_at(space, entity_id, self._path, value, self._schema,
                                  self._where):
                return self  # a scalar at a path (a record's field): landed likewise
        self._in_write_tx("write", self._set_in, value)
        return self

    def _set_in(self, tx: Transaction, value: Any) -> None:
        space, entity_id, path, _s, current = resolve_read(
            tx, self._space, self._id, self._path, for_write=True, track=False  # type: ignore[arg-type]
        )
        t = type(value)
        if (t is int or t is str or t is bool or value is None) and type(current) is not dict:
            # a scalar over a scalar, list or nothing: no stream, links or documents involved
            if self._schema is not None:  # schema=False refuses every write
                schemas.validate(self._schema, value, self._where())
            landing = landing_schema_at(self._rt, space, entity_id, path)  # validate_landing
            if landing is not None:
                schemas.validate(landing, value, f"{entity_id}{format_path(path)}")
            if type(current) is not t or current != value:  # json_equal, for a scalar
                tx.write(space, entity_id, path, value)
            return
        if is_stream_value(current):
            to_json_value(value, hook=_event_hook)  # reject what could not be stored
            if not _queue_with(tx, self._host(), (space, entity_id, path), value):
                self._host().scheduler.queue_event((space, entity_id, path), value)
            return
        if (
            isinstance(value, Cell)
            and value._id is not None
            and (
                value._address() == (space, entity_id, path)
                or (value._space, value._id, value._path) == (self._space, self._id, self._path)
            )
        ):
            return
        stored = to_storable(self._host(), tx, value, (space, entity_id, path))
        if type(stored) in (dict, list):
            stored = _keep_equal_links(tx, current, stored, space)
        landing = landing_schema_at(self._rt, space, entity_id, path)
        if self._schema is not None or landing is not None:
            plain = self._plain_for_validation(tx, stored)
            if self._schema is not None:
                schemas.validate(self._schema, plain, self._where())
            if landing is not None:
                schemas.validate(landing, plain, f"{entity_id}{format_path(path)}")
        if current is not MISSING and json_equal(current, stored):
            return
        tx.write(space, entity_id, path, stored)

    def _plain_for_validation(self, tx: Transaction, stored: Any) -> Any:
        if not _contains_link(stored):
            return stored
        return materialize(
            self._host(), tx, stored, self._space, self._id, self._path,  # type: ignore[arg-type]
            None, False, False, plain=True,
        )

    def send(self, event: Any = None) -> None:
        """Queue an event for the handlers of this stream (FIFO, one per pass)."""
        self._check("send")
        to_json_value(event, hook=_event_hook)  # reject what could not be stored
        rt = self._host()
        tx = self._tx or current_tx.get()
        if tx is None or tx.status != "open":
            tx = rt.read_tx()
        space, entity_id, path, _s = resolve(
            tx, self._space, self._id, self._path, track=False  # type: ignore[arg-type]
        )
        current = tx.read(space, entity_id, path, track=False)
        if not is_stream_value(current) and not (current is MISSING and isinstance(self, Stream)):
            self.set(event)  # on a cell that is not a stream, send is set (SPEC §3, as in labs)
            return
        if _queue_with(tx, rt, (space, entity_id, path), event):
            return
        rt.scheduler.queue_event((space, entity_id, path), event)
        rt._settle_after_send()

    def update(self, values: Mapping[str, Any]) -> Cell[T]:
        """Set keys one by one, keeping the others (``{}`` is created from None)."""
        if not isinstance(values, Mapping):
            raise TypeError(f"update() takes a mapping, got {type(values).__name__}")

        def run(tx: Transaction) -> None:
            current = self._read(tx, track=False)
            if current is None:
                self.with_tx(tx)._set_in(tx, {})
            elif not isinstance(current, dict):
                raise TypeError(
                    f"update() needs an object at {self._where()}, "
                    f"found {type(current).__name__}"
                )
            for k, v in values.items():
                self.key(k).with_tx(tx)._set_in(tx, v)

        self._in_write_tx("write", run)
        return self

    def push(self, *items: Any) -> Cell[T]:
        """Append items (creating ``[]`` or the schema default from None)."""

        def run(tx: Transaction) -> None:
            space, entity_id, path, _s = resolve(
                tx, self._space, self._id, self._path,  # type: ignore[arg-type]
                for_write=True, track=False,
            )
            raw = tx.read(space, entity_id, path, track=False)
            if raw is MISSING or raw is None:
                default = schemas.default_of(self._schema) if self._schema else None
                raw = to_json_value(default) if default is not None else []
            if is_link(raw):
                target = self.resolve_as_cell().with_tx(tx)
                target.push(*items)
                return
            if type(raw) is not list:
                raise TypeError(
                    f"push() needs a list at {self._where()}, found {type(raw).__name__}"
                )
            base = len(raw)
            new = to_storable(self._host(), tx, list(items), (space, entity_id, path),
                              offset=base)
            landing = landing_schema_at(self._rt, space, entity_id, path)
            if self._schema is not None or landing is not None:  # (schema=False refuses all)
                plain = self._plain_for_validation(tx, [*raw, *new])
                if self._schema is not None:
                    schemas.validate(self._schema, plain, self._where())
                if landing is not None:
                    schemas.validate(landing, plain, f"{entity_id}{format_path(path)}")
            if tx.read(space, entity_id, path, track=False) is raw and len(new) <= 8:
                # element by element: the written paths say which indices are new, so a
                # map over the list re-keys those only (``Transaction.paths``)
                for offset, element in enumerate(new):
                    tx.write(space, entity_id, (*path, base + offset), element)
            else:
                tx.write(space, entity_id, path, [*raw, *new])

        self._in_write_tx("write", run)
        return self

    def remove(self, item: Any) -> Cell[T]:
        """Remove the first match (documents by identity, plain values by equality)."""
        return self._remove(item, first_only=True)

    def remove_all(self, item: Any) -> Cell[T]:
        return self._remove(item, first_only=False)

    def _remove(self, item: Any, first_only: bool) -> Cell[T]:
        def run(tx: Transaction) -> None:
            space, entity_id, path, _s = resolve(
                tx, self._space, self._id, self._path,  # type: ignore[arg-type]
                for_write=True, track=False,
            )
            raw = tx.read(space, entity_id, path, track=False)
            if is_link(raw):  # a plain link here: remove from the list it shows (as push adds)
                space, entity_id, path, _s = resolve(tx, space, entity_id, path, track=False)
                raw = tx.read(space, entity_id, path, track=False)
            if raw is MISSING or raw is None:
                return
            if type(raw) is not list:
                raise TypeError(
                    f"remove() needs a list at {self._where()}, found {type(raw).__name__}"
                )
            target = _identity_of(item, tx)
            plain = None if target is not None else to_json_value(item, hook=_plain_hook)
            if first_only and target is None and type(plain) in SCALAR_TYPES:
                at = _index_of_scalar(raw, plain)  # the search in C, not an element loop
                if at >= 0 and at == len(raw) - 1:
                    # the last one: the list cut short, and only that index changed (a map
                    # re-keys it alone, as it does for a push); the spine is handed over
                    tx.write(space, entity_id, path, tx.hand_over(raw[:at]),
                             changed=[(*path, at)])
                elif at >= 0:
                    # a fresh spine of stored elements: handed over, not copied again
                    tx.write(space, entity_id, path, tx.hand_over(raw[:at] + raw[at + 1:]))
                return
            kept: list[Any] = []
            removed = False
            for element in raw:
                if not (removed and first_only):
                    if target is not None and is_link(element):
                        if _link_address(tx, element, space) == target:
                            removed = True
                            continue
                    elif target is None and not is_link(element) and json_equal(element, plain):
                        removed = True
                        continue
                kept.append(element)
            if removed:
                tx.write(space, entity_id, path, kept)

        self._in_write_tx("write", run)
        return self

    # -- reactivity --------------------------------------------------------------

    def sink(self, callback: Callable[[Any], Any]) -> Callable[[], None]:
        """Call ``callback(value)`` now and after every change of what it read."""
        self._check("read")
        return self._host().scheduler.sink(self, callback)

    def map(self, fn: Callable[..., Any]) -> Any:
        hook = _hooks.get("map")
        if hook is None:
            raise RuntimeError("map() needs the builder; import cellkernel")
        return hook(self, fn)

    def filter(self, fn: Callable[..., Any]) -> Any:
        hook = _hooks.get("filter")
        if hook is None:
            raise RuntimeError("filter() needs the builder; import cellkernel")
        return hook(self, fn)

    # -- display -----------------------------------------------------------------

    def __repr__(self) -> str:
        if self._id is None:
            return f"Cell.of({self._initial!r})"
        name = type(self).__name__
        return f"<{name} {short_id(self._id)}{format_path(self._path)}>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None,
                          **_: Any) -> dict[str, str]:
        """Jupyter display: the value as deterministic ``text/plain`` and as an HTML table.

        (In a kernel with ``%load_ext cellkernel`` the notebook layer adds the live view.)
        """
        import html  # display only

        def plain(v: Any) -> str:
            if isinstance(v, Stream):
                return "<stream>"
            if isinstance(v, Cell):
                return repr(v)
            if isinstance(v, dict):
                return "{" + ", ".join(f"{k!r}: {plain(x)}" for k, x in v.items()) + "}"
            if isinstance(v, list | tuple):
                return "[" + ", ".join(plain(x) for x in v) + "]"
            return repr(v)

        try:
            value = self.sample()
        except Exception as exc:  # an opaque builder ref, a dead store: say so, do not fail
            text = f"{self!r} ({type(exc).__name__}: {exc})"
            return {"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"}
        if isinstance(value, dict) and not isinstance(value, Cell):
            rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td><code>"
                           f"{html.escape(plain(v))}</code></td></tr>" for k, v in value.items())
            markup = f'<table class="cellkernel-cell">{rows}</table>'
        else:
            markup = f"<pre>{html.escape(plain(value))}</pre>"
        return {"text/plain": plain(value), "text/html": markup}

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Cell):
            return NotImplemented
        return (self._space, self._id, self._path) == (other._space, other._id, other._path) and (
            self._id is not None or self is other
        )

    def __hash__(self) -> int:
        return hash((self._space, self._id, self._path)) if self._id else id(self)


class Stream(Cell[T]):
    """A cell that carries events to handlers; events are not stored."""

    __slots__ = ()

    def get(self) -> Any:
        return self

    def __call__(self, event: Any = None) -> None:
        self.send(event)


def _queue_with(tx: Transaction, runtime: CellHost, stream: tuple[str, str, Path],
                event: Any) -> bool:
    """Inside a live transaction an event is part of it: queued only if it commits.

    A handler that fails after sending, or an aborted ``rt.edit()``, sends nothing.
    Returns False for a throwaway read transaction (queue the event now).
    """
    if tx.status != "open" or not tx.track:
        return False
    scheduler = runtime.scheduler

    def queue(_tx: Transaction) -> None:
        scheduler.queue_event(stream, event)

    tx.on_commit.append(queue)
    return True


def validate_landing(runtime: CellHost | None, space: str, entity_id: str, path: Path,
                     value: Any) -> None:
    """Check a write against the schema of the document it lands in (SPEC §3).

    The pattern layer names that schema (an instance's argument or state
    document) through the ``landing_schema`` hook; a document it does not know
    has none.  Raises ``ValueError`` naming the path and the schema.
    """
    schema = landing_schema_at(runtime, space, entity_id, path)
    if schema is not None:
        schemas.validate(schema, value, f"{entity_id}{format_path(path)}")


def landing_schema_at(runtime: CellHost | None, space: str, entity_id: str, path: Path) -> Any:
    """The schema a write at ``path`` of that document is checked against, or None.

    Asked first, so a write nothing checks builds no plain copy of its value (a
    push onto a list of 10 000 walked the whole list for a check that was not there).
    """
    hook = _hooks.get("landing_schema")
    if hook is None or runtime is None:
        return None
    doc_schema = hook(runtime, space, entity_id)
    if doc_schema is None:
        return None
    schema = schemas.at_path(doc_schema, path) if path else doc_schema
    if schema is None or schema is True or schema == {}:
        return None
    if isinstance(schema, dict) and (schema.get("asCell") or schema.get("asStream")):
        return None  # a Cell or stream field holds a link or a stream marker, not the value
    return schema


def _event_hook(value: Any) -> Any:
    if isinstance(value, Cell):
        return None
    return NotImplemented


def _index_of_scalar(values: list[Any], scalar: Any) -> int:
    """The first index holding ``scalar`` as ``json_equal`` sees it, or -1.

    ``list.index`` searches in C by ``==``; a match of another type (``True == 1``,
    ``1 == 1.0``) is not one to ``json_equal``, so the search goes on past it.
    """
    start = 0
    t = type(scalar)
    while True:
        try:
            at = values.index(scalar, start)
        except ValueError:
            return -1
        if type(values[at]) is t and json_equal(values[at], scalar):
            return at
        start = at + 1


def _plain_hook(value: Any) -> Any:
    if isinstance(value, DocDict):
        return dict(value)
    return NotImplemented


def _contains_link(value: Any) -> bool:
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is dict:
            if is_link(v):
                return True
            stack.extend(v.values())
        elif type(v) is list:
            stack.extend(v)
    return False


def _keep_equal_links(tx: Transaction, current: Any, stored: Any, space: str) -> Any:
    """Below the written location, keep every link whose target already holds the new value.

    ``c.set(c.get())`` hands back plain values where ``c`` held links to other
    cells; writing them as copies would cut those links (SPEC §3: it changes
    nothing).  ``stored`` is freshly built, so it is patched in place.
    """
    if not _contains_link(current):
        return stored
    work: list[tuple[Any, Any, Any]] = []  # (container in stored, key, current value there)
    if type(current) is dict and type(stored) is dict:
        work.extend((stored, k, v) for k, v in current.items() if k in stored)
    elif type(current) is list and type(stored) is list:
        work.extend((stored, i, v) for i, v in enumerate(current[: len(stored)]))
    while work:
        holder, key, cur = work.pop()
        new = holder[key]
        if is_link(cur):
            if is_link(new):
                continue
            try:
                link = parse_link(cur, space)
                s, e, p, _schema = resolve(tx, link.space, link.id, link.path, track=False)
            except (ValueError, LinkCycleError):
                continue
            target = tx.read(s, e, p, track=False)
            if target is not MISSING and json_equal(target, new):
                holder[key] = cur
        elif type(cur) is dict and type(new) is dict:
            work.extend((new, k, v) for k, v in cur.items() if k in new)
        elif type(cur) is list and type(new) is list:
            work.extend((new, i, v) for i, v in enumerate(cur[: len(new)]))
    return stored


def _identity_of(item: Any, tx: Transaction) -> tuple[str, str, Path] | None:
    cell = item.cell if isinstance(item, DocDict) else item if isinstance(item, Cell) else None
    if cell is None or cell._id is None:
        return None
    space, entity_id, path, _s = resolve(tx, cell._space, cell._id, cell._path, track=False)  # type: ignore[arg-type]
    return space, entity_id, path


def _link_address(tx: Transaction, link_value: Any, base_space: str) -> tuple[str, str, Path]:
    link = parse_link(link_value, base_space)
    space, entity_id, path, _s = resolve(tx, link.space, link.id, link.path, track=False)
    return space, entity_id, path


# ---------------------------------------------------------------------------
# materialising reads


def _matches_any(schema: dict[str, Any], value: Any, root: Any) -> bool:
    """Whether ``value`` (plain JSON) matches one branch of ``schema["anyOf"]``."""
    branches = schema.get("anyOf")
    if not isinstance(branches, list):
        return True
    for branch in branches:
        if branch is True or branch == {}:
            return True
        if isinstance(branch, dict) and isinstance(root, dict) and "$defs" in root:
            branch = {**branch, "$defs": root["$defs"]}
        if schemas.is_valid(branch, value):
            return True
    return False


def _declared_only(value: dict[str, Any], schema: Any, root: Any) -> dict[str, Any]:
    """Under ``additionalProperties: false`` a read drops undeclared keys (as labs does)."""
    shaped = schemas.resolve_ref(schema, root)
    if type(shaped) is not dict or shaped.get("additionalProperties") is not False:
        return value
    declared = shaped.get("properties") or {}
    patterns = shaped.get("patternProperties")
    if patterns or not any(k not in declared for k in value):
        return value
    return {k: v for k, v in value.items() if k in declared}


#: where a stored list was read (space, id, path) -> that list, the (space, id) each of
#: its elements links to whole, and whether every element does, for the last few lists
#: read.  Stored values are never changed in place and the list is held, so the same
#: list is the same answer, and an element that is the object it was in the list read
#: there before (a copy-on-write spine shares every element it did not replace) links
#: where it did: a list of N links with one replaced parses one
_list_targets: OrderedDict[
    tuple[str, str, Path], tuple[list[Any], list[tuple[str, str] | None], bool]
] = OrderedDict()
_LIST_TARGETS_MAX = 64
#: the types of the values ``materialize`` keeps as they are (a set, for one C-level test)
_SCALARS = frozenset(SCALAR_TYPES)
#: the types of a record's fields ``materialize`` keeps as they are
_FIELD_TYPES = frozenset((*SCALAR_TYPES, type(None)))


def _whole_document_links(
    value: list[Any], space: str, where: tuple[str, str, Path],
) -> tuple[list[tuple[str, str] | None], bool] | None:
    """Per element of a stored list: where it links to a whole document (no path, no schema),
    and whether every element is such a link; None when none is."""
    known = _list_targets.get(where)
    if known is not None:
        _list_targets.move_to_end(where)
        if known[0] is value:
            return known[1], known[2]
        old, old_targets = known[0], known[1]
        # only the elements that are not the objects they were (C-level) are parsed again
        indices: Iterable[int] = itertools.chain(
            itertools.compress(itertools.count(), map(operator.is_not, value, old)),
            range(len(old), len(value)))
        targets = old_targets[:len(value)]
        targets.extend([None] * (len(value) - len(targets)))
    else:
        indices = range(len(value))
        targets = [None] * len(value)
    for i in indices:
        v = value[i]
        target = None
        if type(v) is dict and is_link(v):
            link = parse_link(v, space)
            if not link.path and link.schema is None:
                target = (link.space, link.id)
        targets[i] = target
    if not value or targets.count(None) == len(targets):
        _list_targets.pop(where, None)
        return None
    every = None not in targets
    _list_targets[where] = (value, targets, every)
    if len(_list_targets) > _LIST_TARGETS_MAX:
        _list_targets.popitem(last=False)
    return targets, every


class _LinkedRead:
    """What the last tracked read of one stored list of whole-document links met
    (``_linked_values``), per element: its document, the document its value links on
    to (or None) and that one, the value read (a scalar, or for a record the ``Cell``
    its ``DocDict`` is made with), and the journal all of them made."""

    __slots__ = ("first", "hop_keys", "hops", "journal", "records", "stride", "values")

    def __init__(self, first: list[Document], hop_keys: list[tuple[str, str] | None],
                 hops: list[Document | None], values: list[Any], records: list[int],
                 journal: list[Address], stride: int) -> None:
        self.first = first
        self.hop_keys = hop_keys
        self.hops = hops
        self.values = values
        #: the elements that read as records (``values`` holds their cells)
        self.records = records
        self.journal = journal
        #: journal entries per element when every element made as many (else 0)
        self.stride = stride


#: per stored list (by place): its last tracked read (bounded, as ``_list_targets``)
_linked_reads: OrderedDict[tuple[str, str, Path], _LinkedRead] = OrderedDict()


def is_scalar_record(value: Any) -> bool:
    """A stored dict of scalars (no link, no stream, nothing nested): what ``materialize``
    reads through a link as a ``DocDict`` with its fields as they are."""
    if type(value) is not dict or "/" in value or "$stream" in value:
        return False
    for field in value.values():  # noqa: SIM110 (a loop: records have a few fields, and
        if type(field) not in _FIELD_TYPES:  # ``all`` over a generator costs more)
            return False
    return True


def _linked_values(runtime: CellHost, tx: Transaction, targets: list[tuple[str, str]],
                   where: tuple[str, str, Path], track: bool) -> list[Any] | None:
    """What a list of whole-document links leads to: each element's scalar or record of
    scalars, directly or through one more whole-document link (a map's outputs: a
    child's result, then its lift's output), or None: the element loop of
    ``materialize`` reads the list instead.

    The same values that loop makes (a record a ``DocDict`` made anew every run: the
    function may change it) and the same journal, in the same order.  The documents
    are loaded in one pass (``Transaction.stored_documents``) and compared by identity
    with the last read of this list: a store replaces a document on every commit, so
    only the elements whose documents changed are read again (a lift over a map's N
    outputs after one child was replaced follows one element, not N).
    """
    first = tx.stored_documents(targets)
    if first is None:
        return None
    n = len(first)
    last = _linked_reads.get(where)
    if last is not None and len(last.first) != n:
        last = None
    redo: Iterable[int]
    if last is not None:
        _linked_reads.move_to_end(where)
        redo = list(itertools.compress(itertools.count(), map(operator.is_not, first, last.first)))
        hop_keys = last.hop_keys.copy() if redo else last.hop_keys
        values = last.values.copy()
    else:
        redo = range(n)
        hop_keys = [None] * n
        values = [None] * n
    for i in redo:
        value = first[i].value
        if type(value) in _SCALARS:
            hop_keys[i] = None
            values[i] = value
        elif type(value) is dict and "/" in value:
            hop = stored_link(value, (*targets[i], ()))
            if hop is None or hop.path or hop.schema is not None:
                return None
            hop_keys[i] = (hop.space, hop.id)
        elif is_scalar_record(value):
            hop_keys[i] = None
            values[i] = Cell(runtime, targets[i][0], targets[i][1], (), None)
        else:
            return None
    onward = [(i, key) for i, key in enumerate(hop_keys) if key is not None]
    hop_docs = tx.stored_documents([key for _i, key in onward]) if onward else []
    if hop_docs is None:
        return None
    hops: list[Document | None] = [None] * n
    old_hops = last.hops if last is not None else None
    changed = bool(redo)
    for (i, key), doc in zip(onward, hop_docs, strict=True):
        hops[i] = doc
        if old_hops is None or doc is not old_hops[i]:
            value = doc.value
            if type(value) in _SCALARS:
                values[i] = value
            elif is_scalar_record(value):
                values[i] = Cell(runtime, key[0], key[1], (), None)
            else:
                return None
            changed = True
    records = [i for i, v in enumerate(values) if type(v) is Cell] if changed or last is None \
        else last.records
    if last is not None and not changed:
        journal, stride = last.journal, last.stride
    else:
        journal, stride = _linked_journal(targets, hop_keys, records, last, redo)
    _linked_reads[where] = _LinkedRead(first, hop_keys, hops, values, records, journal, stride)
    if len(_linked_reads) > _LIST_TARGETS_MAX:
        _linked_reads.popitem(last=False)
    if track:
        tx.reads.extend(journal)
    if not records:
        return values
    out = values.copy()
    for i in records:
        held = hops[i]
        record = (held if held is not None else first[i]).value
        out[i] = DocDict(cast("dict[str, Any]", record), values[i])
    return out


def _element_reads(target: tuple[str, str], hop: tuple[str, str] | None) -> list[Address]:
    """The reads ``materialize``'s element loop makes for one element: its document and
    the one it links on to."""
    if hop is None:
        return [(target[0], target[1], ())]
    return [(target[0], target[1], ()), (hop[0], hop[1], ())]


def _linked_journal(targets: list[tuple[str, str]], hop_keys: list[tuple[str, str] | None],
                    records: list[int], last: _LinkedRead | None,
                    redo: Iterable[int]) -> tuple[list[Address], int]:
    """The reads of ``_linked_values``, as ``materialize`` makes them: each element's
    documents in order, then the walk ``resolve`` makes again to every record, last
    element first (they wait on its stack).  Without records, patched at the elements
    read again when every element makes as many reads as before; else built anew."""
    stride = 0
    if not records:
        without_hop = hop_keys.count(None)
        stride = 1 if without_hop == len(hop_keys) else 2 if without_hop == 0 else 0
    if last is not None and stride and last.stride == stride \
            and len(last.journal) == stride * len(targets):
        journal = last.journal.copy()
        for i in redo:
            journal[stride * i: stride * (i + 1)] = _element_reads(targets[i], hop_keys[i])
        return journal, stride
    journal = []
    for target, hop in zip(targets, hop_keys, strict=True):
        journal.extend(_element_reads(target, hop))
    for i in reversed(records):
        journal.extend(_element_reads(targets[i], hop_keys[i]))
    return journal, stride


def materialize(
    runtime: CellHost,
    tx: Transaction,
    raw: Any,
    space: str,
    entity_id: str,
    path: Path,
    schema: Any,
    track: bool,
    via_link: bool,
    *,
    plain: bool = False,
) -> Any:
    """Turn stored JSON into the Python value ``get()`` returns.

    Iterative: links are followed (each hop a tracked read of its target),
    schema defaults are filled in, stream markers become ``Stream`` objects,
    ``asCell`` fields become ``Cell`` objects and factory sigils become
    callables.  With ``plain`` the result is pure JSON (for validation).
    """
    root_schema = schema
    out: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, str, str, Path, Any, bool, int]] = [
        (out, 0, raw, space, entity_id, path, schema, via_link, 0)
    ]
    while stack:
        holder, key, value, sp, eid, p, sch, linked, hops = stack.pop()
        if sch is not None and not plain:
            mark = schemas.marker(sch)
            if mark is not None:
                cls = Stream if mark == "stream" else Cell
                # bind to a live transaction, never to a throwaway read (untracked) one,
                # or writes through the handed-out cell would silently go nowhere
                live = tx.status == "open" and tx.track
                if mark == "cell" and type(value) is dict and is_link(value):
                    # asCell over a link: a Cell on the linked document, not on this field,
                    # so writes land there and it stays there when the field is re-pointed
                    link = parse_link(value, sp)
                    sp, eid, p, _ls = resolve(tx, link.space, link.id, link.path, track=track)
                elif (
                    mark == "cell"
                    and value is not MISSING
                    and value is not None
                    and ((stored := tx.read(sp, eid, p, track=False)) is MISSING or stored is None)
                ):
                    # the value was supplied by an enclosing default: the Cell sees it too
                    # (a sibling "default" wins over a $ref target's, see schemas.resolve_ref)
                    sch = {**sch, "default": value}
                holder[key] = cls(runtime, sp, eid, p, sch, tx if live else None)
                continue
        if type(value) is dict and is_link(value):
            if hops >= MAX_HOPS:
                raise LinkCycleError(
                    f"link resolution exceeded {MAX_HOPS} hops at {eid}{format_path(p)}"
                )
            link = parse_link(value, sp)
            sp2, eid2, p2, link_schema = resolve(tx, link.space, link.id, link.path, track=track)
            value2 = tx.read(sp2, eid2, p2, track=False)
            sch2 = sch if sch is not None else (
                link.schema if link.schema is not None else link_schema
            )
            stack.append((holder, key, value2, sp2, eid2, p2, sch2, True, hops + 1))
            continue
        if value is MISSING or value is None:
            default = schemas.default_of(sch, root_schema) if sch is not None else None
            if type(default) in (dict, list):
                # fill the default's own nested defaults as for a stored value
                stack.append((holder, key, default, sp, eid, p, sch, linked, hops))
                continue
            holder[key] = default
            continue
        if type(sch) is dict and not plain and ("anyOf" in sch or "$ref" in sch):
            shaped = schemas.resolve_ref(sch, root_schema)
            if (
                type(shaped) is dict
                and "anyOf" in shaped
                and not _contains_link(value)
                and not _matches_any(shaped, value, root_schema)
            ):
                holder[key] = None  # no anyOf branch matches: read as missing (as labs does)
                continue
        t = type(value)
        if t is dict:
            if value.get("$stream") is True and len(value) == 1 and not plain:
                holder[key] = Stream(runtime, sp, eid, p, sch)
                continue
            if is_sigil(value) and not plain and "nodeFactory@1" in value["/"]:
                # a factory value: the runtime turns it into code under its trust rule
                holder[key] = runtime.read_factory(value)
                continue
            if sch is not None:
                value = schemas.fill_defaults(value, sch, root_schema)
                if not plain:
                    value = _declared_only(value, sch, root_schema)
            if linked and not plain:
                result: dict[str, Any] = DocDict({}, Cell(runtime, sp, eid, p, sch))
            else:
                result = {}
            holder[key] = result
            for k, v in value.items():
                if sch is None and (type(v) in SCALAR_TYPES or v is None):
                    result[k] = v  # what the loop below would make of it, without the trip
                    continue
                result[k] = None  # placeholder: keep the stored key order
                child_schema = schemas.at_path(sch, (k,)) if sch is not None else None
                stack.append((result, k, v, sp, eid, (*p, k), child_schema, False, hops))
            continue
        if t is list:
            if sch is None:
                links = _whole_document_links(value, sp, (sp, eid, p)) if hops < MAX_HOPS else None
                targets = None
                if links is not None:
                    targets, every = links
                    # every element a link (a list of node outputs), read in one call by a
                    # read-only transaction: if each holds a scalar, that is what the loop makes
                    found = tx.peek_all(cast("list[tuple[str, str]]", targets)) if every else None
                    if found is not None and set(map(type, found)) <= _SCALARS:
                        holder[key] = found
                        continue
                    if every and found is None:  # a run's tracked read: one pass too
                        found = _linked_values(runtime, tx, cast("list[tuple[str, str]]", targets),
                                               (sp, eid, p), track)
                        if found is not None:
                            holder[key] = found
                            continue
                lst: list[Any] = list(value)  # scalars stay; containers and links are replaced
                holder[key] = lst
                for i, v in enumerate(value):
                    if type(v) in SCALAR_TYPES or v is None:
                        continue
                    if targets is not None and (where := targets[i]) is not None:
                        # a link to a whole document holding a scalar (a list of node outputs):
                        # what the loop makes of it, without resolving or a trip through it
                        target = tx.read(where[0], where[1], (), track=track)
                        if type(target) in SCALAR_TYPES:
                            lst[i] = target
                            continue
                        if type(target) is dict and "/" in target:
                            # a document that is itself a whole-document link (a map child's
                            # result, to its lift's output): one more hop, read as ``resolve``
                            # reads it, then the scalar there
                            hop = (as_link(target, where[0]) if tx.wrote(*where)
                                   else stored_link(target, (*where, ())))
                            if hop is not None and not hop.path and hop.schema is None:
                                target = tx.read(hop.space, hop.id, (), track=track)
                                if type(target) in SCALAR_TYPES:
                                    lst[i] = target
                                    continue
                    stack.append((lst, i, v, sp, eid, (*p, i), None, False, hops))
                continue
            lst = [None] * len(value)
            holder[key] = lst
            for i, v in enumerate(value):
                child_schema = schemas.at_path(sch, (i,))
                stack.append((lst, i, v, sp, eid, (*p, i), child_schema, False, hops))
            continue
        holder[key] = value
    return out[0]


# ---------------------------------------------------------------------------
# preparing writes


def _unconnect(cell: Cell[Any], old: tuple[Any, Any, Any], _tx: Transaction) -> None:
    cell._rt, cell._space, cell._id = old


def to_storable(
    runtime: CellHost,
    tx: Transaction,
    value: Any,
    target: tuple[str, str, Path],
    *,
    offset: int = 0,
) -> Any:
    """Normalise ``value`` for storage at ``target``.

    Cells become links, DocDicts links to their documents, unconnected cells
    are connected, and every plain object directly inside a list becomes its
    own document (so lists can be keyed and edited by element identity).
    Documents created inside a running action get deterministic ids (from the
    action's frame), so re-runs update them in place.
    """
    t = type(value)
    if t is int or t is str or t is bool or value is None:
        return value  # nothing to normalise (floats still go through to_json_value)
    space, entity_id, path = target

    def hook(v: Any) -> Any:
        if isinstance(v, DocDict):
            cell = v.cell
            if (cell._space, cell._id, cell._path) == target:
                return dict(v)
            return make_link(cell._space, cell._id, cell._path, base_space=space)  # type: ignore[arg-type]
        if isinstance(v, Cell):
            if v._id is None and v._cap != "opaque":
                v._identity()
            if v._id is None:
                if v._cap == "opaque":
                    raise CapabilityError(
                        "store", "opaque", "a builder reference outside a pattern"
                    )
                first = v._origin if v._origin is not None else v  # siblings share one document
                before = (first._rt, first._space, first._id)
                nonce = uuid.uuid4().hex if tx.frame is None else str(tx.frame)
                first._connect(
                    runtime, space,
                    {"cell": first._initial, "in": entity_id, "path": list(path), "n": nonce},
                )
                tx.write(space, first._id, (), first._initial)  # type: ignore[arg-type]
                # if the write never lands, the cell must not keep an id nothing holds
                tx.on_abort.append(functools.partial(_unconnect, first, before))
                if first is not v:
                    v._identity()
                    tx.on_abort.append(functools.partial(_unconnect, v, (v._rt, None, None)))
            return make_link(v._space, v._id, v._path, base_space=space)  # type: ignore[arg-type]
        return NotImplemented

    # user data: errors name the path written, overdeep values refused; the stream
    # marker is refused below (not inside a factory sigil, whose graph may hold one)
    stored: Any
    if offset and type(value) is list:  # a push: each item named where it lands
        stored = [to_json_value(v, hook=hook, at=(*path, offset + i), max_depth=MAX_DEPTH)
                  for i, v in enumerate(value)]
    else:
        stored = to_json_value(value, hook=hook, at=path, max_depth=MAX_DEPTH)
    # split plain objects inside lists into their own documents
    work: list[tuple[Any, Path, Path]] = [(stored, path, path)]  # (node, path in doc, shown)
    root = stored
    frame = tx.frame
    while work:
        node, node_path, at = work.pop()
        if type(node) is list:
            occurrences: dict[str, int] = {}
            for i, element in enumerate(node):
                if type(element) is dict and not is_sigil(element):
                    cause: dict[str, Any] = {"parent": {"id": entity_id, "space": space}}
                    if frame is not None:
                        # written by a running node: by position in its frame, so each re-run
                        # updates the same documents in place
                        cause.update(path=[*node_path, i + offset if node is root else i],
                                     frame=frame)
                    else:
                        # a user's write: by content plus occurrence (SPEC §4), as plain values
                        # are, so a reorder of fresh, equal dicts reaches the same documents
                        content = str(create_ref({}, element))
                        n = occurrences.get(content, 0)
                        occurrences[content] = n + 1
                        cause.update(path=list(node_path), content=content, n=n)
                        if offset and node is root:  # a push: equal dicts there stay apart
                            cause["at"] = i + offset
                    doc_id = "of:" + str(create_ref({}, cause))
                    shown = i + offset if offset and node is root else i
                    work.append((element, (), (*at, shown)))
                    tx.write(space, doc_id, (), element)
                    node[i] = make_link(space, doc_id, (), base_space=space)
                elif type(element) is list or is_link(element):
                    work.append((element, (*node_path, i), (*at, i)))
        elif is_link(node):
            parse_link(node, space)  # a malformed link raises ValueError before anything lands
        elif type(node) is dict and not is_sigil(node):
            if is_stream_value(node):
                raise ValueError(
                    f"cannot store {{'$stream': True}} at {format_path(at)}: it is the stream "
                    "marker (a stream is made by a handler), and would read back as a Stream"
                )
            for k, v in node.items():
                if type(v) in (list, dict):
                    work.append((v, (*node_path, k), (*at, k)))
    return root
