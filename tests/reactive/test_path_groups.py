"""cellkernel.reactive.path_groups: which read paths a write can have changed (issue 20).

``PathGroups.reached`` narrows the paths a notify compares to those a write went
through.  It may name too many (each is still compared by value), never too few:
the oracle is every reader path whose value differs before and after, over
random documents, random reader paths (with the other spellings of an index,
``"length"`` and paths that lead nowhere) and random writes made with the
store's own ``set_path`` (replacing containers, padding a list past its end,
cutting it short as ``Cell.remove`` does).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from cellkernel.data.values import MISSING, Path, get_path, json_equal, paths_overlap, set_path
from cellkernel.reactive.path_groups import PathGroups, path_groups


def _document(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth >= 3 or roll < 0.3:
        return rng.choice([0, 1, 2, "a", None, True])
    if roll < 0.65:
        return [_document(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = rng.sample(["a", "b", "c", "3"], rng.randint(0, 4))
    return {k: _document(rng, depth + 1) for k in keys}


def _paths(value: Any) -> list[Path]:
    """Every path to a value inside ``value`` (iterative)."""
    found: list[Path] = [()]
    stack: list[tuple[Path, Any]] = [((), value)]
    while stack:
        path, node = stack.pop()
        items = (node.items() if type(node) is dict
                 else enumerate(node) if type(node) is list else ())
        for key, child in items:
            found.append((*path, key))
            stack.append(((*path, key), child))
    return found


def _respell(rng: random.Random, path: Path) -> Path:
    """``path`` with an index spelled otherwise, ``length`` or a dead end, at random."""
    parts = list(path)
    roll = rng.random()
    if parts and roll < 0.3:
        i = rng.randrange(len(parts))
        part = parts[i]
        if type(part) is int:
            parts[i] = str(part)
        elif type(part) is str and part.isdigit():
            parts[i] = int(part)
    elif roll < 0.45:
        parts.append("length")
    elif roll < 0.6:
        ends: list[str | int] = [0, 5, -1, "zz"]
        parts.append(rng.choice(ends))
    return tuple(parts)


def _write(rng: random.Random, before: Any) -> tuple[Any, list[Path]]:
    """A write as a transaction journals it: the value after, and the paths written."""
    existing = [p for p in _paths(before) if p]
    roll = rng.random()
    lists = [p for p in _paths(before) if type(get_path(before, p)) is list and get_path(before, p)]
    if lists and roll < 0.15:  # ``Cell.remove`` of the last element: cut short at that index
        path = rng.choice(lists)
        at = len(get_path(before, path)) - 1
        return set_path(before, path, get_path(before, path)[:at]), [(*path, at)]
    if lists and roll < 0.3:  # ``Cell.push``: a write at the index past the end
        path = rng.choice(lists)
        return set_path(before, (*path, len(get_path(before, path))), 9), [
            (*path, len(get_path(before, path)))]
    if existing and roll < 0.8:
        path = rng.choice(existing)
        if rng.random() < 0.3:
            below: list[str | int] = ["a", 0, 4]
            path = (*path, rng.choice(below))  # below it: maybe replacing a scalar
    else:
        second: list[str | int] = [0, 3, "b"]
        path = (rng.choice(["a", "new"]), rng.choice(second))  # maybe padding
    value = rng.choice([7, "x", None, [1], {"a": 1}, _document(rng, 2)])
    return set_path(before, path, value), [path]


def _groups(readers: list[Path]) -> PathGroups:
    groups = path_groups({object.__new__(_Reader): [p] for p in readers})
    assert groups is not None
    return groups


class _Reader:
    """An action's stand-in: ``path_groups`` asks only whether it is incremental."""

    changed = None


@pytest.mark.parametrize("seed", range(40))
def test_every_read_path_whose_value_changed_is_reached(seed: int) -> None:
    rng = random.Random(seed)
    before = {"xs": _document(rng), "a": _document(rng), "3": [0, 1]}
    for _ in range(12):
        readers = sorted({_respell(rng, p) for p in _paths(before)}
                         | {_respell(rng, p) for p in _paths(before)}, key=repr)
        after, written = _write(rng, before)
        reached = _groups(readers).reached(before, after, written)
        changed = {p for p in readers
                   if not json_equal(get_path(before, p), get_path(after, p))}
        if reached is not None:
            missed = changed - set(reached)
            assert not missed, (before, after, written, missed)
            assert len(reached) == len(set(reached))  # each compared once
        before = after


def test_a_one_element_write_reaches_only_that_element_and_what_holds_it() -> None:
    n = 500
    readers: list[Path] = [("xs", i) for i in range(n)] + [("xs",), ("xs", "length"), ("n",)]
    groups = _groups(readers)
    before = {"xs": list(range(n)), "n": 1}
    after = set_path(before, ("xs", 7), -1)
    assert sorted(map(repr, groups.reached(before, after, [("xs", 7)]) or ())) == sorted(
        [repr(("xs",)), repr(("xs", 7))])


def test_a_push_reaches_the_new_index_and_the_length() -> None:
    readers: list[Path] = [("xs", i) for i in range(40)] + [("xs", "length"), ("xs", "20")]
    groups = _groups(readers)
    before = {"xs": list(range(20))}
    after = set_path(before, ("xs", 20), 5)
    assert set(groups.reached(before, after, [("xs", 20)]) or ()) == {
        ("xs", 20), ("xs", "20"), ("xs", "length")}


def test_a_length_moved_far_compares_everything() -> None:
    groups = _groups([("xs", i) for i in range(200)])
    before: dict[str, Any] = {"xs": []}
    after = set_path(before, ("xs", 150), 1)  # padded with 150 Nones
    assert groups.reached(before, after, [("xs", 150)]) is None
    assert get_path(after, ("xs", 3)) is None and get_path(before, ("xs", 3)) is MISSING


def test_a_replaced_container_reaches_all_below_it() -> None:
    readers: list[Path] = [("a", i) for i in range(20)] + [("b",)]
    groups = _groups(readers)
    before = {"a": list(range(20)), "b": 0}
    after = set_path(before, ("a", "k"), 1)  # the list becomes {"k": 1}
    assert set(groups.reached(before, after, [("a", "k")]) or ()) == set(readers) - {("b",)}


@pytest.mark.parametrize("seed", range(10))
def test_groups_kept_up_to_date_equal_groups_made_afresh(seed: int) -> None:
    """Readers added and removed one by one (``add``, ``remove``, as a map's re-subscribing
    reader does) leave the same groups, and the same reached paths, as making them anew."""
    rng = random.Random(seed)
    doc = {"xs": list(range(8)), "a": {"b": [1, 2]}}
    pool: list[Path] = [p for p in _paths(doc)] + [("xs", "3"), ("xs", "length"), ("zz",)]
    readers = [object.__new__(_Reader) for _ in range(12)]
    triggers: dict[Any, list[Path]] = {}
    kept = _groups([])
    kept.reached(doc, doc, [()])  # the trie exists: it must follow every add and remove too
    for _ in range(200):
        reader = rng.choice(readers)
        if reader in triggers and rng.random() < 0.5:
            kept.remove(reader, triggers.pop(reader))
        elif reader not in triggers:
            paths = rng.sample(pool, rng.randint(1, 3))
            triggers[reader] = paths
            assert kept.add(reader, paths)
        fresh = path_groups(triggers)
        assert fresh is not None
        assert {p: set(r) for p, r in kept.by_path.items()} == {
            p: set(r) for p, r in fresh.by_path.items()}
        after, written = _write(rng, doc)
        assert sorted(map(repr, kept.reached(doc, after, written) or ())) == sorted(
            map(repr, fresh.reached(doc, after, written) or ()))
    for reader, paths in list(triggers.items()):
        kept.remove(reader, paths)
    assert kept.by_path == {} and kept._trie == {}  # every node it alone kept is gone


def _spelled(path: Path) -> tuple[Any, ...]:
    return tuple(int(p) if type(p) is str and p.isdigit() else p for p in path)


@pytest.mark.parametrize("seed", range(20))
def test_overlapping_names_exactly_the_prefixes_and_extensions(seed: int) -> None:
    """``overlapping(path)``: the grouped paths that are a prefix of ``path`` or extend
    it, an index's spellings alike (the oracle: ``paths_overlap`` of the spelled paths),
    for readers and for writers (which may be incremental actions), after random
    adds and removes."""
    rng = random.Random(seed)
    doc = _document(rng)
    pool = [_respell(rng, p) for p in _paths(doc) for _ in range(2)] + [("x", 3), ("9",)]
    members: dict[Any, list[Path]] = {}
    groups = PathGroups({})

    class Incremental:
        changed: set[Any] = set()

    for _ in range(60):
        if members and rng.random() < 0.3:
            member = rng.choice(list(members))
            groups.remove(member, members.pop(member))
        else:
            member = Incremental()
            paths = list(dict.fromkeys(rng.choice(pool) for _ in range(rng.randint(1, 2))))
            assert groups.add(member, paths, reader=False)
            members[member] = paths
        for probe in rng.sample(pool, 4):
            expected = {p for paths in members.values() for p in paths
                        if paths_overlap(_spelled(p), _spelled(probe))}
            assert set(groups.overlapping(probe)) == expected
    assert not PathGroups({}).add(Incremental(), [("a",)])  # (a reader: not grouped)
