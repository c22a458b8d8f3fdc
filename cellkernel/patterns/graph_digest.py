"""The content hash of a pattern graph: SHA-256 over its canonical JSON text."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from cellkernel.data.values import to_json_value


def _digest(graph: Any) -> str:
    """SHA-256 over the graph as stored (2.0 -> 2), so a graph read back hashes the same."""
    text = json.dumps(to_json_value(graph), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _graph_digest(graph: dict[str, Any], loose: Sequence[int]) -> str:
    """``_digest(graph)`` for a graph ``_trace`` just built, without the normalised copy.

    Copying the whole graph through ``to_json_value`` was most of the cost of
    defining a large pattern.  The bindings (the bulk) come from ``bind`` and are
    plain JSON already; when the other parts that may hold non-canonical values
    (schemas, modules, configs, causes, initial values) are plain too, the graph
    dumps to the same text as its normalised copy.  Otherwise: the generic path.
    """
    if _graph_is_plain(graph, loose):
        return _plain_digest(graph)
    return _digest(graph)


# no cycles to look for: bind makes fresh trees, and _walk_plain refuses a container met twice
_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False).encode


_CHUNK = 100


def _plain_digest(graph: dict[str, Any]) -> str:
    """SHA-256 of ``json.dumps(graph, sort_keys=True, separators=(",", ":"))``, in pieces.

    One ``json.dumps`` of a 100 000-node graph builds a 50 MB text out of
    millions of small strings, and took twice as long as encoding the node and
    cell lists a hundred at a time and feeding each piece to the hash.
    """
    digest = hashlib.sha256()
    opening = "{"
    for key in sorted(graph):
        value = graph[key]
        digest.update(f"{opening}{_encode(key)}:".encode())
        opening = ","
        if type(value) is list and len(value) > _CHUNK:
            digest.update(b"[")
            for start in range(0, len(value), _CHUNK):
                if start:
                    digest.update(b",")
                # the items of one piece, without its brackets
                digest.update(memoryview(_encode(value[start:start + _CHUNK]).encode())[1:-1])
            digest.update(b"]")
        else:
            digest.update(_encode(value).encode())
    digest.update(b"}")
    return digest.hexdigest()


def _graph_is_plain(graph: dict[str, Any], loose: Sequence[int]) -> bool:
    """Whether ``to_json_value(graph)`` equals ``graph`` (trusting the bindings ``bind`` made)."""
    ok: set[int] = set()  # containers found plain: the 10 000 nodes of a lift share one module
    for key in ("name", "argumentSchema", "resultSchema", "initial"):
        if not _is_plain(graph[key], ok):
            return False
    unchecked = set(loose)
    for i, node in enumerate(graph["nodes"]):
        trusted = node["inputs"] if i not in unchecked else None
        for value in node.values():
            if type(value) is str or value is trusted or id(value) in ok:
                continue
            if not _is_plain(value, ok):
                return False
    for cell in graph["cells"]:
        for value in cell.values():
            t = type(value)
            if t is str or t is int or value is None or id(value) in ok:
                continue
            if t is list:  # the input keys
                for item in value:
                    if type(item) is not str:
                        break
                else:
                    continue
            if not _is_plain(value, ok):
                return False
    return True


def _is_plain(value: Any, ok: set[int]) -> bool:
    """Whether ``to_json_value(value)`` equals ``value``; ``ok`` holds containers found plain."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return True
    if t is float:
        return _plain_float(value)
    if t is not dict and t is not list:
        return False
    if id(value) in ok:
        return True
    if not _walk_plain(value):
        return False
    ok.add(id(value))  # the graph keeps it alive (and its id unique) while the hash is made
    return True


class _Leave:
    """A stack entry of ``_walk_plain``: the walk has left the container ``ident``."""

    __slots__ = ("ident",)

    def __init__(self, ident: int) -> None:
        self.ident = ident


def _walk_plain(value: dict[str, Any] | list[Any]) -> bool:
    """Whether ``value`` is plain JSON; a container inside itself is not (shared ones are).

    A builder frame shares one alias object among the bindings that name the same
    cell, so a container met again beside itself is walked once; one met again
    inside itself is a cycle, left to the generic walk (which refuses it).
    """
    stack: list[Any] = [value]
    active: set[int] = set()  # the containers on the current path
    done: set[int] = set()  # the containers found plain
    while stack:
        v = stack.pop()
        t = type(v)
        if t is _Leave:
            active.discard(v.ident)
            done.add(v.ident)
        elif t is dict or t is list:
            ident = id(v)
            if ident in done:
                continue
            if ident in active:  # cyclic: leave it to the generic walk
                return False
            active.add(ident)
            stack.append(_Leave(ident))
            if t is dict:
                for k in v:
                    if type(k) is not str:
                        return False
                stack.extend(v.values())
            else:
                stack.extend(v)
        elif t is float:
            if not _plain_float(v):
                return False
        elif not (t is str or t is int or t is bool or v is None):
            return False
    return True


def _plain_float(x: float) -> bool:
    """``to_json_value`` refuses non-finite floats and turns 0.0 and integral ones into ints."""
    return x - x == 0.0 and x != 0.0 and not (x.is_integer() and abs(x) < 2**53)
