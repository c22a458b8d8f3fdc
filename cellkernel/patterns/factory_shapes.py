"""What currying and sigils read of a factory: structural types for the builder's classes.

``curry.py`` and ``sigils.py`` sit below ``builder.py`` (which calls them), so they
name the factories they are handed by what they read of them, not by class.
"""

from __future__ import annotations

from typing import Any, Protocol

from cellkernel.patterns.signatures import Param


class CurriedFactory(Protocol):
    """A lift or handler factory, as currying reads it."""

    __name__: str
    curried: tuple[tuple[int, Any], ...]
    params: list[Param]


class PatternShape(Protocol):
    """A pattern factory, as currying, ``SELF.factory`` and sigils read it."""

    name: str
    graph: dict[str, Any]
    curried: tuple[tuple[int, Any], ...]
    self_free: bool

    @property
    def hash(self) -> str: ...

    def sigil(self) -> dict[str, Any]: ...
