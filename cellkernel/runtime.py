"""The Runtime: one store, one scheduler, the spaces they serve.

This is the object a notebook user holds.  It creates transactions, turns a
write outside any transaction into a commit plus a settle (so a derived value
read right after is fresh), and collects node errors where the user looks.
Pattern instances (run / resume / stop) are delegated to the runner, imported
on first use so that ``import cellkernel`` stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from cellkernel.data import schema as schemas
from cellkernel.data.identity import create_ref
from cellkernel.data.values import MISSING, Path, format_path, set_path
from cellkernel.errors import CellkernelError, ConflictError, NodeError, SnapshotError
from cellkernel.patterns.materialize import materialize
from cellkernel.patterns.registry import TrustPolicy
from cellkernel.patterns.runner import Runner
from cellkernel.patterns.snapshot import GraphSnapshot
from cellkernel.reactive.cells import Cell, current_tx, landing_schema_at
from cellkernel.reactive.resolution import resolve_read
from cellkernel.reactive.scheduler import Scheduler
from cellkernel.store.documents import INT_FLOOR, INT_LIMIT, Change, Store, landable
from cellkernel.store.transactions import Transaction, backoff_delay, write_lock
from cellkernel.store.urls import open_store
from cellkernel.store.writeback import WriteBack

DEFAULT_SPACE = "did:local:default"
#: how many recent ``NodeError``s ``rt.errors`` keeps (``Runtime(max_errors=...)``)
MAX_ERRORS = 1000
log = logging.getLogger("cellkernel.runtime")


class Runtime:
    """A reactive runtime over one store.  See SPEC §2."""

    def __init__(
        self,
        store: str | Store | None = None,
        *,
        space: str = DEFAULT_SPACE,
        debug: bool = False,
        trust_source: bool = False,
        trusted_modules: Iterable[str] | None = None,
        pause_gc: bool = True,
        max_errors: int = MAX_ERRORS,
    ) -> None:
        if type(max_errors) is not int or max_errors < 1:
            raise ValueError(f"max_errors must be an int >= 1, got {max_errors!r}")
        space = _check_space(space, "Runtime(space=...)")
        #: pause the cyclic collector while an instance starts (see ``patterns.gc_pause``)
        self.pause_gc = pause_gc
        #: which code stored refs may reach beyond this process's registry (SPEC §8)
        self.trust = TrustPolicy.of(trusted_modules, trust_source)
        if store is not None and not isinstance(store, str) and not isinstance(store, Store):
            raise ValueError(
                f"store must be a url (str) or a Store, got {type(store).__name__} {store!r}"
            )
        self.store: Store = open_store(store) if store is None or isinstance(store, str) else store
        self.space = space
        self.debug = debug
        #: group commit (``store/writeback.py``): on a store that asks for it, a settle's
        #: derived writes land here and reach the store in one commit at its end
        self.writeback: WriteBack | None = (
            WriteBack(self.store) if getattr(self.store, "group_commit", False) else None
        )
        self.scheduler = Scheduler(self)
        #: the most recent node errors, oldest first: at most ``max_errors`` are kept
        #: (each holds its traceback as text, no frame)
        self.errors: list[NodeError] = []
        self.max_errors = max_errors
        self._error_callbacks: list[Callable[[NodeError], Any]] = []
        self._batch_depth = 0
        self._runner: Runner | None = None
        self._lock = threading.RLock()
        self._closed = False
        #: whether another process may write the store (SQLite): then every write and
        #: ``idle`` polls it first; a MemoryStore (``external_writes = False``) never needs it
        self._polls = bool(getattr(self.store, "external_writes", True))
        #: the thread that may poll and settle on a read (widgets read from others)
        self._owner_thread = threading.get_ident()
        self._attach_live_changes()  # issue 22: other runtimes' commits, live

    @property
    def trust_source(self) -> bool:
        """Whether carried source may be compiled (after its hash is checked)."""
        return self.trust.trust_source

    # -- cells -------------------------------------------------------------------

    @staticmethod
    def of(cell: Cell[Any]) -> Runtime:
        """The runtime ``cell`` lives in (``TypeError`` for a cell not connected to one)."""
        rt = cell._rt
        if not isinstance(rt, Runtime):
            raise TypeError(f"{cell!r} is not connected to a runtime")
        return rt

    def get_cell(self, cause: Any, schema: Any = None, space: str | None = None) -> Cell[Any]:
        """The cell whose id is ``create_ref({}, cause)`` in ``space``."""
        schemas.check_schema(schema, f"get_cell({cause!r}) schema")
        where = _check_space(space, f"get_cell({cause!r}) space", self.space)
        entity_id = "of:" + str(create_ref({}, cause))
        return Cell(self, where, entity_id, (), schema)

    def cell_at(self, entity_id: str, path: tuple[str | int, ...] = (), space: str | None = None,
                schema: Any = None) -> Cell[Any]:
        """A cell on a known entity id (used by tools that read snapshots)."""
        if not isinstance(entity_id, str) or not entity_id:
            raise ValueError(f"cell_at: entity id must be a non-empty str, got {entity_id!r}")
        schemas.check_schema(schema, f"cell_at({entity_id!r}) schema")
        where = _check_space(space, f"cell_at({entity_id!r}) space", self.space)
        return Cell(self, where, entity_id, path, schema)

    # -- transactions --------------------------------------------------------------

    def _begin(self, *, frame: Any = None, track: bool = True) -> Transaction:
        return Transaction(self.store, track=track, frame=frame, view=self.writeback)

    def read_tx(self) -> Transaction:
        """A throwaway, untracked transaction for reads outside any action.

        When another process may write the store, every commit that landed
        before this read is applied first (SPEC §2): the store's feed is polled
        (SQLite: one ``PRAGMA data_version`` when nothing changed) and, outside
        a settle, batch or transaction, the scheduler settles on what came in.
        """
        self._catch_up()
        return Transaction(self.store, track=False, view=self.writeback)

    def _catch_up(self) -> None:
        """Apply what other processes committed, before a read outside any action (SPEC §2)."""
        if self._polls and threading.get_ident() == self._owner_thread and self._live_free():
            changes = self.store.poll()
            if changes:
                self.scheduler.notify(changes, None)
                self.scheduler.settle()

    def peek(self, space: str, entity_id: str) -> Any:
        """The stored value of a whole document (``MISSING`` if absent), as ``read_tx`` sees it.

        ``Cell.get`` takes it for a document holding a scalar: no transaction.
        """
        self._catch_up()
        doc = (self.writeback or self.store).load(space, entity_id)
        return doc.value if doc is not None else MISSING

    def set_scalar(self, space: str, entity_id: str, value: Any) -> bool:
        """``Cell.set`` of a scalar over a document holding a scalar (or nothing), landed directly.

        One compare-and-swap on the store (``land_value``), the write checked
        against its document's schema, then notify and settle as a commit does.
        Returns False, having done nothing, when the general write must do it:
        a store without ``land_value``, a link, stream or container stored
        there, or a conflict (which the general write retries).
        """
        land = self._direct_landing(value)
        if land is None:
            return False
        t = type(value)
        doc = self.store.load(space, entity_id)
        current = doc.value if doc is not None else MISSING
        if type(current) is dict or type(current) is list:
            return False
        schema = landing_schema_at(self, space, entity_id, ())  # ``validate_landing``, inline
        if schema is not None:
            schemas.validate(schema, value, f"{entity_id}{format_path(())}")
        scheduler = self.scheduler
        if type(current) is not t or current != value:
            try:
                changes = land(space, entity_id, doc, value, [])
            except ConflictError:
                return False
            scheduler.notify(changes, None)
        if self._batch_depth == 0 and not scheduler._settling and current_tx.get() is None:
            scheduler.settle()  # ``_settle_if_free``, inline
        return True

    def set_scalar_at(self, space: str, entity_id: str, path: Path, value: Any,
                      schema: Any, where: Callable[[], str]) -> bool:
        """``Cell.set`` of a scalar at a path (a record's field, through links), landed directly.

        What the general write does for a scalar over anything but an object
        (``Cell._set_in``): the path resolved for a write, the cell's schema
        (``where`` names the cell in its error) and the landing document's
        checked, then, if the value differs, the document with that one path
        replaced lands with the store's ``land_value``, checked against every
        document the resolution read; the scheduler is told the written path.
        Returns False, having changed nothing, when the general write must do
        it (as ``set_scalar``: also for an object, a link or a stream there).
        """
        land = self._direct_landing(value)
        if land is None:
            return False
        t = type(value)
        tx = Transaction(self.store, track=False)
        target_space, target_id, target_path, _s, current = resolve_read(
            tx, space, entity_id, path, for_write=True, track=False)
        if type(current) is dict:
            return False
        if schema is not None:  # schema=False refuses every write
            schemas.validate(schema, value, where())
        landing = landing_schema_at(self, target_space, target_id, target_path)
        if landing is not None:
            schemas.validate(landing, value, f"{target_id}{format_path(target_path)}")
        scheduler = self.scheduler
        if type(current) is not t or current != value:
            key = (target_space, target_id)
            read = tx.basis()
            before = next(doc for k, doc in read if k == key)
            read = [(k, doc) for k, doc in read if k != key]
            try:
                changes = land(target_space, target_id, before,
                               set_path(before.value if before is not None else None,
                                        target_path, value), read)
            except ConflictError:
                return False
            # (a whole document replaced: no paths, as the general write's journal says)
            scheduler.note_paths(key, changes[0], [target_path] if target_path else None)
            scheduler.notify(changes, None)
        self._settle_if_free()
        return True

    def _direct_landing(self, value: Any) -> Callable[..., list[Change]] | None:
        """The store's ``land_value`` for a write of ``value`` that may skip the transaction
        (after polling other processes' commits), or None: the general write's.

        None for a store without it, a settle's derived writes not yet flushed, or
        a value the store must check (e.g. a lone surrogate).
        """
        land = getattr(self.store, "land_value", None)
        t = type(value)
        if land is None or self.writeback or not (
            (t is int and INT_FLOOR < value < INT_LIMIT) or landable(value)
        ):
            return None
        if self._polls:
            self._poll()
        return land  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def edit(self) -> Iterator[Transaction]:
        """A transaction that commits on exit and aborts on exception."""
        tx = self._begin()
        try:
            yield tx
        except BaseException:
            tx.abort()
            raise
        self._commit(tx)

    def _commit(self, tx: Transaction) -> None:
        if tx.status != "open":
            return
        changes = tx.commit()
        if changes:
            self.scheduler.note_written(changes, tx)
            self.scheduler.notify(changes, None)
        self._settle_if_free()

    def edit_with_retry(self, fn: Callable[..., Any], *args: Any, retries: int = 5) -> Any:
        """Run ``fn(tx, *args)`` and commit; retry on ``ConflictError`` up to ``retries`` times.

        Each retry waits a jittered backoff first; the last one runs holding the
        store's write lock (SQLite: ``BEGIN IMMEDIATE``, MemoryStore: its lock),
        so it reads fresh data and cannot lose to another writer.
        """
        attempt = 0
        while True:
            if attempt:
                time.sleep(backoff_delay(attempt))
                if attempt >= retries:
                    with write_lock(self.store):
                        done, result = self._attempt(fn, args)
                else:
                    done, result = self._attempt(fn, args)
            else:
                done, result = self._attempt(fn, args)  # the usual write: no lock, no wait
            if done:
                value, changes = result
                if changes:
                    self.scheduler.notify(changes, None)
                if self._batch_depth == 0 and not self.scheduler._settling and (
                    current_tx.get() is None
                ):
                    self.scheduler.settle()  # ``_settle_if_free``
                return value
            attempt += 1
            if attempt > retries:
                raise result

    def _attempt(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[bool, Any]:
        """One try of ``edit_with_retry``: (True, (result, changes)) or (False, the conflict)."""
        if self._polls:
            self._poll()
        tx = Transaction(self.store, view=self.writeback)
        try:
            result = fn(tx, *args)
        except BaseException:
            tx.abort()
            raise
        if tx.status != "open":  # ``fn`` ended it itself
            return True, (result, [])
        try:
            changes = tx.commit()  # ``_commit``, inline: every write outside a run lands here
        except ConflictError as exc:
            return False, exc
        if changes:
            self.scheduler.note_written(changes, tx)
        return True, (result, changes)

    def update(self, cell: Cell[Any], fn: Callable[[Any], Any], *, retries: int = 5) -> Any:
        """Set ``cell`` to ``fn(current value)`` atomically; returns the new value.

        The safe form of ``cell.set(cell.get() + 1)``: that is a read and a
        *blind* write in two transactions, so a commit of another runtime in
        between is overwritten.  Here the read and the write are one
        transaction, retried on conflict (``edit_with_retry``), so no update is lost.
        """

        def step(tx: Transaction) -> Any:
            bound = cell.with_tx(tx)
            new = fn(bound.get())
            bound.set(new)
            return new

        return self.edit_with_retry(step, retries=retries)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes, one settle at the end."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0:
                self.scheduler.settle()

    #: A write outside any transaction: its own commit, then settle.  Retried on
    #: ``ConflictError``: another runtime on the same SQLite file may have committed
    #: since this one last looked.  (An alias, not a wrapper: it is on every write.)
    _write = edit_with_retry

    def _settle_if_free(self) -> None:
        if self._batch_depth == 0 and not self.scheduler._settling and current_tx.get() is None:
            self.scheduler.settle()

    def _settle_after_send(self) -> None:
        self._settle_if_free()

    def _on_unhandled_event(
        self, stream: tuple[str, str, tuple[str | int, ...]], event: Any
    ) -> None:
        if self._runner is not None:
            self._runner.unhandled_event(stream, event)

    def _new_event_id(self) -> str:
        return uuid.uuid4().hex

    # -- settling ------------------------------------------------------------------

    def _poll(self) -> None:
        changes = self.store.poll()
        if changes:
            self.scheduler.notify(changes, None)

    def idle(self) -> None:
        """Run the scheduler until nothing is pending and the event queue is empty.

        Also picks up commits made by other processes on the same store.  When no
        event loop is running, async nodes are driven to completion too.
        """
        if self._polls:
            self._poll()
        self.scheduler.settle()
        if self.scheduler._async:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                asyncio.run(self.aidle())

    async def aidle(self) -> None:
        """Like ``idle()``, also awaiting async lifts and handlers."""
        while True:
            self._poll()
            self.scheduler.settle()
            pending = self.scheduler.take_async()
            if not pending:
                return
            for result in await asyncio.gather(*pending, return_exceptions=True):
                if isinstance(result, BaseException) and not isinstance(result, Exception):
                    raise result
                if isinstance(result, Exception):  # not a node's own (those are recorded)
                    tb = "".join(traceback.format_exception(result))
                    self._record_error(NodeError("<async>", result, traceback=tb))

    # -- errors --------------------------------------------------------------------

    def _record_error(self, error: NodeError) -> None:
        errors = self.errors
        errors.append(error)
        if len(errors) > self.max_errors:  # a window: the oldest go first
            del errors[: len(errors) - self.max_errors]
        for callback in list(self._error_callbacks):
            try:
                callback(error)
            except Exception:  # an error callback must never stop the runtime
                log.exception("error callback failed")

    def on_error(self, callback: Callable[[NodeError], Any]) -> Callable[[], None]:
        """Call ``callback(node_error)`` for every recorded failure; returns unsubscribe."""
        self._error_callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._error_callbacks:
                self._error_callbacks.remove(callback)

        return unsubscribe

    # -- patterns (runner) -----------------------------------------------------------

    @property
    def runner(self) -> Runner:
        if self._runner is None:
            self._runner = Runner(self)
        return self._runner

    def read_factory(self, sigil: Any) -> Any:
        """A stored ``nodeFactory@1`` as a callable factory, under this runtime's trust rule."""
        return materialize(sigil, self)

    def run(self, pattern: Any, argument: Any = None, cause: Any = None) -> Cell[Any]:
        """Run ``pattern`` into a result cell; the same cause updates the same instance."""
        return self.runner.run(pattern, argument, cause)

    def resume(self, cause_or_entity_id: Any) -> Cell[Any]:
        """Restart a stored instance from its graph snapshot alone.

        A malformed stored snapshot raises ``SnapshotError`` naming the instance
        (nothing is written: the resume's transaction is aborted).
        """
        try:
            return self.runner.resume(cause_or_entity_id)
        except CellkernelError:
            raise
        except (KeyError, IndexError, TypeError, AttributeError) as exc:  # (pydantic's
            # ValidationError, a ValueError naming each bad field, is raised as it is)
            raise SnapshotError(
                f"cannot resume {cause_or_entity_id!r}: its stored graph snapshot is malformed "
                f"({type(exc).__name__}: {exc})"
            ) from exc

    def stop(self, result: Cell[Any]) -> None:
        self.runner.stop(result)

    def snapshot(self, result: Cell[Any]) -> GraphSnapshot:
        return self.runner.snapshot(result)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runner is not None:
            self._runner.stop_all()
        self.store.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- live changes (issue 22) -------------------------------------------------------
    # One block, used only by stores that announce commits (``PostgresStore.subscribe``);
    # ``__init__`` calls ``_attach_live_changes`` last and nothing else here depends on it.

    def _attach_live_changes(self) -> None:
        """Apply other runtimes' commits as they arrive, when the store announces them.

        The store calls back on its listener thread; with an asyncio loop running
        here (an IPython kernel, ``asyncio.run``) the changes are polled and settled
        on that loop, so sinks run and lifts recompute with no call from the user.
        Reads outside a transaction poll first (``read_tx``, for every store other
        processes write), so they see every commit that landed before them, loop or not.
        """
        subscribe = getattr(self.store, "subscribe", None)
        if subscribe is None or not self._polls:
            return
        self._live_queued = False  # (reads outside a transaction poll in ``read_tx``)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: the next call into the runtime polls
        self._live_loop = loop

        def arrived() -> None:  # on the store's listener thread: hand off, never touch state
            if self._live_queued or self._closed:
                return
            self._live_queued = True
            try:
                loop.call_soon_threadsafe(self._apply_live_changes)
            except RuntimeError:  # the loop is closed: nobody is left to tell
                self._live_queued = False

        subscribe(arrived)

    def _live_free(self) -> bool:
        """Whether foreign changes may be applied now (not inside a settle, batch or tx)."""
        return (
            not self._closed
            and not self.scheduler._settling
            and self._batch_depth == 0
            and current_tx.get() is None
        )

    def _apply_live_changes(self) -> None:
        """On the loop: poll the store and settle, like ``idle()`` does."""
        self._live_queued = False
        if self._closed:
            return
        if not self._live_free():  # the loop got control mid-batch (an ``await`` inside it)
            self._live_queued = True
            self._live_loop.call_later(0.01, self._apply_live_changes)
            return
        try:
            self._poll()
        except Exception:  # an outage: the store's listener wakes us again when it is back
            log.warning("could not read other runtimes' commits", exc_info=True)
            return
        self._settle_if_free()

    # -- end of live changes -----------------------------------------------------------

    def __repr__(self) -> str:
        return f"<Runtime {self.store.url} space={self.space!r}>"


def _check_space(space: Any, what: str, default: str | None = None) -> str:
    """``space`` as a space id: a non-empty str (None: ``default``), else ``ValueError``."""
    if space is None and default is not None:
        return default
    if type(space) is not str or not space:
        raise ValueError(f"{what} must be a non-empty str, got {type(space).__name__} {space!r}")
    return space
