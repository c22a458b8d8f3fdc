"""SQLite commits of values the transaction layer owns (``documents.encode_owned``).

An element write to a large stored list builds its new value from the store's
own JSON plus a checked scalar, so ``SqliteStore.commit_owned`` encodes its text
without the decode-and-compare round trip that guards a caller's value.  These
tests check that the shortcut is taken only for such values, that what lands
is what a fresh process reads back, and that bad input is still refused whole.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from cellkernel import lift, pattern
from cellkernel.runtime import Runtime
from cellkernel.store import documents


def _decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the round trips' decodes from now on."""
    calls: list[int] = []
    loads = documents.loads

    def counting(text: str) -> Any:
        calls.append(len(text))
        return loads(text)

    monkeypatch.setattr(documents, "loads", counting)
    return calls


def test_element_writes_skip_the_round_trip_and_read_back_in_a_fresh_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"sqlite:///{tmp_path / 'owned.db'}"
    rt = Runtime(store=url)
    cell = rt.get_cell("big")
    oracle: list[Any] = list(range(2000))
    cell.set(oracle)
    decodes = _decodes(monkeypatch)
    rng = random.Random(5)
    for _ in range(50):
        k = rng.randrange(len(oracle))
        value = rng.choice([rng.randint(-9, 9), "é", True, None])
        cell.key(k).set(value)
        oracle[k] = value
    cell.push("tail")
    oracle.append("tail")
    assert decodes == []  # every write above was owned: no decode of 2 000 elements
    cell.set([{"a": (1, 2)}])  # a caller's container: checked by the round trip
    assert decodes
    cell.set(oracle)
    rt.close()
    fresh = Runtime(store=url)
    assert fresh.get_cell("big").get() == oracle
    fresh.close()


def test_a_lone_surrogate_in_an_element_write_is_refused_and_nothing_lands(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'surrogate.db'}"
    rt = Runtime(store=url)
    cell = rt.get_cell("big")
    cell.set(["a", "b", "c"])
    with pytest.raises(ValueError, match="lone surrogate"):
        cell.key(1).set("\ud800")
    assert cell.get() == ["a", "b", "c"]
    rt.close()
    fresh = Runtime(store=url)
    assert fresh.get_cell("big").get() == ["a", "b", "c"]
    fresh.close()


@lift
def spread(n: int) -> list[int]:
    return [n * i for i in range(500)]


@pattern
def Spread(n: int = 1) -> Any:
    return {"n": n, "out": spread(n)}


def test_a_settles_derived_list_lands_without_the_round_trip_and_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The write-back layer's documents are its own copies (``owned_parts`` checked the
    function's list): the group commit encodes them without a decode."""
    url = f"sqlite:///{tmp_path / 'landed.db'}"
    rt = Runtime(store=url)
    result = rt.run(Spread, {"n": 1}, cause="spread")
    decodes = _decodes(monkeypatch)
    for n in (2, 3, 4):
        result.key("n").set(n)
        assert result.key("out").get() == [n * i for i in range(500)]
    assert not [size for size in decodes if size > 1000]  # no 500-element decode
    rt.close()
    fresh = Runtime(store=url)
    assert fresh.run(Spread, {"n": 4}, cause="spread").key("out").get() == [
        4 * i for i in range(500)]
    fresh.close()
