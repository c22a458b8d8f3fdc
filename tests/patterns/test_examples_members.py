"""The Members / Record use case end to end (SPEC §8, seeds 000/001/003)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cellkernel import Cell, Pattern, Runtime
from cellkernel.examples import members as example
from cellkernel.examples.members import Members, Record

REPO = Path(__file__).resolve().parents[2]


def instance_list(rt: Runtime) -> Any:
    """The space's instance log (what ``wish("#all")`` lists)."""
    return rt.runner.listed_instances()


@pytest.fixture
def people(rt: Runtime) -> Cell[Any]:
    return rt.run(Members, {"factory": Record}, cause="people")


def test_members_never_references_record() -> None:
    for fn in (Members.fn, example.submit.fn, example.member_titles.fn):
        assert fn is not None and "Record" not in inspect.getsource(fn)
    assert Record.hash not in json.dumps(Members.graph)
    # Record does use Members (a nested pattern node), passing itself as a value
    assert Members.hash in json.dumps(Record.graph)
    assert {"$self": "factory"} in [n["inputs"].get("factory") for n in Record.graph["nodes"]
                                    if n["helper"] == "pattern"]


def test_members_starts_empty_and_receives_the_factory_as_a_value(
    rt: Runtime, people: Cell[Any],
) -> None:
    value = people.get()
    assert (value["members"], value["titles"], value["count"], value["error"]) == ([], [], 0, None)
    arg = rt.runner.instance_of(people)
    assert arg is not None
    stored = rt.cell_at(people.entity_id, ()).get_raw()  # type: ignore[arg-type]
    assert "submit" in stored


def test_a_new_name_creates_a_live_record(rt: Runtime, people: Cell[Any]) -> None:
    people.submit.send({"name": "  Ada  "})
    assert people.titles.get() == ["Ada"]
    assert (people.count.get(), people.error.get()) == (1, None)
    ada = people.members[0]
    assert ada.summary.get() == "Ada (0 members)"
    assert rt.runner.instance_of(ada.resolve_as_cell()) is not None
    # its handlers fire and its lifts recompute
    ada.rename.send({"title": "Ada Lovelace"})
    ada.set_notes.send({"notes": "analyst"})
    assert ada.summary.get() == "Ada Lovelace: analyst (0 members)"
    assert people.titles.get() == ["Ada Lovelace"]  # Members sees the rename
    ada.rename.send({"title": ""})
    assert ada.error.get() == "A record needs a title."
    assert ada.title.get() == "Ada Lovelace"
    # the record's own team makes records too (Record uses Members with SELF.factory)
    ada.members.submit.send({"name": "Grace"})
    assert ada.members.titles.get() == ["Grace"]
    assert ada.summary.get() == "Ada Lovelace: analyst (1 member)"
    grace = ada.members.members[0]
    grace.rename.send({"title": "Grace Hopper"})
    assert ada.members.titles.get() == ["Grace Hopper"]
    assert isinstance(ada.members.members[0].get()["rename"], Cell)
    assert rt.errors == []


def test_an_existing_title_links_the_existing_record(rt: Runtime, people: Cell[Any]) -> None:
    people.submit.send({"name": "Ada"})
    ada = people.members[0]
    ada.members.submit.send({"name": "Grace"})
    grace_id = ada.members.members[0].resolve_as_cell().entity_id
    instances_before = instance_list(rt)
    running_before = set(rt.runner.instances)
    people.submit.send({"name": "grace"})  # any case, any spacing
    assert people.titles.get() == ["Ada", "Grace"]
    assert people.members[1].resolve_as_cell().entity_id == grace_id  # the same record
    assert instance_list(rt) == instances_before  # no duplicate instance
    assert set(rt.runner.instances) == running_before
    people.members[1].rename.send({"title": "Grace H."})  # one record, seen from both lists
    assert ada.members.titles.get() == ["Grace H."]
    assert people.titles.get() == ["Ada", "Grace H."]
    assert people.error.get() is None
    assert rt.errors == []


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({"name": ""}, "A member needs a name"),
        ({"name": "   "}, "A member needs a name"),
        ({}, "A member needs a name"),
        (None, "A member needs a name"),
        ({"name": "ada"}, "'ada' is already a member."),
    ],
)
def test_handler_errors_show_in_the_state_and_record_nothing(
    rt: Runtime, people: Cell[Any], event: Any, message: str,
) -> None:
    people.submit.send({"name": "Ada"})
    members_before = people.members.resolve_as_cell().get_raw()
    instances_before = instance_list(rt)
    running_before = set(rt.runner.instances)
    people.submit.send(event)
    assert message in people.error.get()
    assert people.members.resolve_as_cell().get_raw() == members_before
    assert instance_list(rt) == instances_before
    assert set(rt.runner.instances) == running_before
    assert rt.errors == []
    people.submit.send({"name": "Lin"})  # the next good event clears the error
    assert people.error.get() is None
    assert people.titles.get() == ["Ada", "Lin"]


def test_an_unresolvable_factory_is_a_clear_error_and_runs_nothing(rt: Runtime) -> None:
    missing = {"/": {"nodeFactory@1": {"module": {
        "type": "pattern", "ref": "ck_missing_records:Record", "hash": "e" * 64}}}}
    team = rt.run(Members, {"factory": missing}, cause="team-missing")
    before = instance_list(rt)
    team.submit.send({"name": "Zed"})
    assert "ck_missing_records" in team.error.get()
    assert team.members.get() == []
    assert instance_list(rt) == before
    nobody = rt.run(Members, {}, cause="team-none")
    nobody.submit.send({"name": "Zed"})
    assert "no record factory" in nobody.error.get()
    assert rt.errors == []


def test_an_unexpected_failure_aborts_the_whole_event(rt: Runtime) -> None:
    broken = rt.run(Members, {"factory": Record, "members": "not a list"}, cause="broken")
    before = instance_list(rt)
    running = set(rt.runner.instances)
    broken.submit.send({"name": "Ada"})  # the record starts, then push() raises
    assert [type(e.error) for e in rt.errors] == [TypeError]
    assert instance_list(rt) == before  # the half-made record did not land
    assert set(rt.runner.instances) == running  # and is not running
    assert broken.members.get() == "not a list"


def test_members_with_a_curried_factory(rt: Runtime) -> None:
    RecordTeam = Members.curry(Record, "factory")
    assert isinstance(RecordTeam, Pattern)
    team = rt.run(RecordTeam, {}, cause="curried-team")
    team.submit.send({"name": "Kay"})
    assert team.members[0].summary.get() == "Kay (0 members)"
    assert rt.errors == []


PHASE_A = """
    import json, sys
    from cellkernel import Runtime
    from cellkernel.examples.members import Members, Record
    rt = Runtime(store="sqlite:///" + sys.argv[1])
    people = rt.run(Members, {"factory": Record}, cause="people")
    people.submit.send({"name": "Ada"})
    people.members[0].members.submit.send({"name": "Grace"})
    print(json.dumps({"titles": people.titles.get(),
                      "team": people.members[0].members.titles.get(),
                      "errors": [str(e) for e in rt.errors]}))
    rt.close()
"""

PHASE_B = """
    import json, sys
    from cellkernel import Runtime
    rt = Runtime(store="sqlite:///" + sys.argv[1],
                 trusted_modules=["cellkernel.examples"])  # SPEC §8: may be imported
    out = {"before": "cellkernel.examples.members" in sys.modules}
    people = rt.resume("people")  # resolution imports the trusted module, finds by hash
    out["after"] = "cellkernel.examples.members" in sys.modules
    ada = people.members[0]
    ada.rename.send({"title": "Ada L."})
    out["summary"] = ada.summary.get()
    out["titles"] = people.titles.get()
    grace = ada.members.members[0]
    grace.set_notes.send({"notes": "admiral"})
    out["grace"] = grace.summary.get()
    people.submit.send({"name": "Lin"})
    people.submit.send({"name": "GRACE"})
    out["titles_after"] = people.titles.get()
    out["same_grace"] = (people.members[2].resolve_as_cell().entity_id
                         == grace.resolve_as_cell().entity_id)
    people.members[1].members.submit.send({"name": "Max"})
    out["lin_team"] = people.members[1].summary.get()
    out["errors"] = [str(e) for e in rt.errors]
    rt.close()
    print(json.dumps(out))
"""


def _worker(code: str, db: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), db], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_records_survive_resume_in_a_new_process(tmp_path: Path) -> None:
    db = str(tmp_path / "members.db")
    assert _worker(PHASE_A, db) == {"titles": ["Ada"], "team": ["Grace"], "errors": []}
    assert _worker(PHASE_B, db) == {
        "before": False,
        "after": True,
        "summary": "Ada L. (1 member)",
        "titles": ["Ada L."],
        "grace": "Grace: admiral (0 members)",
        "titles_after": ["Ada L.", "Lin", "Grace"],
        "same_grace": True,
        "lin_team": "Lin (1 member)",
        "errors": [],
    }
