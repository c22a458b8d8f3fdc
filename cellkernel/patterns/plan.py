"""Planning an instance: concrete cell ids for a pattern graph, defaults, well-known ids.

A graph names its cells by key; ``plan`` derives each key's entity id from its
cause components in the instance's frame and turns bindings into links."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cellkernel.data import schema as schemas
from cellkernel.data.identity import create_ref
from cellkernel.data.links import LINK_TAG, is_link, is_sigil, make_link

if TYPE_CHECKING:
    from cellkernel.patterns.host import Host


cause_log = logging.getLogger("cellkernel.causes")


def derive_id(components: Any) -> str:
    return "of:" + str(create_ref({}, components))


def pattern_doc_cause(digest: str) -> dict[str, str]:
    return {"pattern": digest}


def _concrete_input(token: str, ids: dict[str, str]) -> str:
    if token.startswith("of:"):
        return token
    key, _, rest = token.partition("/")
    base = ids[key]
    return f"{base}/{rest}" if rest else base


def _rewrite_aliases(value: Any, on_alias: Callable[[dict[str, Any]], Any],
                     on_sigil: Callable[[dict[str, Any]], Any] | None = None,
                     share_empty: bool = False) -> Any:
    """A copy of ``value`` with each ``$alias`` replaced by ``on_alias(alias)`` (iterative).

    Sigils (links, factory values) are not entered: they stay as they are, or
    become ``on_sigil(sigil)``.  Only containers are copied; scalars are shared,
    and with ``share_empty`` so are empty containers below the top (for a copy
    that, like the graph, is never changed: a lift's ``kwargs`` are nearly always
    ``{}``).
    """
    root: list[Any] = [value]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        holder, key = stack.pop()
        item = holder[key]
        if type(item) is dict:
            alias = item.get("$alias") if len(item) == 1 else None
            if alias is not None:
                holder[key] = on_alias(alias)
                continue
            if is_sigil(item):  # links, and factory sigils whose graphs are data (SPEC §8)
                if on_sigil is not None:
                    holder[key] = on_sigil(item)
                continue
            if share_empty and not item and holder is not root:
                continue
            copy = dict(item)
            holder[key] = copy
            for k, v in copy.items():
                if type(v) is dict or type(v) is list:
                    stack.append((copy, k))
        elif type(item) is list:
            if share_empty and not item and holder is not root:
                continue
            copy_l = item.copy()  # (exact size, unlike list(item))
            holder[key] = copy_l
            for i, v in enumerate(copy_l):
                if type(v) is dict or type(v) is list:
                    stack.append((copy_l, i))
    return root[0]


def concretize(binding: Any, ids: dict[str, str], space: str,
               links: dict[tuple[str, ...], dict[str, Any]] | None = None) -> Any:
    """Replace ``$alias`` bindings by write-redirect links to concrete cells.

    With ``links``, an alias to a whole cell or to one key of it (the usual
    bindings) becomes one shared link object per target: thousands of nodes of an
    instance bind the same few inputs, and the records are stored as they are,
    never edited.  Such a copy also shares the graph's empty containers and path
    lists (the graph is never edited either).
    """
    def link_for(alias: dict[str, Any]) -> dict[str, Any]:
        path = alias["path"]
        if links is None:
            return make_link(space, ids[alias["cell"]], path, None, True)
        target: tuple[str, ...] | None = None
        if not path:
            target = (alias["cell"],)
        elif len(path) == 1 and type(path[0]) is str:
            target = (alias["cell"], path[0])
        link = links.get(target) if target is not None else None
        if link is None:
            link = make_link(space, ids[alias["cell"]], path, None, True)
            if type(path) is list:  # the graph's own list: one object for both
                link["/"][LINK_TAG]["path"] = path
            if target is not None:
                links[target] = link
        return link

    if links is not None:
        flat = _rewrite_flat(binding, link_for)
        if flat is not None:
            return flat
    return _rewrite_aliases(binding, link_for, share_empty=links is not None)


def _rewrite_flat(binding: Any, on_alias: Callable[[dict[str, Any]], Any]) -> Any:
    """``_rewrite_aliases(binding, on_alias, share_empty=True)`` for a lift's usual binding.

    That is a dict of lists of scalars and aliases, empty dicts and scalars
    (``{"args": [...], "kwargs": {}}``): one level, no stack.  None for anything
    else (an alias or sigil at the top or in a list, deeper nesting).
    """
    if type(binding) is not dict or is_sigil(binding) \
            or (len(binding) == 1 and binding.get("$alias") is not None):
        return None
    out: dict[str, Any] = {}
    for key, value in binding.items():
        t = type(value)
        if t is list:
            if not value:
                out[key] = value  # shared, like an empty dict
                continue
            items = value.copy()
            for i, item in enumerate(items):
                ti = type(item)
                if ti is dict:
                    alias = item.get("$alias") if len(item) == 1 else None
                    if alias is None:
                        return None
                    items[i] = on_alias(alias)
                elif ti is list:
                    return None
            out[key] = items
        elif t is dict:
            if value:
                return None
            out[key] = value  # an empty dict below the top is shared
        else:
            out[key] = value
    return out


def _concrete_config(config: Any, concrete_input: Callable[[str], str]) -> Any:
    """``config`` with each ``$alias`` of its binding replaced by the concrete id it names.

    A factory value in it counts by its implementation (and curried values).
    """
    if type(config) is not dict or "binding" not in config:
        return config

    def concrete(alias: dict[str, Any]) -> dict[str, str]:
        path = alias["path"]
        token = alias["cell"] + "/" + "/".join(map(str, path)) if path else alias["cell"]
        return {"$in": concrete_input(token)}

    def factory(sigil: dict[str, Any]) -> Any:
        body = sigil["/"].get("nodeFactory@1")
        if not isinstance(body, dict):
            return sigil  # a link stays as it is
        module = body.get("module") or {}
        return {"$factory": module.get("hash") or module.get("ref"),
                "curried": body.get("curried") or []}

    return {**config, "binding": _rewrite_aliases(config["binding"], concrete, factory)}


def plan(
    rt: Host, graph: dict[str, Any], result_id: str, space: str
) -> tuple[dict[str, str], list[dict[str, Any]], list[dict[str, Any]]]:
    """Concrete ids, node records and snapshot cells for one instance."""
    ids: dict[str, str] = {"self": result_id}
    arg_components = {"parent": result_id, "helper": "argument"}
    ids["argument"] = derive_id(arg_components)
    snap_cells: list[dict[str, Any]] = [
        {"id": ids["argument"], "name": "argument", "capability": "cell", "cause": arg_components},
    ]
    debug = rt.debug
    if debug:
        cause_log.debug("cause argument argument -> %s %s", ids["argument"], arg_components,
                        extra={"cell_id": ids["argument"], "components": arg_components})
    concrete: dict[str, str] = {}  # input token -> concrete id (thousands of cells share a few)

    def concrete_input(token: str) -> str:
        found = concrete.get(token)
        if found is None:
            found = concrete[token] = _concrete_input(token, ids)
        return found

    #: a cell's concrete cause inputs, by key: its node's record shares the list when equal
    cause_inputs: dict[str, list[str]] = {}
    for cell in graph["cells"]:
        if "cause" in cell:
            components: dict[str, Any] = {"parent": result_id, "cause": cell["cause"]}
        else:
            inputs = cell["inputs"].copy()  # an exact-size list (sorted() over-allocates)
            for j, token in enumerate(inputs):
                inputs[j] = concrete_input(token)
            inputs.sort()
            cause_inputs[cell["key"]] = inputs
            components = {
                "parent": result_id,
                "helper": cell["helper"],
                "impl": cell["impl"],
                "inputs": inputs,
                "index": cell["index"],
                "config": _concrete_config(cell["config"], concrete_input),
            }
            if "bound" in cell:  # the name that told identical siblings apart (SPEC §6)
                components["bound"] = cell["bound"]
        cell_id = derive_id(components)
        ids[cell["key"]] = cell_id
        if debug:
            cause_log.debug("cause %s %s -> %s %s", cell.get("name") or cell["key"],
                            cell["helper"], cell_id, components,
                            extra={"cell_id": cell_id, "components": components})
        # no ``"name": None``: the snapshot reads it as absent, and one key fewer keeps
        # the entry a small dict (5 keys: 184 bytes, 6: 272)
        name = cell.get("name")
        entry: dict[str, Any] = {"id": cell_id, "name": name} if name is not None \
            else {"id": cell_id}
        entry["helper"] = cell["helper"]
        entry["capability"] = "stream" if cell.get("stream") else "cell"
        entry["cause"] = components
        if cell.get("schema") is not None:
            entry["schemaHash"] = _schema_hash(cell["schema"])
        snap_cells.append(entry)
    records: list[dict[str, Any]] = []
    shared_links: dict[tuple[str, ...], dict[str, Any]] = {}
    by_key = {c["key"]: c for c in graph["cells"]}
    for node in graph["nodes"]:
        out_id = ids[node["outputs"]]
        cell = by_key[node["outputs"]]
        same = cause_inputs.get(node["outputs"])
        if same is not None and _whole_and_distinct(same):
            node_inputs = same  # whole-cell inputs, each once: the cause's list (never edited)
        else:
            node_inputs = sorted(
                {concrete_input(i).split("/", 1)[0] for i in cell.get("inputs", [])})
        record: dict[str, Any] = {
            "id": "node:" + out_id[3:],
            "helper": node["helper"],
            "name": node.get("name"),
            "module": node["module"],
            "inputs": node_inputs,
            "outputs": [out_id],
            "bindings": concretize(node["inputs"], ids, space, shared_links),
        }
        if node.get("config") is not None:
            record["config"] = node["config"]
        records.append(record)
    return ids, records, snap_cells


def _whole_and_distinct(ids: list[str]) -> bool:
    """Whether a sorted list of concrete inputs names whole cells (no path), each once."""
    if len(ids) == 1:
        return "/" not in ids[0]
    previous = None
    for i in ids:
        if "/" in i or i == previous:
            return False
        previous = i
    return True


_schema_hashes: dict[str, str] = {}


_schema_hashes_by_object: dict[int, tuple[Any, str]] = {}


def _schema_hash(schema: Any) -> str:
    """A short content hash of a schema, cached by its canonical text.

    Also cached by object for the schemas of a pattern's graph (read-only, and
    met once per cell on every start), so a large start serialises each once.
    """
    known = _schema_hashes_by_object.get(id(schema))
    if known is not None and known[0] is schema:
        return known[1]
    text = schemas.canonical(schema)
    found = _schema_hashes.get(text)
    if found is None:
        found = _schema_hashes[text] = str(create_ref({}, {"schema": schema}))[-16:]
    if len(_schema_hashes_by_object) > 65_536:
        _schema_hashes_by_object.clear()
    _schema_hashes_by_object[id(schema)] = (schema, found)
    return found


def extract_defaults(schema: Any) -> Any:
    """The default argument a schema implies (nested objects included)."""
    schema = schemas.resolve_ref(schema, schema)
    if not isinstance(schema, dict):
        return None
    if "default" in schema:
        return schema["default"]
    props = schema.get("properties")
    if not isinstance(props, dict):
        return None
    out = {}
    for key, sub in props.items():
        value = extract_defaults(schemas.resolve_ref(sub, schema))
        if value is not None:
            out[key] = value
    return out or None


def merge_under(defaults: Any, given: Any) -> Any:
    """``given`` wins; dicts merge key by key; links count as values."""
    if given is None:
        return defaults
    if isinstance(defaults, dict) and isinstance(given, dict) and not is_link(given):
        out = dict(defaults)
        for k, v in given.items():
            out[k] = merge_under(defaults.get(k), v)
        return out
    return given


def instance_count_id(space: str) -> str:
    """The document counting the space's instance log entries."""
    return derive_id({"instances": space, "log": "count"})


def instance_entry_id(space: str, index: int) -> str:
    """The ``index``-th entry of the space's instance log: a link to a result."""
    return derive_id({"instances": space, "log": index})


def space_root_id(space: str) -> str:
    return derive_id(space)
