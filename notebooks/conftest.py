"""nbval collection for the tutorials (``pytest --nbval ... notebooks/``).

The deterministic ``text/plain`` representations carry the assertions; the
graph SVG, HTML tables, JavaScript and widget views vary between runs and
machines, and stderr only carries environment warnings (e.g. fontconfig's),
so they are not compared.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

import pytest

SKIP = (
    "image/svg+xml",
    "text/html",
    "text/vnd.mermaid",
    "application/javascript",
    "application/vnd.jupyter.widget-view+json",
    "stderr",
)


def pytest_collectstart(collector: Any) -> None:
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare = tuple(collector.skip_compare) + SKIP


# --------------------------------------------------------------------------- 08: PostgreSQL
# ``08_shared_spaces`` needs a PostgreSQL server: one is started (as the store tests do,
# tests/store/postgres_server.py) just before that notebook's kernel starts, and handed
# to the kernel as ``CELLKERNEL_STORE``; the other notebooks' kernels never see it.

POSTGRES_NOTEBOOK = "08_shared_spaces.ipynb"
_SERVER_MODULE = Path(__file__).resolve().parent.parent / "tests" / "store" / "postgres_server.py"
_postgres = contextlib.ExitStack()
_postgres_url: list[str] = []  # the database URL, or the reason there is none
_saved_env: list[str | None] = []


def _postgres_store() -> str | None:
    """A database URL on a server started for this session; None (reason kept) if none."""
    if not _postgres_url:
        given = os.environ.get("CELLKERNEL_STORE", "")
        if given.startswith(("postgresql://", "postgres://")):
            _postgres_url.append(given)
        else:
            spec = importlib.util.spec_from_file_location("postgres_server", _SERVER_MODULE)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules.setdefault("postgres_server", module)
            spec.loader.exec_module(module)
            server = _postgres.enter_context(module.running_server())
            _postgres_url.append(
                "skip: " + server if isinstance(server, str) else server.create_database("nb")
            )
    url = _postgres_url[0]
    return None if url.startswith("skip: ") else url


def _is_postgres_notebook(item: Any) -> bool:
    path = getattr(item, "path", None) or getattr(item, "fspath", None)
    return path is not None and Path(str(path)).name == POSTGRES_NOTEBOOK


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: Any) -> None:
    """Before the notebook's kernel starts (its first cell's setup): the server and the URL."""
    if not _is_postgres_notebook(item) or getattr(item.parent, "kernel", None) is not None:
        return
    url = _postgres_store()
    if url is None:
        pytest.skip(_postgres_url[0][len("skip: "):])
    _saved_env[:] = [os.environ.get("CELLKERNEL_STORE")]
    os.environ["CELLKERNEL_STORE"] = url


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: Any) -> None:
    """The kernel has started with the URL: later kernels get the environment back."""
    if _saved_env:
        previous = _saved_env.pop()
        if previous is None:
            os.environ.pop("CELLKERNEL_STORE", None)
        else:
            os.environ["CELLKERNEL_STORE"] = previous


def pytest_unconfigure(config: Any) -> None:
    _postgres.close()
