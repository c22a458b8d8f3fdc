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
        super().__init__(f"cannot {operation} a {capability} cell{suffix}")


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
    ) -> None:
        self.node = node
        self.error = error
        self.pattern = pattern
        self.space = space
        self.traceback = traceback
        self.name = name
        label = name or node
        super().__init__(f"{label}: {type(error).__name__}: {error}")

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "name": self.name,
            "pattern": self.pattern,
            "space": self.space,
            "error": f"{type(self.error).__name__}: {self.error}",
        }


class TransactionClosedError(CellkernelError):
    """A read or write on a transaction that already committed or aborted."""


class InstanceStoppedError(CellkernelError):
    """An event was sent to a stream of a stopped instance."""
