"""Pick the store a URL names (``Runtime(store=...)``)."""

from __future__ import annotations

from cellkernel.store.documents import Store
from cellkernel.store.memory import MemoryStore
from cellkernel.store.postgres import PostgresStore
from cellkernel.store.sqlite import SqliteStore


def open_store(url: str | None) -> Store:
    """Pick the store for a URL: ``None``/``"memory:"``, ``"sqlite://<path>"`` or
    ``"postgresql://user@host:port/db"`` (also ``postgres://``; needs ``cellkernel[postgres]``,
    which ``PostgresStore`` imports only when opened)."""
    if url is not None and not isinstance(url, str):
        raise ValueError(
            f"a store url must be a str, got {type(url).__name__} {url!r} "
            "(use 'memory:', 'sqlite:///path/to.db' or 'postgresql://user@host:port/db')"
        )
    if url is None or url == "memory:":
        return MemoryStore()
    if isinstance(url, str) and url.startswith("sqlite://"):
        return SqliteStore(url)
    if isinstance(url, str) and url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    raise ValueError(
        f"unsupported store url {url!r} "
        "(use 'memory:', 'sqlite:///path/to.db' or 'postgresql://user@host:port/db')"
    )
