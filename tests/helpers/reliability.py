"""Shared helpers for the reliability, resume and property tests.

* ``FIXTURES`` is put on ``sys.path`` so ``import reliability_mod`` works here
  exactly as it does in worker processes (stored implementation refs name the
  module, so every process must import it under the same name).
* ``worker()`` runs ``tests/helpers/reliability_worker.py`` in a real process.
* ``dump_store()`` captures a store's whole contents, byte for byte, so a test
  can prove that a rejected operation wrote nothing.
"""

from __future__ import annotations

import importlib
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

from cellkernel.store.memory import MemoryStore
from cellkernel.store.sqlite import SqliteStore

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
WORKER = TESTS / "helpers" / "reliability_worker.py"

if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

#: ``tests/fixtures/reliability_mod.py``, imported under the name workers use.
fixture_mod = importlib.import_module("reliability_mod")


def worker_env(*paths: Path, **extra: str) -> dict[str, str]:
    """The environment of a worker: ``paths`` (default: the fixtures) on PYTHONPATH."""
    env = dict(os.environ)
    env.pop("CK_TRACE_FILE", None)
    chosen = [str(p) for p in (paths or (FIXTURES,))]
    env["PYTHONPATH"] = os.pathsep.join([*chosen, str(REPO)])
    env.update(extra)
    return env


def spawn(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        cwd=REPO,
        env=env or worker_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def worker(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> dict[str, Any]:
    """Run one worker command to completion; its last stdout line, parsed, plus ``pid``."""
    proc = spawn(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker {args[0]} failed ({proc.returncode}):\n{err}"
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"worker {args[0]} printed nothing:\n{err}"
    payload: dict[str, Any] = json.loads(lines[-1])
    payload["pid"] = proc.pid
    return payload


Dump = list[tuple[Any, ...]]


def dump_store(store: Any) -> Dump:
    """Every document of every space, as stored (SQLite rows are read from the file)."""
    if isinstance(store, SqliteStore):
        with closing(sqlite3.connect(store.path)) as conn:
            rows = conn.execute(
                "SELECT space, id, value, source, meta, version, seq FROM documents "
                "ORDER BY space, id"
            ).fetchall()
        return [tuple(r) for r in rows]
    if isinstance(store, MemoryStore):
        docs = store._docs  # test-only peek: there is no other way to list every space
        return sorted(
            (
                space,
                entity_id,
                json.dumps(doc.value, sort_keys=True),
                json.dumps(doc.source, sort_keys=True),
                json.dumps(dict(doc.meta), sort_keys=True),
                doc.version,
            )
            for (space, entity_id), doc in docs.items()
        )
    raise TypeError(f"cannot dump {store!r}")


def plain(value: Any) -> Any:
    """A ``get()`` result without Stream objects (they become ``"<stream>"``)."""
    from cellkernel import Stream

    if isinstance(value, Stream):
        return "<stream>"
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
