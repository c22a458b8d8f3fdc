"""cellkernel.patterns.plan: the shortcuts of planning give the general results (issue 20)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cellkernel.data.links import make_link
from cellkernel.patterns.plan import _rewrite_aliases, _rewrite_flat, concretize

KEYS = ("c0", "c1", "argument")

aliases = st.builds(
    lambda cell, path: {"$alias": {"cell": cell, "path": path}},
    st.sampled_from(KEYS),
    st.lists(st.one_of(st.text(max_size=3), st.integers(0, 3)), max_size=2),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=4))
leaves = st.one_of(scalars, aliases, st.just({}), st.just([]),
                   st.just(make_link("sp", "of:x", [], None, True)))
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=4), inner, max_size=3)),
    max_leaves=8,
)
bindings = st.one_of(
    st.dictionaries(st.sampled_from(["args", "kwargs", "closure", "x"]), values, max_size=3),
    st.fixed_dictionaries({"args": st.lists(st.one_of(scalars, aliases), max_size=3),
                           "kwargs": st.just({})}),
    values,
)


def test_a_lift_binding_takes_the_flat_rewrite() -> None:
    kwargs: dict[str, Any] = {}
    binding = {"args": [{"$alias": {"cell": "c0", "path": []}}, 3], "kwargs": kwargs}
    flat = _rewrite_flat(binding, lambda alias: alias["cell"])
    assert flat == {"args": ["c0", 3], "kwargs": {}}
    assert flat["kwargs"] is kwargs
    assert _rewrite_flat({"$alias": {"cell": "c0", "path": []}}, lambda a: a) is None
    assert _rewrite_flat({"args": [{"deep": {"$alias": {}}}]}, lambda a: a) is None


@settings(max_examples=400, deadline=None)
@given(binding=bindings)
def test_the_flat_rewrite_is_the_general_rewrite(binding: Any) -> None:
    def on_alias(alias: dict[str, Any]) -> Any:
        return {"linked": alias["cell"], "path": list(alias["path"])}

    flat = _rewrite_flat(binding, on_alias)
    general = _rewrite_aliases(binding, on_alias, share_empty=True)
    if flat is not None:
        assert flat == general
        assert flat is not binding
        # the same containers are shared with the graph (empty ones below the top)
        for key, value in flat.items():
            assert (value is binding[key]) == (general[key] is binding[key])


@settings(max_examples=200, deadline=None)
@given(binding=bindings)
def test_concretize_with_shared_links_equals_the_unshared_form(binding: Any) -> None:
    ids = {"c0": "of:zero", "c1": "of:one", "argument": "of:arg"}
    assert concretize(binding, ids, "sp", {}) == concretize(binding, ids, "sp")
