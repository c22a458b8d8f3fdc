"""Pick the store a URL names (``Runtime(store=...)``)."""

from __future__ import annotations

from cellkernel.store.documents import Store
from cellkernel.store.memory import MemoryStore
from cellkernel.store.sqlite import SqliteStore


def open_store(url: str | None) -> Store:
    """Pick the store for a URL: ``None``/``"memory:"`` or ``"sqlite://<path>"``."""
    if url is None or url == "memory:":
        return MemoryStore()
    if isinstance(url, str) and url.startswith("sqlite://"):
        return SqliteStore(url)
    raise ValueError(f"unsupported store url {url!r} (use 'memory:' or 'sqlite:///path/to.db')")
