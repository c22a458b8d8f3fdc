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
    "refer": "identity",
    "Reference": "identity",
    "create_ref": "identity",
    # runtime and cells
    "Runtime": "runtime",
    "Cell": "cells",
    "Stream": "cells",
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
    "InstanceStoppedError": "runner",
    # builder
    "pattern": "builder",
    "recipe": "builder",
    "Pattern": "builder",
    "lift": "builder",
    "derive": "builder",
    "computed": "builder",
    "handler": "builder",
    "Default": "builder",
    "SELF": "builder",
    "NAME": "builder",
    # builtins
    "if_else": "builtins",
    "when": "builtins",
    "unless": "builtins",
    "fmt": "builtins",
    "instantiate": "builtins",
    "wish": "builtins",
    # factories and snapshots
    "materialize": "factories",
    "GraphSnapshot": "snapshot",
    "SnapshotDiff": "snapshot",
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
    from .builder import (
        NAME,
        SELF,
        Default,
        Pattern,
        computed,
        derive,
        handler,
        lift,
        pattern,
        recipe,
    )
    from .builtins import fmt, if_else, instantiate, unless, when, wish
    from .cells import Cell, Stream
    from .errors import (
        CapabilityError,
        CauseError,
        CellkernelError,
        ConflictError,
        IterationLimitError,
        LinkCycleError,
        NodeError,
        UnknownImplementationError,
        WriteIsolationError,
    )
    from .factories import materialize
    from .identity import Reference, create_ref, refer
    from .runner import InstanceStoppedError
    from .runtime import Runtime
    from .snapshot import GraphSnapshot, SnapshotDiff


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
    """Register ``%%pattern`` (idempotent, silent).  See ``cellkernel.jupyter``."""
    from .jupyter import load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics and every event hook the extension registered."""
    from .jupyter import unload

    unload(ipython)
