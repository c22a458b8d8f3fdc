"""JSON values: normalisation on write, path access, and strict equality.

Every value that reaches storage passes through :func:`to_json_value`, so the
rest of the runtime can assume plain JSON (dict/list/str/int/float/bool/None).
Normalisation is iterative because nesting depth comes from user data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias

JSON: TypeAlias = bool | int | float | str | list[Any] | dict[str, Any] | None
Path: TypeAlias = tuple[str | int, ...]

_SCALARS: Final = (str, int, bool, type(None))
#: Exact types of JSON scalars other than null, for ``type(v) in SCALAR_TYPES`` hot-path tests.
SCALAR_TYPES: Final = (int, float, str, bool)
#: The deepest nesting a stored value may have; deeper values are refused at once, naming
#: where the limit was crossed (stores encode and decode any depth without recursion; this
#: bounds the work a single write can cost every reader).
MAX_DEPTH: Final = 10_000
#: A user value equal to this would read back as a stream (``reserved=True`` refuses it).
_STREAM_KEY: Final = "$stream"


class _Missing:
    """Marks an absent value (distinct from JSON null) while walking paths."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False


MISSING: Final = _Missing()


def format_path(path: Sequence[str | int]) -> str:
    """Render a path for error messages: ``/a/0/b`` (``/`` for the root; long ones shortened)."""
    if len(path) > 40:
        head = "/".join(str(p) for p in path[:10])
        tail = "/".join(str(p) for p in path[-10:])
        return f"/{head}/...({len(path) - 20} more)/{tail}"
    return "/" + "/".join(str(p) for p in path)


def _check_text(text: str, where: Any, at: Path, what: str = "string") -> None:
    """Refuse a lone surrogate: it is not a Unicode character, and UTF-8 cannot hold it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"cannot store a {what} with a lone surrogate {text[exc.start]!r} at "
            f"{format_path((*at, *_unwind(where)))}: it is not a Unicode character"
        ) from None


def _leaf(value: Any, path: list[str | int], hook: Callable[[Any], Any] | None) -> tuple[bool, Any]:
    """Normalise a non-container; return (is_container_result, value)."""
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ValueError(f"cannot store {value!r} at {format_path(path)}: not a finite number")
        if value == 0.0:
            return False, 0
        if value.is_integer() and abs(value) < 2**53:
            return False, int(value)
        return False, value
    if hook is not None:
        converted = hook(value)
        if converted is not NotImplemented:
            return True, converted
    to_json = getattr(value, "__ck_to_json__", None)
    if to_json is not None:
        return True, to_json()
    dump = getattr(value, "model_dump", None)
    if dump is not None and callable(dump):
        return True, dump(mode="json")
    raise ValueError(
        f"cannot store a {type(value).__name__} at {format_path(path)}: only JSON values "
        "(dict, list, str, int, float, bool, None), cells and pydantic models can be stored"
    )


def to_json_value(
    value: Any,
    hook: Callable[[Any], Any] | None = None,
    *,
    at: Sequence[str | int] = (),
    reserved: bool = False,
    max_depth: int | None = None,
) -> JSON:
    """Return ``value`` as plain JSON, or raise ``ValueError`` naming the bad path.

    ``-0.0`` becomes ``0`` and integral floats become ints (as in JavaScript,
    where they are the same number); tuples become lists; pydantic models are
    dumped in JSON mode; objects with ``__ck_to_json__`` (cells, factories)
    become their sigil.  ``hook(value)`` may convert other objects first and
    returns ``NotImplemented`` to decline.  ``at`` is where the value is being
    written (error paths start there).  Refused: NaN and infinities, lone
    surrogates, nesting deeper than ``max_depth`` (user writes: ``MAX_DEPTH``), and
    with ``reserved`` (user data) the stream marker ``{"$stream": true}``, which
    would read back as a stream.
    """
    base: Path = tuple(at)
    t = type(value)
    if t is int or t is bool or value is None:
        return value  # type: ignore[no-any-return]
    if t is str:
        if not value.isascii():
            _check_text(value, None, base)
        return value  # type: ignore[no-any-return]
    root: list[Any] = [None]
    # Entries are (container, key, value, where); ``where`` is a parent-linked
    # (parent_where, key, depth) chain, so no path is copied per child (linear in depth).
    # An _EXIT entry closes a container: ``active`` holds the containers on the
    # current path, so a value that contains itself is refused, not looped over.
    stack: list[tuple[Any, Any, Any, Any]] = [(root, 0, value, None)]
    active: set[int] = set()
    while stack:
        parent, key, item, where = stack.pop()
        if parent is _EXIT:
            active.discard(key)
            continue
        t = type(item)
        if t is int or t is bool or item is None:
            parent[key] = item
            continue
        if t is str:
            if not item.isascii():
                _check_text(item, where, base)
            parent[key] = item
            continue
        if t is dict or t is list or t is tuple:
            ident = id(item)
            if ident in active:
                raise ValueError(
                    "cannot store a value that contains itself at "
                    f"{format_path((*base, *_unwind(where)))}"
                )
            depth = where[2] + 1 if where is not None else 1
            if max_depth is not None and depth > max_depth:
                raise ValueError(
                    f"cannot store a value nested more than {max_depth} levels deep at "
                    f"{format_path((*base, *_unwind(where)))}"
                )
            active.add(ident)
            stack.append((_EXIT, ident, None, None))
            if t is dict:
                if reserved and len(item) == 1 and item.get(_STREAM_KEY) is True:
                    raise ValueError(
                        f"cannot store {{'$stream': True}} at "
                        f"{format_path((*base, *_unwind(where)))}: it is the stream marker "
                        "(a stream is made by a handler), and would read back as a Stream"
                    )
                out: dict[str, Any] = {}
                parent[key] = out
                for k, v in item.items():
                    if type(k) is not str:
                        raise ValueError(
                            f"cannot store a {type(k).__name__} key {k!r} at "
                            f"{format_path((*base, *_unwind(where)))}: object keys must be strings"
                        )
                    if not k.isascii():
                        _check_text(k, where, base, "key")
                    out[k] = None  # placeholder: keep the key order of the input
                    stack.append((out, k, v, (where, k, depth)))
            else:
                lst: list[Any] = [None] * len(item)
                parent[key] = lst
                for i, v in enumerate(item):
                    stack.append((lst, i, v, (where, i, depth)))
            continue
        if t is float and item - item == 0.0:  # finite: normalise without building a path
            parent[key] = (
                0 if item == 0.0 else int(item) if item.is_integer() and abs(item) < 2**53 else item
            )
            continue
        if isinstance(item, dict) and not hasattr(item, "__ck_to_json__"):
            # dict subclasses (e.g. documents read through a link) go to the hook first
            converted = hook(item) if hook is not None else NotImplemented
            if converted is NotImplemented:
                converted = dict(item)
            stack.append((parent, key, converted, where))
            continue
        if isinstance(item, bool | int | str) and t not in _SCALARS:
            # enum members and other subclasses: store the plain value
            stack.append((parent, key, _plain_scalar(item), where))
            continue
        is_new, converted = _leaf(item, [*base, *_unwind(where)], hook)
        if is_new:
            stack.append((parent, key, converted, where))
        else:
            parent[key] = converted
    return root[0]  # type: ignore[no-any-return]


_EXIT: Final = object()


def _unwind(where: Any) -> list[str | int]:
    """The path a parent-linked ``(parent, key, depth)`` chain stands for (for messages)."""
    path: list[str | int] = []
    while where is not None:
        where, key, _depth = where
        path.append(key)
    path.reverse()
    return path


def _plain_scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    return str(value)


def get_path(value: Any, path: Sequence[str | int]) -> Any:
    """The raw value at ``path`` inside ``value``, or ``MISSING``."""
    if not path:
        return value
    for key in path:
        if type(value) is dict:
            value = value.get(key, MISSING)
        elif type(value) is list:
            if type(key) is int:
                if 0 <= key < len(value):
                    value = value[key]
                else:
                    return MISSING
            elif type(key) is str and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            elif key == "length":
                value = len(value)
            else:
                return MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def set_path(root: Any, path: Sequence[str | int], new: Any) -> Any:
    """Return a copy of ``root`` with ``new`` at ``path``, copying only the spine.

    Stored documents are shared between transactions, so they are never
    mutated in place.  Missing containers are created (a list for an int key,
    a dict otherwise).
    """
    if not path:
        return new
    spine: list[Any] = []
    node = root
    for key in path[:-1]:
        spine.append(node)
        child = get_path(node, (key,)) if node is not None else MISSING
        node = child
    spine.append(node)
    result = new
    for depth in range(len(path) - 1, -1, -1):
        key = path[depth]
        container = spine[depth]
        if type(container) is list and (type(key) is int or (type(key) is str and key.isdigit())):
            index = int(key)
            copy = list(container)
            if index >= len(copy):
                copy.extend([None] * (index + 1 - len(copy)))
            copy[index] = result
            result = copy
        elif type(container) is dict:
            copy_d = dict(container)
            copy_d[str(key)] = result
            result = copy_d
        elif type(key) is int:
            copy = [None] * (key + 1)
            copy[key] = result
            result = copy
        else:
            result = {str(key): result}
    return result


def delete_path(root: Any, path: Sequence[str | int]) -> Any:
    """Return a copy of ``root`` without the key at ``path`` (no-op when absent)."""
    if not path:
        return None
    parent = get_path(root, path[:-1])
    key = path[-1]
    if type(parent) is dict and key in parent:
        copy = dict(parent)
        del copy[key]
        return set_path(root, path[:-1], copy)
    return root


def json_equal(a: Any, b: Any) -> bool:
    """Strict JSON equality: ``True`` never equals ``1``, at any depth (iterative)."""
    if a is b:
        return True
    t = type(a)
    if t is not type(b):
        return False
    if t is not dict and t is not list:
        return bool(a == b)  # scalars: no stack needed (hot: every trigger check)
    try:
        # strict equality implies ``==``, so ``!=`` (C, skips shared parts) settles most
        # differences at once: a 10 000-element list with one element replaced
        if a != b:
            return False
    except RecursionError:  # deeper than C's comparison may go: the walk below decides
        return _strict_walk(a, b)
    # Equal by ``==``: only a kind can differ now (``True == 1``, ``1 == 1.0``), so the
    # walk compares types, in C a list at a time, and descends into containers only.
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is list:
            kinds = list(map(type, x))
            if kinds != list(map(type, y)):
                return False
            if dict in kinds or list in kinds:
                stack.extend((v, w) for v, w in zip(x, y, strict=True)
                             if (type(v) is dict or type(v) is list) and v is not w)
        else:  # dicts: the same keys (``==``), each value's kind compared
            for k, v in x.items():
                w = y[k]
                tv = type(v)
                if tv is not type(w):
                    return False
                if (tv is dict or tv is list) and v is not w:
                    stack.append((v, w))
    return True


def _strict_walk(a: Any, b: Any) -> bool:
    """``json_equal`` of containers too deep for C's ``==``: every part compared (iterative)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y:
            continue
        t = type(x)
        if t is not type(y):
            return False
        if t is dict:
            if len(x) != len(y):
                return False
            for k, v in x.items():
                w = y.get(k, MISSING)
                if v is w:
                    continue
                tv = type(v)
                if tv is not type(w):  # also a missing key (MISSING is never stored)
                    return False
                if tv is dict or tv is list:
                    stack.append((v, w))
                elif v != w:  # scalars compared here, not pushed
                    return False
        elif t is list:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


def paths_overlap(a: Sequence[str | int], b: Sequence[str | int]) -> bool:
    """True when one path is a prefix of the other, an index's spellings alike
    (``("3",)`` and ``(3,)`` name one element, as ``get_path`` reads them)."""
    n = min(len(a), len(b))
    if tuple(a[:n]) == tuple(b[:n]):
        return True
    return all(x == y or as_index(x) == as_index(y) for x, y in zip(a[:n], b[:n], strict=True))


def as_index(part: Any) -> Any:
    """A path part as an index names it: a str of digits as the int (``"3"`` is ``3``)."""
    return int(part) if type(part) is str and part.isdigit() else part
