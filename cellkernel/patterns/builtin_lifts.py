"""The fixed table of builtin lift implementations, named in graphs by ``{"type": "builtin"}``.

Stored data may name these by string (SPEC §8); the table is fixed here, so
nothing registers into it at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def format_template(template: str, **values: Any) -> str:
    """``fmt``: ``str.format`` of the template with the node's inputs."""
    return template.format(**values)


BUILTIN_LIFTS: dict[str, Callable[..., Any]] = {"fmt": format_template}
