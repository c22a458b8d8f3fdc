"""What currying and sigils read of a factory: structural types for the builder's classes.

``curry.py`` and ``sigils.py`` sit below ``builder.py`` (which calls them), so they
name the factories they are handed by what they read of them, not by class.
"""

from __future__ import annotations

from typing import Any, Protocol

from cellkernel.patterns.signatures import Param


class CurriedFactory(Protocol):
    """A lift or handler factory, as currying reads it."""

    @property
    def __name__(self) -> str: ...

    @property
    def curried(self) -> tuple[tuple[int, Any], ...]: ...

    @property
    def params(self) -> list[Param]: ...


class PatternShape(Protocol):
    """A pattern factory, as currying, ``SELF.factory`` and sigils read it."""

    @property
    def name(self) -> str: ...

    @property
    def hash(self) -> str: ...

    @property
    def graph(self) -> dict[str, Any]: ...

    @property
    def curried(self) -> tuple[tuple[int, Any], ...]: ...

    @property
    def self_free(self) -> bool: ...

    def sigil(self) -> dict[str, Any]: ...
