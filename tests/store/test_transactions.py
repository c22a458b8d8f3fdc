"""cellkernel.store.transactions (SPEC §2).

Read journal, working copies, one write space, CAS commit.
"""

from __future__ import annotations

import pickle
from typing import Any, cast

import pytest
from helpers.core import OTHER_SPACE, store_state
from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.data.links import make_link
from cellkernel.data.values import MISSING
from cellkernel.errors import ConflictError, TransactionClosedError, WriteIsolationError
from cellkernel.runtime import Runtime
from cellkernel.store.documents import Document
from cellkernel.store.memory import MemoryStore
from cellkernel.store.transactions import WRITTEN, Transaction


def _seed(rt: Runtime, space: str, entity_id: str, value: object) -> None:
    tx = Transaction(rt.store)
    tx.write(space, entity_id, (), value)
    tx.commit()


def test_reading_an_absent_document_gives_missing(rt: Runtime) -> None:
    tx = Transaction(rt.store)
    assert tx.read(rt.space, "of:nothing", ()) is MISSING
    assert tx.read(rt.space, "of:nothing", ("a",)) is MISSING
    assert not tx.exists(rt.space, "of:nothing")


def test_reads_are_journaled_with_their_paths(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", {"x": {"y": 1}})
    tx = Transaction(rt.store)
    assert tx.read(rt.space, "of:a", ("x", "y")) == 1
    assert tx.read(rt.space, "of:a", ("x",)) == {"y": 1}
    tx.read(rt.space, "of:a", ("z",), track=False)
    assert tx.reads == [(rt.space, "of:a", ("x", "y")), (rt.space, "of:a", ("x",))]

    untracked = Transaction(rt.store, track=False)
    untracked.read(rt.space, "of:a", ())
    assert untracked.reads == []


def test_own_writes_are_visible_inside_and_invisible_outside_until_commit(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", {"n": 1})
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", ("n",), 2)
    tx.write(rt.space, "of:new", ("list", 1), "b")
    assert tx.read(rt.space, "of:a", ("n",)) == 2
    assert tx.read(rt.space, "of:new", ()) == {"list": [None, "b"]}
    assert tx.exists(rt.space, "of:new")
    assert tx.writes == [(rt.space, "of:a", ("n",)), (rt.space, "of:new", ("list", 1))]

    other = Transaction(rt.store)
    assert other.read(rt.space, "of:a", ("n",)) == 1
    assert other.read(rt.space, "of:new", ()) is MISSING

    tx.commit()
    fresh = Transaction(rt.store)
    assert fresh.read(rt.space, "of:a", ("n",)) == 2
    assert fresh.read(rt.space, "of:new", ("list",)) == [None, "b"]


def test_writes_never_mutate_the_stored_document(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", {"n": 1, "keep": {"deep": [1]}})
    stored = rt.store.load(rt.space, "of:a")
    assert stored is not None
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", ("n",), 2)
    tx.write(rt.space, "of:a", ("keep", "deep", 0), 9)
    assert stored.value == {"n": 1, "keep": {"deep": [1]}}
    tx.abort()
    assert rt.store.load(rt.space, "of:a") == stored


def test_commit_returns_changes_and_bumps_versions(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", 1)
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), 2)
    tx.write(rt.space, "of:b", (), "new")
    changes = {c.entity_id: c for c in tx.commit()}
    assert tx.status == "committed"
    assert set(changes) == {"of:a", "of:b"}
    before = changes["of:a"].before
    assert before is not None and before.value == 1 and before.version == 1
    assert changes["of:a"].after.value == 2 and changes["of:a"].after.version == 2
    assert changes["of:b"].before is None and changes["of:b"].after.version == 1


def test_rewriting_the_same_value_commits_nothing(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", {"n": [1, 2]})
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), {"n": [1, 2]})
    assert tx.commit() == []
    stored = rt.store.load(rt.space, "of:a")
    assert stored is not None and stored.version == 1


@pytest.mark.parametrize(("stored", "written", "lands"), [
    (5, 5, False), ("a", "a", False), (None, None, False), (1.5, 1.5, False),
    (1, True, True), (True, 1, True), (0, False, True), (1, 1.0, True), (5, 6, True),
    (None, 0, True), ([1], 1, True), ({"a": 1}, None, True),
])
def test_a_scalar_write_lands_only_if_its_json_value_changed(
    rt: Runtime, stored: Any, written: Any, lands: bool
) -> None:
    """The commit's inline scalar check is ``json_equal``: ``True`` is not ``1``."""
    _seed(rt, rt.space, "of:a", stored)
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), written)
    changes = tx.commit()
    after = rt.store.load(rt.space, "of:a")
    assert after is not None and after.version == (2 if lands else 1)
    assert len(changes) == (1 if lands else 0)
    assert type(after.value) is type(written if lands else stored)


def test_an_unchanged_value_with_a_new_meta_or_source_still_lands(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", 5)
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), 5)
    tx.set_meta(rt.space, "of:a", "kind", "demo")
    assert len(tx.commit()) == 1
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), 5)
    tx.set_source(rt.space, "of:a", {"/": "src"})
    assert len(tx.commit()) == 1
    assert rt.store.load(rt.space, "of:a") == Document(5, {"/": "src"}, {"kind": "demo"}, 3)


def test_true_and_one_are_different_values(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", {"done": 1, "flags": [0]})
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), {"done": True, "flags": [False]})
    assert len(tx.commit()) == 1
    stored = rt.store.load(rt.space, "of:a")
    assert stored is not None and stored.value == {"done": True, "flags": [False]}
    value: Any = stored.value
    assert value["done"] is True and value["flags"][0] is False


def test_source_and_meta_are_written_with_the_document(rt: Runtime) -> None:
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), 1)
    tx.set_source(rt.space, "of:a", {"/": "src"})
    tx.set_meta(rt.space, "of:a", "kind", "demo")
    tx.set_meta(rt.space, "of:a", "gone", "x")
    tx.set_meta(rt.space, "of:a", "gone", None)
    tx.commit()
    assert rt.store.load(rt.space, "of:a") == Document(1, {"/": "src"}, {"kind": "demo"}, 1)


def test_a_transaction_reads_many_spaces_and_writes_one(rt: Runtime) -> None:
    _seed(rt, OTHER_SPACE, "of:other", "elsewhere")
    tx = Transaction(rt.store)
    assert tx.read(OTHER_SPACE, "of:other", ()) == "elsewhere"
    tx.write(rt.space, "of:a", (), tx.read(OTHER_SPACE, "of:other", ()))
    assert tx.write_space == rt.space
    tx.commit()
    stored = rt.store.load(rt.space, "of:a")
    assert stored is not None and stored.value == "elsewhere"


@pytest.mark.parametrize("operation", ["write", "set_source", "set_meta"])
def test_writing_a_second_space_raises_and_nothing_lands(rt: Runtime, operation: str) -> None:
    _seed(rt, rt.space, "of:a", 1)
    before = store_state(rt)
    with pytest.raises(WriteIsolationError, match="one space"), rt.edit() as tx:
        tx.write(rt.space, "of:a", (), 2)
        if operation == "write":
            tx.write(OTHER_SPACE, "of:b", (), 1)
        elif operation == "set_source":
            tx.set_source(OTHER_SPACE, "of:b", {"/": "x"})
        else:
            tx.set_meta(OTHER_SPACE, "of:b", "k", "v")
    assert tx.status == "aborted"
    assert store_state(rt) == before


def test_write_isolation_error_leaves_the_transaction_usable_in_its_space(rt: Runtime) -> None:
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), 1)
    with pytest.raises(WriteIsolationError):
        tx.write(OTHER_SPACE, "of:b", (), 1)
    assert tx.read(OTHER_SPACE, "of:b", ()) is MISSING
    tx.commit()
    assert rt.store.load(OTHER_SPACE, "of:b") is None
    stored = rt.store.load(rt.space, "of:a")
    assert stored is not None and stored.value == 1


def test_stale_basis_raises_conflict_and_nothing_lands(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", 0)
    first, second = Transaction(rt.store), Transaction(rt.store)
    first.write(rt.space, "of:a", (), first.read(rt.space, "of:a", ()) + 1)
    second.write(rt.space, "of:a", (), second.read(rt.space, "of:a", ()) + 10)
    second.write(rt.space, "of:b", (), "also written by the loser")
    first.commit()
    before = store_state(rt)
    with pytest.raises(ConflictError) as info:
        second.commit()
    assert (rt.space, "of:a") in info.value.conflicts
    assert second.status == "aborted"
    assert store_state(rt) == before
    stored = rt.store.load(rt.space, "of:a")
    assert stored is not None and stored.value == 1
    assert rt.store.load(rt.space, "of:b") is None


def test_a_document_only_read_is_part_of_the_basis(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:input", 1)
    tx = Transaction(rt.store)
    derived = tx.read(rt.space, "of:input", ()) * 2
    tx.write(rt.space, "of:output", (), derived)
    _seed(rt, rt.space, "of:input", 5)  # the input moves on before tx commits
    before = store_state(rt)
    with pytest.raises(ConflictError):
        tx.commit()
    assert store_state(rt) == before
    assert rt.store.load(rt.space, "of:output") is None


def test_creating_a_document_someone_else_created_conflicts(rt: Runtime) -> None:
    first, second = Transaction(rt.store), Transaction(rt.store)
    first.write(rt.space, "of:new", (), "first")
    second.write(rt.space, "of:new", (), "second")
    first.commit()
    with pytest.raises(ConflictError):
        second.commit()
    stored = rt.store.load(rt.space, "of:new")
    assert stored is not None and stored.value == "first"


def test_abort_drops_every_write(rt: Runtime) -> None:
    before = store_state(rt)
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:a", (), 1)
    tx.abort()
    assert tx.status == "aborted"
    assert store_state(rt) == before
    tx.abort()  # idempotent


def test_a_closed_transaction_refuses_writes_and_commits(rt: Runtime) -> None:
    committed = Transaction(rt.store)
    committed.write(rt.space, "of:a", (), 1)
    committed.commit()
    with pytest.raises(TransactionClosedError):
        committed.write(rt.space, "of:a", (), 2)
    with pytest.raises(TransactionClosedError):
        committed.commit()
    aborted = Transaction(rt.store)
    aborted.abort()
    with pytest.raises(TransactionClosedError):
        aborted.read(rt.space, "of:a", ())
    with pytest.raises(TransactionClosedError):
        aborted.commit()
    stored = rt.store.load(rt.space, "of:a")
    assert stored is not None and stored.value == 1 and stored.version == 1


def test_on_commit_callbacks_run_once_after_a_commit(rt: Runtime) -> None:
    seen: list[str] = []
    tx = Transaction(rt.store)
    tx.on_commit.append(lambda t: seen.append(t.status))
    tx.write(rt.space, "of:a", (), 1)
    tx.commit()
    assert seen == ["committed"]

    empty = Transaction(rt.store)
    empty.on_commit.append(lambda t: seen.append("empty"))
    assert empty.commit() == []
    assert seen == ["committed", "empty"]


def test_callback_lists_are_made_on_first_use_and_kept(rt: Runtime) -> None:
    """``on_commit``/``on_abort`` are lists made when first asked for: the same one after."""
    seen: list[str] = []
    tx = Transaction(rt.store)
    assert tx.on_commit is tx.on_commit and tx.on_abort is tx.on_abort

    def first(t: Transaction) -> None:
        seen.append("first")
        t.on_commit.append(lambda _t: seen.append("added while running"))

    tx.on_commit.append(first)
    tx.write(rt.space, "of:a", (), 1)
    tx.commit()
    assert seen == ["first", "added while running"]
    quiet = Transaction(rt.store)
    quiet.write(rt.space, "of:a", (), 2)
    assert len(quiet.commit()) == 1  # no callback asked for: none run, none made
    quiet.abort()  # (committed: nothing to abort)
    assert quiet.on_abort == []


def test_on_abort_callbacks_run_once_when_nothing_lands(rt: Runtime) -> None:
    seen: list[str] = []
    aborted = Transaction(rt.store)
    aborted.on_abort.append(lambda t: seen.append("abort"))
    aborted.write(rt.space, "of:a", (), 1)
    aborted.abort()
    aborted.abort()
    assert seen == ["abort"]

    _seed(rt, rt.space, "of:b", 0)
    stale = Transaction(rt.store)
    stale.on_abort.append(lambda t: seen.append(f"conflict {t.status}"))
    stale.on_commit.append(lambda t: seen.append("never"))
    stale.write(rt.space, "of:b", (), stale.read(rt.space, "of:b", ()) + 1)
    _seed(rt, rt.space, "of:b", 5)
    with pytest.raises(ConflictError):
        stale.commit()
    assert seen == ["abort", "conflict aborted"]

    landed = Transaction(rt.store)
    landed.on_abort.append(lambda t: seen.append("never"))
    landed.write(rt.space, "of:c", (), 1)
    landed.commit()
    assert seen == ["abort", "conflict aborted"]


# --------------------------------------------------------------------------- hand_over


def test_a_handed_over_value_is_kept_without_a_copy() -> None:
    """MemoryStore keeps what its maker handed over; anything else it copies."""
    rt = Runtime()
    handed = {"big": [{"x": i} for i in range(3)]}
    kept = {"big": [{"x": 1}]}
    tx = rt._begin()
    tx.write(rt.space, "of:handed", (), tx.hand_over(handed))
    tx.write(rt.space, "of:copied", (), kept)
    tx.set_meta(rt.space, "of:handed", "graph", tx.hand_over({"nodes": [1, 2]}))
    rt._commit(tx)
    stored = rt.store.load(rt.space, "of:handed")
    assert stored is not None and stored.value is handed
    assert stored.meta["graph"] == {"nodes": [1, 2]}
    copied = rt.store.load(rt.space, "of:copied")
    assert copied is not None and copied.value == kept and copied.value is not kept


@pytest.mark.parametrize("stored_before", [False, True])
def test_a_handed_over_source_is_kept_and_another_copied(stored_before: bool) -> None:
    """A source handed over (an instance's ``{"pattern", "name"}``) is kept as built, on
    a new document and on a stored one; a caller's own source is copied."""
    rt = Runtime()
    if stored_before:
        _seed(rt, rt.space, "of:handed-src", 1)
        _seed(rt, rt.space, "of:own-src", 1)
    handed = {"pattern": "p1", "name": "P"}
    own = {"pattern": "p2", "name": "Q"}
    tx = rt._begin()
    tx.set_source(rt.space, "of:handed-src", tx.hand_over(handed))
    tx.set_source(rt.space, "of:own-src", own)
    rt._commit(tx)
    kept = rt.store.load(rt.space, "of:handed-src")
    copied = rt.store.load(rt.space, "of:own-src")
    assert kept is not None and kept.source is handed
    assert copied is not None and copied.source == own and copied.source is not own


def test_a_meta_with_an_entry_not_handed_over_is_copied_whole() -> None:
    rt = Runtime()
    graph = {"nodes": [1]}
    other = {"mine": [1]}
    tx = rt._begin()
    tx.set_meta(rt.space, "of:doc", "graph", tx.hand_over(graph))
    tx.set_meta(rt.space, "of:doc", "other", other)
    tx.write(rt.space, "of:doc", (), 1)
    rt._commit(tx)
    stored = rt.store.load(rt.space, "of:doc")
    assert stored is not None and dict(stored.meta) == {"graph": graph, "other": other}
    assert stored.meta["other"] is not other  # the caller may still change its own dict


# --------------------------------------------------------------------------- owned values


def test_a_scalar_written_into_a_stored_document_is_stored_without_a_copy() -> None:
    """Only the spine is new: the untouched sibling is still the stored object itself."""
    rt = Runtime()
    _seed(rt, rt.space, "of:doc", {"a": {"deep": [1, 2]}, "b": {"n": 1}})
    old = rt.store.load(rt.space, "of:doc")
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:doc", ("b", "n"), 2)
    tx.commit()
    new = rt.store.load(rt.space, "of:doc")
    assert old is not None and new is not None
    assert new.value == {"a": {"deep": [1, 2]}, "b": {"n": 2}}
    assert cast(dict[str, Any], new.value)["a"] is cast(dict[str, Any], old.value)["a"]
    assert old.value == {"a": {"deep": [1, 2]}, "b": {"n": 1}}  # the old version is untouched


@pytest.mark.parametrize("then", ["scalar at a path", "nothing"])
def test_a_callers_container_is_copied_even_after_later_scalar_writes(then: str) -> None:
    """A container the caller still holds never becomes the stored object."""
    rt = Runtime()
    _seed(rt, rt.space, "of:doc", {"n": 1})
    mine = {"list": [1, 2]}
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:doc", ("mine",), mine)
    if then == "scalar at a path":
        tx.write(rt.space, "of:doc", ("n",), 2)
    tx.commit()
    mine["list"].append(3)
    stored = rt.store.load(rt.space, "of:doc")
    assert stored is not None and cast(dict[str, Any], stored.value)["mine"] == {"list": [1, 2]}


def test_a_whole_document_written_then_edited_is_copied() -> None:
    rt = Runtime()
    mine: dict[str, Any] = {"list": [1, 2], "n": 1}
    tx = Transaction(rt.store)
    tx.write(rt.space, "of:doc", (), mine)
    tx.write(rt.space, "of:doc", ("n",), 2)
    tx.commit()
    mine["list"].append(3)
    stored = rt.store.load(rt.space, "of:doc")
    assert stored is not None and stored.value == {"list": [1, 2], "n": 2}


def test_a_bad_scalar_at_a_path_is_refused_and_nothing_lands() -> None:
    """A non-finite float or an oversized int is not a plain scalar: the store still checks it."""
    rt = Runtime()
    _seed(rt, rt.space, "of:doc", {"n": 1})
    before = store_state(rt)
    for bad in (float("nan"), 10 ** 20_000):
        tx = Transaction(rt.store)
        tx.write(rt.space, "of:doc", ("n",), bad)
        with pytest.raises(ValueError):
            tx.commit()
        assert tx.status == "aborted"
    assert store_state(rt) == before


# --------------------------------------------------------------------------- documents as tuples


def test_a_document_is_an_immutable_record_with_fresh_default_meta() -> None:
    first, second = Document(1), Document(2)
    assert (first.value, first.source, first.meta, first.version) == (1, None, {}, 0)
    assert first.meta is not second.meta  # no shared default to corrupt
    with pytest.raises(AttributeError):
        first.value = 3  # type: ignore[misc]
    full = Document({"a": [1]}, "src", {"graph": {}}, 4)
    assert pickle.loads(pickle.dumps(full)) == full
    assert full == Document(value={"a": [1]}, source="src", meta={"graph": {}}, version=4)
    assert repr(Document(1)) == "Document(value=1, source=None, meta={}, version=0)"


# --------------------------------------------------------------------------- peek_all


def test_peek_all_reads_whole_documents_only_in_a_read_only_transaction(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", 1)
    _seed(rt, rt.space, "of:b", {"x": 2})
    keys = [(rt.space, "of:a"), (rt.space, "of:b"), (rt.space, "of:absent")]
    reader = Transaction(rt.store, track=False)
    assert reader.peek_all(keys) == [1, {"x": 2}, MISSING]
    assert reader.peek_all(keys[:2]) == [1, {"x": 2}]  # (none absent: values taken in C)
    assert reader.reads == []
    tracking = Transaction(rt.store)
    assert tracking.peek_all(keys) is None  # reads there are journaled one by one
    reader.abort()
    assert reader.peek_all(keys) is None  # a closed transaction reads nothing


def test_peek_all_sees_a_document_the_transaction_wrote(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", 1)
    tx = Transaction(rt.store, track=False)
    tx.write(rt.space, "of:a", (), 5)
    assert tx.peek_all([(rt.space, "of:a")]) == [5]
    assert rt.store.load(rt.space, "of:a").value == 1  # type: ignore[union-attr]


def test_a_list_of_output_links_reads_the_same_through_peek_all(rt: Runtime) -> None:
    """``materialize``'s one-call read of a list of links equals the journaled read."""
    outs = [f"of:out{i}" for i in range(5)]
    for i, out in enumerate(outs):
        _seed(rt, rt.space, out, i * i if i != 3 else {"deep": i})
    _seed(rt, rt.space, "of:list", [*(make_link(rt.space, o, ()) for o in outs), 7, None])
    expected = [0, 1, 4, {"deep": 3}, 16, 7, None]
    assert rt.cell_at("of:list").get() == expected  # outside any transaction: peek_all
    tx = Transaction(rt.store)
    assert rt.cell_at("of:list").with_tx(tx).get() == expected  # journaled, hop by hop
    assert {(eid, path) for _s, eid, path in tx.reads} >= {(o, ()) for o in outs}


class _LoadOnly:
    """A store with ``load`` and ``commit`` only (no ``load_key``, no ``commit_working``)."""

    def __init__(self) -> None:
        self.inner = MemoryStore()
        self.loaded: list[tuple[str, str]] = []

    def load(self, space: str, entity_id: str) -> Document | None:
        self.loaded.append((space, entity_id))
        return self.inner.load(space, entity_id)

    def commit(self, space: str, writes: Any, basis: Any) -> Any:
        return self.inner.commit(space, writes, basis)


def test_a_transaction_loads_by_key_where_the_store_can_and_by_load_elsewhere() -> None:
    memory = MemoryStore()
    memory.commit("sp", {"e": Document({"n": 1})}, {})
    tx = Transaction(memory)
    assert tx.read("sp", "e", ("n",)) == 1 and tx.document("sp", "e").base is memory.load("sp", "e")
    plain = _LoadOnly()
    plain.inner.commit("sp", {"e": Document({"n": 1})}, {})
    tx = Transaction(plain)  # type: ignore[arg-type]
    assert tx.read("sp", "e", ("n",)) == 1 and tx.read("sp", "f", ()) is MISSING
    tx.write("sp", "e", ("n",), 2)
    assert tx.exists("sp", "g") is False
    assert plain.loaded == [("sp", "e"), ("sp", "f"), ("sp", "g")]
    [change] = tx.commit()
    assert change.after == Document({"n": 2}, None, {}, 2)


def test_value_is_an_untracked_whole_document_read(rt: Runtime) -> None:
    _seed(rt, rt.space, "of:a", {"n": 1})
    tx = Transaction(rt.store)
    assert tx.value(rt.space, "of:a") == tx.read(rt.space, "of:a", (), track=False) == {"n": 1}
    assert tx.value(rt.space, "of:none") is MISSING
    tx.write(rt.space, "of:a", ("n",), 2)
    assert tx.value(rt.space, "of:a") == {"n": 2}  # its own write
    assert tx.reads == []
    tx.abort()
    with pytest.raises(TransactionClosedError):
        tx.value(rt.space, "of:other")


# ------------------------------------------------------------------ read only, then written

_KEYS = ["of:a", "of:b", "of:c"]
_STEP = st.tuples(
    st.sampled_from(["read", "value", "read_document", "wrote", "exists", "write", "write_at",
                     "meta", "document", "basis", "peek_all", "stored_documents"]),
    st.sampled_from(_KEYS),
    st.integers(-3, 3),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_STEP, max_size=14), present=st.sets(st.sampled_from(_KEYS)),
       track=st.booleans())
def test_documents_only_read_and_written_ones_answer_as_a_model_says(
    steps: list[tuple[str, str, int]], present: set[str], track: bool
) -> None:
    """A document a transaction only read is kept as the store's own ``Document``; the
    first write (or metadata access) makes its working copy.  Every answer, the basis
    (the very documents read, in load order) and what the commit lands follow a model
    of the transaction: its loaded documents, its values and which it wrote."""
    store = MemoryStore()
    for key in sorted(present):
        seed = Transaction(store)
        seed.write("sp", key, (), {"n": 0, "key": key})
        seed.commit()
    tx = Transaction(store, track=track)
    loaded: dict[str, Document | None] = {}  # the model: first load of each document, in order
    values: dict[str, Any] = {}
    metas: dict[str, dict[str, Any]] = {}
    written: set[str] = set()
    working: set[str] = set()  # documents it holds a working copy of (written, or its meta)

    def load(key: str) -> None:
        if key not in loaded:
            loaded[key] = store.load("sp", key)
            doc = loaded[key]
            values[key] = MISSING if doc is None else doc.value
            metas[key] = {} if doc is None else dict(doc.meta)

    for op, key, number in steps:
        if op not in ("wrote", "basis", "peek_all", "stored_documents"):
            load(key)  # (what the transaction loads too: ``peek_all`` keeps nothing)
        if op == "read":
            assert tx.read("sp", key, ("n",)) == (
                MISSING if values[key] is MISSING else values[key].get("n", MISSING))
        elif op == "value":
            assert tx.value("sp", key) == values[key]
        elif op == "read_document":
            got = tx.read_document(("sp", key))
            assert got is (WRITTEN if key in written else loaded[key])  # the store's own
        elif op == "wrote":
            assert tx.wrote("sp", key) is (key in written)
        elif op == "exists":
            assert tx.exists("sp", key) is (loaded[key] is not None or key in written)
        elif op == "write":
            tx.write("sp", key, (), {"n": number})
            values[key] = {"n": number}
            written.add(key)
            working.add(key)
        elif op == "write_at":
            if type(values[key]) is dict:
                tx.write("sp", key, ("n",), number)
                values[key] = {**values[key], "n": number}
                written.add(key)
                working.add(key)
            else:
                tx.value("sp", key)  # (loaded, as the model has it)
        elif op == "meta":
            tx.set_meta("sp", key, "m", number)
            metas[key] = {**metas[key], "m": number}
            written.add(key)
            working.add(key)
        elif op == "document":
            working.add(key)
            assert dict(tx.document("sp", key).meta) == metas[key]
            assert tx.document("sp", key).base is loaded[key]
        elif op == "basis":
            assert [(k[1], d) for k, d in tx.basis()] == list(loaded.items())
            assert all(d is loaded[k[1]] for k, d in tx.basis())
        elif op == "peek_all":
            stored = store.load("sp", key)
            seen = values[key] if key in loaded else MISSING if stored is None else stored.value
            assert tx.peek_all([("sp", key)]) == (None if track else [seen])
        elif op == "stored_documents":
            got = tx.stored_documents([("sp", key)])
            stored = loaded[key] if key in loaded else store.load("sp", key)
            if key in working or stored is None:
                assert got is None  # written, or absent: read one by one
            else:
                load(key)  # joined to the basis, as a read joins it
                assert got == [stored] and got[0] is stored
    assert [(k[1], d) for k, d in tx.basis()] == list(loaded.items())
    for key, doc in loaded.items():  # nothing read was changed in place
        assert doc is None or doc.value == {"n": 0, "key": key}
    before = {k: store.load("sp", k) for k in _KEYS}
    changes = tx.commit()
    for key in _KEYS:
        after = store.load("sp", key)
        if key in written and (values[key] != (
                MISSING if loaded[key] is None else loaded[key].value)  # type: ignore[union-attr]
                or metas[key] != ({} if loaded[key] is None else dict(loaded[key].meta))):  # type: ignore[union-attr]
            assert after is not None  # (metadata alone on an absent document: value None)
            assert after.value == (None if values[key] is MISSING else values[key])
            assert dict(after.meta) == metas[key]
            assert key in {c.entity_id for c in changes}
        else:
            assert after is before[key]  # only read, or written back unchanged: not landed
    assert len(changes) == len({c.entity_id for c in changes})


def test_a_document_read_only_then_changed_by_another_writer_conflicts_as_a_written_one() -> None:
    """The basis of a document only read is the stored ``Document`` itself: a commit after
    another writer replaced it conflicts and lands nothing, even one that wrote it later."""
    for write_it in (False, True):
        store = MemoryStore()
        for key in ("of:in", "of:out"):
            seed = Transaction(store)
            seed.write("sp", key, (), {"n": 1})
            seed.commit()
        tx = Transaction(store)
        assert tx.read("sp", "of:in", ("n",)) == 1
        other = Transaction(store)
        other.write("sp", "of:in", ("n",), 2)
        other.commit()
        if write_it:
            tx.write("sp", "of:in", ("n",), 3)  # its working copy is made from what it read
        tx.write("sp", "of:out", ("n",), 9)
        state = dict(store._docs)
        with pytest.raises(ConflictError):
            tx.commit()
        assert store._docs == state
