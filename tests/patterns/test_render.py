"""DOT -> SVG (SPEC §9: the graph renders on a machine with no system Graphviz)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cellkernel import Cell, Runtime, handler, lift, pattern
from cellkernel.patterns import render

SIMPLE = 'digraph { "of:a" [label="a"]; "of:a" -> "node:b"; }'


@lift
def double(x: int) -> int:
    return x * 2


@handler
def bump(event: Any, count: Cell[int]) -> None:
    count.set(count.get() + 1)


@pattern
def Drawn(count: int = 1) -> Any:
    return {"count": count, "doubled": double(count), "bump": bump(count=count)}


def _no_system_dot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither PATH nor shutil.which can find a ``dot`` executable."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    real_which = shutil.which

    def which(cmd: str, *args: Any, **kwargs: Any) -> str | None:
        return None if cmd == "dot" else real_which(cmd, *args, **kwargs)

    monkeypatch.setattr(render.shutil, "which", which)  # type: ignore[attr-defined]


def test_renders_with_pygraphviz_when_no_dot_is_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("pygraphviz")
    _no_system_dot(monkeypatch, tmp_path)
    assert render.backend() == "pygraphviz"
    svg = render.dot_to_svg(SIMPLE)
    assert svg.startswith("<svg")
    assert svg.rstrip().endswith("</svg>")
    assert "<?xml" not in svg and "DOCTYPE" not in svg


def test_a_snapshot_renders_in_process_with_highlights(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("pygraphviz")
    _no_system_dot(monkeypatch, tmp_path)
    rt = Runtime()
    s = rt.snapshot(rt.run(Drawn, None, cause="render"))
    doubled = next(c.id for c in s.cells if c.name == "doubled")
    svg = render.dot_to_svg(s.to_dot(highlight={doubled: "changed"}))
    assert svg.startswith("<svg")
    assert ">doubled</text>" in svg and ">lift double</text>" in svg
    assert 'fill="#ffe0b2"' in svg  # the highlight colour reached the drawing
    assert "ck&#45;changed" in svg or "ck-changed" in svg  # CSS class for GraphView


def test_uses_the_dot_executable_when_present(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("shell script stand-in")
    fake = tmp_path / "dot"
    fake.write_text(
        "#!/bin/sh\n"
        'cat > "$(dirname "$0")/stdin.txt"\n'
        'echo "<?xml version=\\"1.0\\"?>"\n'
        'echo "<svg id=\\"fake\\" args=\\"$*\\"></svg>"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert render.backend() == "dot"
    svg = render.dot_to_svg(SIMPLE)
    assert svg.strip() == '<svg id="fake" args="-Tsvg"></svg>'
    assert (tmp_path / "stdin.txt").read_text() == SIMPLE


def test_a_failing_dot_executable_is_a_render_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if sys.platform == "win32":  # pragma: no cover
        pytest.skip("shell script stand-in")
    fake = tmp_path / "dot"
    fake.write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(render.RenderError, match="syntax error in line 1"):
        render.dot_to_svg("digraph {")


def test_neither_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _no_system_dot(monkeypatch, tmp_path)
    monkeypatch.setitem(sys.modules, "pygraphviz", None)  # import now fails
    assert render.backend() is None
    with pytest.raises(render.GraphvizUnavailableError, match="pygraphviz"):
        render.dot_to_svg(SIMPLE)
    assert issubclass(render.GraphvizUnavailableError, render.RenderError)


def test_invalid_dot_is_a_render_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("pygraphviz")
    _no_system_dot(monkeypatch, tmp_path)
    with pytest.raises(render.RenderError):
        render.dot_to_svg("digraph { this is not dot")


def test_drawing_prints_nothing_to_stderr_in_a_fresh_process(tmp_path: Path) -> None:
    """The bundled library's fontconfig warning (``reset-dirs``) never reaches fd 2."""
    pytest.importorskip("pygraphviz")
    code = (
        "import shutil\n"
        "from cellkernel.patterns import render\n"
        "render.shutil.which = lambda cmd, *a, **k: None\n"  # force the in-process library
        "from cellkernel import Runtime, lift, pattern\n"
        "@lift\n"
        "def double(x): return x * 2\n"
        "@pattern\n"
        "def P(count: int = 1): return {'count': count, 'doubled': double(count)}\n"
        "rt = Runtime()\n"
        "svg = render.dot_to_svg(rt.snapshot(rt.run(P, {}, cause='p')).to_dot())\n"
        "print(svg[:4])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PATH": str(tmp_path)}, check=True)
    assert done.stdout.strip() == "<svg"
    assert done.stderr == ""
