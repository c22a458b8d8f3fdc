"""Every public error of cellkernel, in one place so each layer can raise them.

Each error says what went wrong and names the thing it went wrong on; callers
catch the type, users read the message.
"""

from __future__ import annotations

from typing import Any


class CellkernelError(Exception):
    """Base class of every error cellkernel raises on purpose."""


class CapabilityError(CellkernelError, PermissionError):
    """An operation the cell's capability does not allow (e.g. writing a readonly cell)."""

    def __init__(self, operation: str, capability: str, where: str = "") -> None:
        self.operation = operation
        self.capability = capability
        suffix = f" on {where}" if where else ""
        article = "an" if capability[:1] in "aeiou" else "a"
        super().__init__(f"cannot {operation} {article} {capability} cell{suffix}")


class ConflictError(CellkernelError):
    """A transaction's basis went stale before it committed; nothing of it landed."""

    def __init__(self, message: str, conflicts: list[tuple[str, str]] | None = None) -> None:
        self.conflicts = list(conflicts or [])
        super().__init__(message)


class WriteIsolationError(CellkernelError):
    """A transaction tried to write a second space."""


class LinkCycleError(CellkernelError):
    """Link resolution met a cycle or exceeded the hop limit."""


class IterationLimitError(CellkernelError):
    """An action was scheduled more than the iteration cap within one busy period."""


class CauseError(CellkernelError):
    """`.for_()` on a cell that already has an identity or is already connected."""


class UnknownImplementationError(CellkernelError, LookupError):
    """A stored implementation reference cannot be resolved to code that may run."""


class NodeError(CellkernelError):
    """A failure recorded on a node: a lift, handler or builtin that raised.

    Recorded in ``Runtime.errors`` rather than raised: a failing node never
    stops the runtime.
    """

    def __init__(
        self,
        node: str,
        error: BaseException,
        *,
        pattern: str | None = None,
        space: str | None = None,
        traceback: str = "",
        name: str | None = None,
        event: Any = None,
        has_event: bool = False,
    ) -> None:
        self.node = node
        self.error = drop_frames(error)
        self.pattern = pattern
        self.space = space
        #: the formatted traceback (text: no frame, and none of its locals, is kept alive)
        self.traceback = traceback
        self.name = name
        #: the event a handler failed on (``has_event`` tells ``None`` from no event)
        self.event = event
        self.has_event = has_event
        label = name or node
        about = f" (event {_short(event)})" if has_event else ""
        super().__init__(f"{label}{about}: {type(error).__name__}: {error}")

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "name": self.name,
            "pattern": self.pattern,
            "space": self.space,
            "error": f"{type(self.error).__name__}: {self.error}",
        }


def _short(value: Any, limit: int = 200) -> str:
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ must not hide the error being recorded
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def drop_frames(error: BaseException) -> BaseException:
    """Detach tracebacks from ``error`` and every exception chained to it (iteratively).

    A recorded error keeps its traceback as text; a live traceback would keep
    every frame of the failing call, and all their locals, alive for as long as
    the error is kept.
    """
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        exc = stack.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        stack.append(exc.__cause__)
        stack.append(exc.__context__)
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
    return error


class TransactionClosedError(CellkernelError):
    """A read or write on a transaction that already committed or aborted."""


class InstanceStoppedError(CellkernelError):
    """An event was sent to a stream of a stopped instance."""


class StoreError(CellkernelError):
    """A store cannot be opened or used: the message names the store and the problem.

    (A missing directory, a directory, a file that is not a cellkernel store, a
    read-only file, a lock held by another process past the busy timeout.)
    """


class CorruptDocumentError(CellkernelError, ValueError):
    """A stored document cannot be decoded; raised when *that* document is read."""

    def __init__(self, space: str, entity_id: str, problem: str) -> None:
        self.space = space
        self.entity_id = entity_id
        super().__init__(f"stored document {entity_id!r} in space {space!r} is corrupt: {problem}")


class SnapshotError(CellkernelError, ValueError):
    """A stored graph snapshot is malformed (resume names the instance and the problem)."""
