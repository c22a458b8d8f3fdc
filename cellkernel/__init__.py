"""cellkernel: a Jupyter-native reactive pattern environment.

``import cellkernel`` is light: names are loaded on first access (PEP 562), and
the IPython extension imports its magics only inside ``load_ipython_extension``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # identity
    "refer": "data.identity",
    "Reference": "data.identity",
    "create_ref": "data.identity",
    # runtime and cells
    "Runtime": "runtime",
    "Cell": "reactive.cells",
    "Stream": "reactive.cells",
    # errors
    "CellkernelError": "errors",
    "CapabilityError": "errors",
    "ConflictError": "errors",
    "WriteIsolationError": "errors",
    "LinkCycleError": "errors",
    "IterationLimitError": "errors",
    "CauseError": "errors",
    "UnknownImplementationError": "errors",
    "NodeError": "errors",
    "InstanceStoppedError": "errors",
    # builder
    "pattern": "patterns.builder",
    "recipe": "patterns.builder",
    "Pattern": "patterns.builder",
    "lift": "patterns.builder",
    "derive": "patterns.builder",
    "computed": "patterns.builder",
    "handler": "patterns.builder",
    "Default": "patterns.signatures",
    "SELF": "patterns.builder",
    "NAME": "patterns.tracing",
    # builtins
    "if_else": "patterns.builtins",
    "when": "patterns.builtins",
    "unless": "patterns.builtins",
    "fmt": "patterns.builtins",
    "instantiate": "patterns.builtins",
    "wish": "patterns.builtins",
    # factories and snapshots
    "materialize": "patterns.materialize",
    "GraphSnapshot": "patterns.snapshot",
    "SnapshotDiff": "patterns.snapshot",
}

# spelled out (not computed from _EXPORTS) so type checkers and linters see the exports;
# tests/test_init.py checks that the two lists agree
__all__ = [
    "NAME",
    "SELF",
    "CapabilityError",
    "CauseError",
    "Cell",
    "CellkernelError",
    "ConflictError",
    "Default",
    "GraphSnapshot",
    "InstanceStoppedError",
    "IterationLimitError",
    "LinkCycleError",
    "NodeError",
    "Pattern",
    "Reference",
    "Runtime",
    "SnapshotDiff",
    "Stream",
    "UnknownImplementationError",
    "WriteIsolationError",
    "computed",
    "create_ref",
    "derive",
    "fmt",
    "handler",
    "if_else",
    "instantiate",
    "lift",
    "load_ipython_extension",
    "materialize",
    "pattern",
    "recipe",
    "refer",
    "unless",
    "unload_ipython_extension",
    "when",
    "wish",
]

if TYPE_CHECKING:
    from cellkernel.data.identity import Reference, create_ref, refer
    from cellkernel.errors import (
        CapabilityError,
        CauseError,
        CellkernelError,
        ConflictError,
        InstanceStoppedError,
        IterationLimitError,
        LinkCycleError,
        NodeError,
        UnknownImplementationError,
        WriteIsolationError,
    )
    from cellkernel.patterns.builder import (
        SELF,
        Pattern,
        computed,
        derive,
        handler,
        lift,
        pattern,
        recipe,
    )
    from cellkernel.patterns.builtins import fmt, if_else, instantiate, unless, when, wish
    from cellkernel.patterns.materialize import materialize
    from cellkernel.patterns.signatures import Default
    from cellkernel.patterns.snapshot import GraphSnapshot, SnapshotDiff
    from cellkernel.patterns.tracing import NAME
    from cellkernel.reactive.cells import Cell, Stream
    from cellkernel.runtime import Runtime


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cellkernel' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cellkernel.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%pattern`` (idempotent, silent).  See ``cellkernel.notebook.magics``."""
    from cellkernel.notebook.magics import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and every event hook the extension registered."""
    from cellkernel.notebook.magics import unload

    unload(ipython)
