"""Shared fixtures: every runtime test runs on the in-memory store and on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cellkernel.runtime import Runtime


@pytest.fixture(params=["memory", "sqlite"])
def rt(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    """A fresh runtime on the in-memory store, then on a SQLite file in ``tmp_path``."""
    runtime = (
        Runtime() if request.param == "memory" else Runtime(store=f"sqlite:///{tmp_path}/state.db")
    )
    try:
        yield runtime
    finally:
        runtime.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store URL that several runtimes can share."""
    return f"sqlite:///{tmp_path}/shared.db"
