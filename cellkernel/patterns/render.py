"""DOT -> SVG, with or without a system Graphviz (SPEC §9: graphs render anywhere).

The ``dot`` executable is used when it is on ``PATH``; otherwise pygraphviz,
whose manylinux wheel bundles Graphviz, lays the graph out in-process.  Both
are looked up only when a graph is drawn, so ``import cellkernel`` stays light.

Drawing prints nothing to stderr: the bundled library's fontconfig is older
than the system's configuration and warns about it (``unknown element
"reset-dirs"``) on file descriptor 2, so the in-process layout runs with fd 2
pointed at a temporary file, whose text goes to this module's debug log.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("cellkernel.patterns.render")

__all__ = ["GraphvizUnavailableError", "RenderError", "backend", "dot_to_svg"]


class RenderError(RuntimeError):
    """Graphviz ran but refused the graph (a DOT syntax error, a crash)."""


class GraphvizUnavailableError(RenderError):
    """Neither a ``dot`` executable nor pygraphviz is usable here."""


def _pygraphviz() -> Any | None:
    try:
        return importlib.import_module("pygraphviz")
    except ImportError:
        return None


def backend() -> str | None:
    """``"dot"`` (executable), ``"pygraphviz"`` or ``None``: what ``dot_to_svg`` would use."""
    if shutil.which("dot"):
        return "dot"
    if _pygraphviz() is not None:
        return "pygraphviz"
    return None


def dot_to_svg(dot: str, *, timeout: float | None = 120.0) -> str:
    """Lay out ``dot`` and return the ``<svg …>`` element (no XML prolog or DOCTYPE).

    The prolog is dropped so the result can be inlined in HTML (GraphView,
    notebook output) as well as served as ``image/svg+xml``.
    """
    executable = shutil.which("dot")
    if executable is not None:
        try:
            done = subprocess.run(
                [executable, "-Tsvg"], input=dot.encode("utf-8"), capture_output=True,
                timeout=timeout, check=False,
            )
        except OSError:
            pass  # a broken executable: fall back to the bundled library
        else:
            if done.returncode != 0:
                message = done.stderr.decode("utf-8", "replace").strip().splitlines()
                raise RenderError(f"dot failed: {message[0] if message else done.returncode}")
            return _svg_element(done.stdout.decode("utf-8"))
    module = _pygraphviz()
    if module is None:
        raise GraphvizUnavailableError(
            "cannot draw the graph: no `dot` executable on PATH and pygraphviz is not "
            "installed (pip install 'cellkernel[jupyter]' or install Graphviz)"
        )
    try:
        with _quiet_stderr():
            graph = module.AGraph(string=dot)
            out = graph.draw(format="svg", prog="dot")
    except Exception as exc:  # pygraphviz raises several unrelated types
        raise RenderError(f"pygraphviz failed: {exc}") from exc
    text = out.decode("utf-8") if isinstance(out, bytes) else str(out)
    return _svg_element(text)


_fd_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Run the block with fd 2 (and Python warnings) captured; log what was captured.

    Graphviz and fontconfig write straight to fd 2, below ``sys.stderr``; an
    ipykernel forwards fd 2 to the notebook, where it shows in red.
    """
    with _fd_lock, tempfile.TemporaryFile() as sink, \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no fd 2 at all: nothing to protect
            yield
            return
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace").strip()
            if text:
                log.debug("graphviz said: %s", text)
            for warning in caught:
                log.debug("graphviz warned: %s", warning.message)


def _svg_element(text: str) -> str:
    start = text.find("<svg")
    if start < 0:
        raise RenderError("Graphviz returned no <svg> element")
    return text[start:]
