"""Named ids of a running instance tree, for the cause-stability matrix (SPEC §6).

Every cell of every instance (nested patterns, map and filter children) gets a
path-like name: its result key where it has one, else ``#<helper><n>`` in graph
order; children are prefixed by the name of the node that owns them, and map
or filter children also by their element (``titles[{"title": "a"}].#lift0``).
Used in this process and, as a script, in a fresh one:

    python causes.py MODULE_FILE MODULE_NAME PATTERN CAUSE ARGUMENT_JSON
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

from cellkernel import Cell, Runtime


def named_ids(rt: Runtime, result: Cell[Any]) -> dict[str, str]:
    """``{name: entity id}`` over the instance of ``result`` and all its children."""
    out: dict[str, str] = {}
    top = rt.runner.instance_of(result)
    assert top is not None
    stack = [("", top)]
    while stack:
        prefix, instance = stack.pop()
        snapshot = rt.snapshot(instance.result)
        names: dict[str, str] = {}
        counts: dict[str, int] = {}
        for cell in snapshot.cells:
            if cell.name == "argument":
                continue
            name = cell.name
            if not name:
                cause = cell.cause if isinstance(cell.cause, dict) else {}
                helper = str(cause.get("helper") or "cell")
                n = counts.get(helper, 0)
                counts[helper] = n + 1
                name = f"#{helper}{n}"
            names[cell.id] = prefix + name
            out[prefix + name] = cell.id
        for node_id, node in instance.nodes.items():
            owner = names.get("of:" + node_id[len("node:"):], prefix + node_id[-8:])
            for child in node.children.values():
                argument = _argument_of(rt, child)
                if isinstance(argument, dict) and "element" in argument:
                    label = json.dumps(argument["element"], sort_keys=True)
                    stack.append((f"{owner}[{label}].", child))
                else:
                    stack.append((f"{owner}.", child))
    return out


def _argument_of(rt: Runtime, instance: Any) -> Any:
    snapshot = rt.snapshot(instance.result)
    for cell in snapshot.cells:
        if cell.name == "argument":
            return rt.cell_at(cell.id).get_raw()
    return None


def load(path: str, module_name: str) -> Any:
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    path, module_name, pattern_name, cause, argument = sys.argv[1:6]
    module = load(path, module_name)
    rt = Runtime()
    result = rt.run(getattr(module, pattern_name), json.loads(argument), cause=cause)
    print(json.dumps({"ids": named_ids(rt, result), "errors": [str(e) for e in rt.errors]}))
    rt.close()


if __name__ == "__main__":
    main()
