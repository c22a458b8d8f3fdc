"""``cellkernel/__init__.py``: a light import whose lazy exports are all real."""

from __future__ import annotations

import subprocess
import sys

import pytest

import cellkernel


def test_all_lists_every_lazy_export_and_the_extension_hooks() -> None:
    assert set(cellkernel.__all__) == {
        *cellkernel._EXPORTS, "load_ipython_extension", "unload_ipython_extension",
    }
    assert len(cellkernel.__all__) == len(set(cellkernel.__all__))


@pytest.mark.parametrize("name", sorted(cellkernel._EXPORTS))
def test_every_export_resolves_to_the_object_of_its_module(name: str) -> None:
    import importlib

    module = importlib.import_module(f"cellkernel.{cellkernel._EXPORTS[name]}")
    assert getattr(cellkernel, name) is getattr(module, name)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        cellkernel.no_such_thing  # noqa: B018


def test_importing_the_package_loads_nothing_heavy() -> None:
    code = (
        "import sys, cellkernel\n"
        "heavy = [m for m in ('pydantic', 'IPython', 'ipywidgets', 'pygraphviz', "
        "'cellkernel.patterns.runner', 'cellkernel.patterns.builder') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
