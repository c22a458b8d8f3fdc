"""The notebook's runtimes (one per space) and the views shown last.

Kept apart from the magics so ``%reload_ext cellkernel`` keeps every instance live."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from cellkernel.runtime import Runtime

if TYPE_CHECKING:

    from cellkernel.runtime import Runtime

log = logging.getLogger("cellkernel.notebook.session")


class Session:
    """Runtimes per space plus the widget views of the last run of each name.

    Lives in this module (not in the reloaded top-level package), so
    ``%reload_ext cellkernel`` keeps every instance live.
    """

    def __init__(self) -> None:
        self.runtimes: dict[str | None, Runtime] = {}
        self.views: dict[tuple[str, str], Any] = {}

    def runtime(self, space: str | None = None) -> Runtime:
        """The runtime serving ``space`` (the default space when None)."""
        url = os.environ.get("CELLKERNEL_STORE") or None
        default = self.runtimes.get(None)
        if default is None:
            default = self.runtimes[None] = Runtime(url)
        if space is None or space == default.space:
            return default
        rt = self.runtimes.get(space)
        if rt is None:
            # runner.run has no space parameter: one Runtime per space, sharing the
            # in-memory store (a SQLite URL opens its own connection to the file)
            rt = self.runtimes[space] = Runtime(url if url is not None else default.store,
                                                space=space)
        return rt

    def close_view(self, key: tuple[str, str]) -> None:
        view = self.views.pop(key, None)
        if view is not None:
            try:
                view.close()
            except Exception:  # a dead comm must not break a re-run
                log.debug("closing the previous view failed", exc_info=True)

    def close(self) -> None:
        for key in list(self.views):
            self.close_view(key)
        closed: set[int] = set()
        for rt in self.runtimes.values():
            if id(rt) not in closed:
                closed.add(id(rt))
                rt.close()
        self.runtimes.clear()


_session: Session | None = None


def existing_session() -> Session | None:
    """The session if one was made (hooks use it; they never create one)."""
    return _session


def session() -> Session:
    global _session
    if _session is None:
        _session = Session()
    return _session


def runtime(space: str | None = None) -> Runtime:
    """The kernel's runtime for ``space`` (created on first use)."""
    return session().runtime(space)


def reset() -> None:
    """Stop every instance and drop the runtimes (the next ``%%pattern`` starts afresh)."""
    global _session
    if _session is not None:
        _session.close()
    _session = None
