"""The ``cellkernel`` command: ``demo`` and ``inspect-causes`` (SPEC §6)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cellkernel import cli

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
V1 = FIXTURES / "causes_v1.py"
V2 = FIXTURES / "causes_v2.py"

CELLS = ["argument", "doubled", "bumped", "clicks", "label", "squared", "increment"]
DOWNSTREAM_OF_DOUBLE = {"doubled", "bumped", "label"}


def rows_of(text: str) -> list[list[str]]:
    """Table body rows split on whitespace (header and summary line dropped)."""
    lines = text.strip().splitlines()
    return [line.split() for line in lines[1:] if not line.endswith("removed")]


def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_main(capsys, "--help")
    assert code == 0
    assert "inspect-causes" in out and "demo" in out
    code, out, _err = run_main(capsys, "inspect-causes", "--help")
    assert code == 0 and "--against" in out and "FILE[:PATTERN]" in out
    code, out, _err = run_main(capsys, "--version")
    assert code == 0 and out.startswith("cellkernel ")


def test_no_command_prints_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_main(capsys)
    assert code == 2 and "usage:" in out


def test_unknown_option_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run_main(capsys, "inspect-causes", str(V1), "--bogus")
    assert code == 2 and "unrecognized arguments" in err


def test_demo(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_main(capsys, "demo", "--delay", "0", "--steps", "3")
    assert code == 0
    assert "sink: doubled = 2" in out and "sink: doubled = 6" in out
    assert "    count = 3" in out
    assert "count = 100, doubled = 200" in out
    assert "GraphSnapshot Counter generation 1: 3 cells, 2 nodes" in out
    assert "error" not in out


def test_inspect_one_pattern(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "inspect-causes", str(V1))
    assert code == 0 and err == ""
    assert out.splitlines()[0].split() == ["name", "helper", "id"]
    rows = rows_of(out)
    assert [r[0] for r in rows] == CELLS
    assert [r[1] for r in rows] == ["-", "lift", "lift", "cell", "lift", "lift", "handler"]
    assert all(len(r[2]) == 10 and not r[2].startswith("baedrei") for r in rows)
    # the same file gives the same ids every time (fixed cause, fresh runtime)
    _code, again, _err = run_main(capsys, "inspect-causes", f"{V1}:Causes")
    assert again == out


def test_inspect_against_marks_the_edited_lift_and_downstream(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_main(capsys, "inspect-causes", str(V2), "--against", str(V1))
    assert code == 0 and err == ""
    assert "\x1b[" not in out  # captured output is not a terminal
    header = out.splitlines()[0].split()
    assert header == ["status", "name", "helper", "id", "was"]
    rows = rows_of(out)
    status = {r[1]: r[0] for r in rows}
    assert list(status) == CELLS
    assert {n for n, s in status.items() if s == "changed"} == DOWNSTREAM_OF_DOUBLE
    assert {n for n, s in status.items() if s == "kept"} == set(CELLS) - DOWNSTREAM_OF_DOUBLE
    assert out.strip().splitlines()[-1] == "4 kept, 3 changed, 0 added, 0 removed"
    # kept ids are v1's ids; changed rows show v1's id under "was"
    _code, v1_out, _err = run_main(capsys, "inspect-causes", str(V1))
    v1_ids = {r[0]: r[2] for r in rows_of(v1_out)}
    for r in rows:
        if r[0] == "kept":
            assert r[3] == v1_ids[r[1]]
        else:
            assert r[4] == v1_ids[r[1]] != r[3]


def test_inspect_against_with_nodes_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run_main(capsys, "inspect-causes", str(V2), "--against", str(V1),
                               "--nodes", "--json")
    assert code == 0
    data = json.loads(out)
    cells = {d["name"]: d for d in data if d["kind"] == "cell"}
    nodes = {d["name"]: d["status"] for d in data if d["kind"] == "node"}
    assert {n for n, d in cells.items() if d["status"] == "changed"} == DOWNSTREAM_OF_DOUBLE
    assert all(d["previous"] for d in cells.values() if d["status"] == "changed")
    assert nodes == {"double": "changed", "add_one": "changed", "describe": "changed",
                     "square": "kept", "increment": "kept"}


def test_added_and_removed_follow_the_direction(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    v3 = tmp_path / "causes_v3.py"
    v3.write_text(V1.read_text().replace(
        '"clicks": clicks,', '"clicks": clicks,\n        "cubed": square(square(count)),'
    ))
    _code, out, _err = run_main(capsys, "inspect-causes", str(v3), "--against", str(V1))
    status = {r[1]: r[0] for r in rows_of(out)}
    assert status["square"] == "added" and status["cubed"] == "added"
    assert {s for n, s in status.items() if n not in ("square", "cubed")} == {"kept"}
    _code, out, _err = run_main(capsys, "inspect-causes", str(V1), "--against", str(v3))
    status = {r[1]: r[0] for r in rows_of(out)}
    assert status["square"] == "removed" and status["cubed"] == "removed"
    assert out.strip().splitlines()[-1] == "7 kept, 0 changed, 0 added, 2 removed"


def test_color_always_and_no_color(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _code, out, _err = run_main(capsys, "inspect-causes", str(V2), "--against", str(V1),
                                "--color", "always")
    assert "\x1b[33mchanged" in out and "\x1b[2mkept" in out

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert cli.use_color("auto", Terminal()) is True
    assert cli.use_color("auto", io.StringIO()) is False
    assert cli.use_color("never", Terminal()) is False
    monkeypatch.setenv("NO_COLOR", "1")
    assert cli.use_color("auto", Terminal()) is False


def test_missing_file_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "inspect-causes", "no/such/file.py")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no such file: no/such/file.py" in err
    code, _out, err = run_main(capsys, "inspect-causes", str(V1), "--against", "missing.py")
    assert code == 2 and err.count("\n") == 1 and "missing.py" in err


def test_missing_pattern_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, "inspect-causes", f"{V1}:Nope")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no pattern 'Nope'" in err and "Causes" in err


def test_a_file_without_patterns_and_a_broken_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.py"
    empty.write_text("x = 1\n")
    code, _out, err = run_main(capsys, "inspect-causes", str(empty))
    assert code == 2 and err.count("\n") == 1 and "no pattern in" in err
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    code, _out, err = run_main(capsys, "inspect-causes", str(broken))
    assert code == 1 and err.count("\n") == 1 and "RuntimeError: boom" in err


def test_first_pattern_is_picked_and_others_are_named(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    two = tmp_path / "two.py"
    two.write_text(
        "from cellkernel import lift, pattern\n"
        "from causes_v1 import square\n"  # the file's folder is importable, as with python FILE
        "@pattern\n"
        "def First(count: int = 1):\n"
        "    return {'first': square(count)}\n"
        "@pattern\n"
        "def Second(count: int = 1):\n"
        "    return {'second': square(count)}\n"
    )
    (tmp_path / "causes_v1.py").write_text(V1.read_text())
    code, out, err = run_main(capsys, "inspect-causes", str(two))
    assert code == 0 and [r[0] for r in rows_of(out)] == ["argument", "first"]
    assert "using First" in err
    code, out, err = run_main(capsys, "inspect-causes", f"{two}:Second")
    assert code == 0 and [r[0] for r in rows_of(out)] == ["argument", "second"] and err == ""


def test_parse_target() -> None:
    assert cli.parse_target("a/b.py") == cli.Target(Path("a/b.py"), None)
    assert cli.parse_target("a/b.py:Counter") == cli.Target(Path("a/b.py"), "Counter")
    assert cli.parse_target("C:/x.py") == cli.Target(Path("C:/x.py"), None)  # not a name


def _subprocess(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NO_COLOR", None)
    return subprocess.run([sys.executable, "-m", "cellkernel", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_python_dash_m_inspect_causes() -> None:
    done = _subprocess("inspect-causes", str(V2), "--against", str(V1))
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # piped: plain
    status = {r[1]: r[0] for r in rows_of(done.stdout)}
    assert {n for n, s in status.items() if s == "changed"} == DOWNSTREAM_OF_DOUBLE
    assert {n for n, s in status.items() if s == "kept"} == set(CELLS) - DOWNSTREAM_OF_DOUBLE


def test_python_dash_m_errors_and_help() -> None:
    done = _subprocess("inspect-causes", "does-not-exist.py")
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1
    assert "no such file" in done.stderr
    done = _subprocess("--help")
    assert done.returncode == 0 and "inspect-causes" in done.stdout


def test_debug_logs_causes_to_stderr() -> None:
    done = _subprocess("inspect-causes", str(V1), "--debug")
    assert done.returncode == 0
    assert "cellkernel.causes" in done.stderr and "'impl'" in done.stderr
