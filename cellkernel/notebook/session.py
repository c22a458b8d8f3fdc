"""The notebook's runtimes (one per space) and the views shown last.

Kept apart from the magics so ``%reload_ext cellkernel`` keeps every instance live."""

from __future__ import annotations

import logging
import os
from typing import Any

from cellkernel.runtime import Runtime

log = logging.getLogger("cellkernel.notebook.session")


class Session:
    """Runtimes per space plus the widget views of the last run of each name.

    Lives in this module (not in the reloaded top-level package), so
    ``%reload_ext cellkernel`` keeps every instance live.
    """

    def __init__(self, url: str | None = None) -> None:
        self.runtimes: dict[str | None, Runtime] = {}
        self.views: dict[tuple[str, str], Any] = {}
        #: the store URL chosen with ``%cellkernel store`` (else ``CELLKERNEL_STORE``)
        self.url = url
        #: live cells shown by their own display (closed with the session)
        self.shown: list[Any] = []
        #: (space, name) -> result cell of every %%pattern run
        self.instances: dict[tuple[str, str], Any] = {}

    def store_url(self) -> str | None:
        """The URL new runtimes open: ``%cellkernel store``'s, else ``CELLKERNEL_STORE``."""
        return self.url or os.environ.get("CELLKERNEL_STORE") or None

    def runtime(self, space: str | None = None) -> Runtime:
        """The runtime serving ``space`` (the default space when None)."""
        url = self.store_url()
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

    def close_view(self, key: tuple[str, str], note: str | None = None) -> None:
        """Stop the last view of ``key`` following its instance (it shows ``note`` if given)."""
        view = self.views.pop(key, None)
        if view is not None:
            try:
                view.close(note) if note is not None else view.close()
            except Exception:  # a dead comm must not break a re-run
                log.debug("closing the previous view failed", exc_info=True)

    def close(self) -> None:
        for key in list(self.views):
            self.close_view(key)
        for widget in self.shown:
            try:
                widget.close()
            except Exception:
                log.debug("closing a cell's view failed", exc_info=True)
        self.shown.clear()
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


def use_store(url: str) -> Session:
    """Serve this notebook from the store at ``url`` (``%cellkernel store URL``).

    Every runtime is closed (names bound to their cells stop following them);
    the next ``%%pattern`` run opens a ``Runtime`` on ``url``, and with a
    persistent store it finds the state its cells left there, after a kernel
    restart too. The URL is opened once here, so a wrong one fails now.
    """
    global _session
    probe = Runtime(url)  # fails on a bad URL before anything is closed
    if _session is not None:
        _session.close()
    _session = Session(url)
    _session.runtimes[None] = probe
    return _session


def redact(url: str | None) -> str:
    """A store URL without its password (``postgresql://ada:***@host/db``)."""
    if not url:
        return "memory (nothing persists)"
    scheme, sep, rest = url.partition("://")
    auth, at, host = rest.rpartition("@")
    if sep and at and ":" in auth:
        return f"{scheme}://{auth.split(':', 1)[0]}:***@{host}"
    return url
