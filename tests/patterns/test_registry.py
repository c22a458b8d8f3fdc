"""The trust boundary (SPEC §8), tested as an attacker with write access to a store.

Every payload is made with the public API in one process (``make_payloads``,
which is the only process that ever wraps ``os.system`` and friends in a
factory) and loaded in a *fresh* process that never defined those functions.
For each entry path — ``materialize``, ``cell.get()``, a lift input,
``rt.resume`` of a tampered snapshot, ``rt.run`` through tampered handler-made
children, ``instantiate`` (in a body and in a handler) and ``wish`` — the
marker file a payload would create never appears, the error is
``UnknownImplementationError``, and where the path only reads, the store is
byte-for-byte unchanged.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellkernel import Runtime, UnknownImplementationError, materialize
from cellkernel.patterns import fingerprints as impls
from cellkernel.patterns import registry

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"

#: functions an attacker would like stored data to reach
EVIL_REFS = ["os:system", "posix:system", "os:popen", "subprocess:getoutput",
             "cellkernel.patterns.registry:_compile_checked"]


def _python(code: str, *args: str, path: list[Path] | None = None) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter; its last stdout line is JSON."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in [*(path or []), FIXTURES, REPO])
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _dump(db: Path) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT space, id, value, source, meta, version FROM documents ORDER BY space, id")]


MAKE_PAYLOADS = """
    import json, sys, importlib, os
    from pathlib import Path
    from cellkernel import Runtime, lift, Pattern
    import factory_mod as m
    db, marks = sys.argv[1], Path(sys.argv[2])
    rt = Runtime(store="sqlite:///" + db)
    payloads = []
    for i, ref in enumerate(json.loads(sys.argv[3])):
        module_name, _, name = ref.partition(":")
        fn = getattr(importlib.import_module(module_name), name)
        command = "touch " + str(marks / f"MARK-{i}")
        factory = lift(fn).curry(command)
        if name == "_compile_checked":
            factory = factory.curry(ref, 1).curry("0" * 64, 2).curry({}, 3)
        sigil = factory.to_json()
        assert sigil["/"]["nodeFactory@1"]["module"]["ref"].endswith(":" + name), sigil
        payloads.append(sigil)
        rt.get_cell(f"evil-{i}").set(sigil)
    # an honest instance, then its snapshot's lift node replaced by each evil module
    honest = rt.run(m.Counter, {"count": 1}, cause="victim")
    # a pattern sigil whose graph hides an evil node
    graph = json.loads(json.dumps(m.Counter.to_json()))
    evil_patterns = []
    for sigil in payloads:
        g = json.loads(json.dumps(graph))
        node = next(n for n in g["nodes"] if n["helper"] == "lift")
        node["module"] = sigil["/"]["nodeFactory@1"]["module"]
        evil_patterns.append(Pattern(None, g, "EvilCounter").sigil())
    # a handler-made child (its snapshot is tampered below, by the test)
    spawner = rt.run(m.Spawner, {"template": m.Counter}, cause="spawner")
    spawner.spawn.send({"count": 2})
    child = spawner.items[0].resolve_as_cell().entity_id
    rt.get_cell(rt.space).set({"evil": payloads[0]})
    out = {"payloads": payloads, "patterns": evil_patterns, "victim": honest.entity_id,
           "child": child, "errors": [str(e) for e in rt.errors]}
    rt.close()
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def attack(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Payloads made in their own process, stored in a SQLite file."""
    root = tmp_path_factory.mktemp("attack")
    marks = root / "marks"
    marks.mkdir()
    db = root / "store.db"
    made = _python(MAKE_PAYLOADS, str(db), str(marks), json.dumps(EVIL_REFS))
    assert made["errors"] == []
    assert not list(marks.iterdir())
    return {"db": db, "marks": marks, **made}


def _tamper(db: Path, entity_id: str, module: dict[str, Any]) -> None:
    """Replace the module of every lift node in a stored snapshot (as an attacker would)."""
    with closing(sqlite3.connect(db)) as conn:
        (meta_text,) = conn.execute("SELECT meta FROM documents WHERE id = ?",
                                    (entity_id,)).fetchone()
        meta = json.loads(meta_text)
        for node in meta["graph"]["nodes"]:
            if node["module"].get("type") == "python":
                node["module"] = module
        conn.execute("UPDATE documents SET meta = ? WHERE id = ?", (json.dumps(meta), entity_id))
        conn.commit()


def _no_marks(attack: dict[str, Any]) -> None:
    assert sorted(p.name for p in attack["marks"].iterdir()) == []


def _module_of(sigil: dict[str, Any]) -> dict[str, Any]:
    return sigil["/"]["nodeFactory@1"]["module"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- entry paths


def test_materialize_and_call_in_a_fresh_process(attack: dict[str, Any]) -> None:
    out = _python("""
        import json, sys
        from cellkernel import Runtime, materialize, UnknownImplementationError
        payloads = json.loads(sys.argv[1])
        errors, loaded = [], []
        for sigil in payloads:
            for rt in (None, Runtime()):
                try:
                    f = materialize(sigil, rt)
                    f()
                    loaded.append(sigil["/"]["nodeFactory@1"]["module"]["ref"])
                except UnknownImplementationError as exc:
                    errors.append(str(exc))
        print(json.dumps({"errors": errors, "loaded": loaded}))
        """, json.dumps(attack["payloads"]))
    assert out["loaded"] == []
    assert len(out["errors"]) == 2 * len(EVIL_REFS)
    assert all("no factory with that hash is defined in this process" in e for e in out["errors"])
    assert any("trusted_modules=['os']" in e for e in out["errors"])  # says what to do
    _no_marks(attack)


def test_cell_get_of_a_stored_sigil(attack: dict[str, Any]) -> None:
    before = _dump(attack["db"])
    out = _python("""
        import json, sys
        from cellkernel import Runtime, UnknownImplementationError
        rt = Runtime(store="sqlite:///" + sys.argv[1])
        kinds = []
        for i in range(int(sys.argv[2])):
            try:
                rt.get_cell(f"evil-{i}").get()()
                kinds.append("ran")
            except UnknownImplementationError:
                kinds.append("UnknownImplementationError")
        rt.close()
        print(json.dumps({"kinds": kinds}))
        """, str(attack["db"]), str(len(EVIL_REFS)))
    assert out["kinds"] == ["UnknownImplementationError"] * len(EVIL_REFS)
    assert _dump(attack["db"]) == before
    _no_marks(attack)


def test_a_lift_input_and_wish(attack: dict[str, Any]) -> None:
    """The user's own pattern reads a stored sigil (argument, wish path) and calls it."""
    out = _python("""
        import json, sys
        from typing import Any
        from cellkernel import Runtime, lift, pattern, wish, UnknownImplementationError
        rt = Runtime(store="sqlite:///" + sys.argv[1])

        @lift
        def call_it(f: Any) -> Any:
            return None if f is None else f()

        @pattern
        def Victim(f: Any = None):
            return {"out": call_it(f), "wished": call_it(wish("/evil"))}

        for i in range(int(sys.argv[2])):
            rt.run(Victim, {"f": rt.get_cell(f"evil-{i}")}, cause=f"victim-{i}")
        kinds = sorted({type(e.error).__name__ for e in rt.errors})
        print(json.dumps({"kinds": kinds, "count": len(rt.errors)}))
        rt.close()
        """, str(attack["db"]), str(len(EVIL_REFS)))
    assert out["kinds"] == ["UnknownImplementationError"]
    assert out["count"] >= 2 * len(EVIL_REFS)  # the argument and the wish, for every payload
    _no_marks(attack)


@pytest.mark.parametrize("trusted", [[], ["factory_mod"]])
def test_resume_of_a_tampered_snapshot(attack: dict[str, Any], tmp_path: Path,
                                       trusted: list[str]) -> None:
    for i, sigil in enumerate(attack["payloads"]):
        db = tmp_path / f"victim-{i}.db"
        db.write_bytes(attack["db"].read_bytes())
        _tamper(db, attack["victim"], _module_of(sigil))
        before = _dump(db)
        out = _python("""
            import json, sys
            import factory_mod  # the user imports their own module first, as they should
            from cellkernel import Runtime, UnknownImplementationError
            rt = Runtime(store="sqlite:///" + sys.argv[1], trusted_modules=json.loads(sys.argv[2]))
            try:
                rt.resume("victim")
                print(json.dumps({"error": None}))
            except UnknownImplementationError as exc:
                print(json.dumps({"error": type(exc).__name__, "message": str(exc),
                                  "instances": len(rt.runner.instances)}))
            """, str(db), json.dumps(trusted))
        assert out["error"] == "UnknownImplementationError", out
        assert _module_of(sigil)["ref"] in out["message"]
        assert out["instances"] == 0
        assert _dump(db) == before
    _no_marks(attack)


def test_run_through_tampered_handler_made_children(attack: dict[str, Any],
                                                    tmp_path: Path) -> None:
    for i, sigil in enumerate(attack["payloads"]):
        db = tmp_path / f"children-{i}.db"
        db.write_bytes(attack["db"].read_bytes())
        _tamper(db, attack["child"], _module_of(sigil))
        before = _dump(db)
        out = _python("""
            import json, sys
            import factory_mod as m
            from cellkernel import Runtime, UnknownImplementationError
            rt = Runtime(store="sqlite:///" + sys.argv[1])
            try:
                rt.run(m.Spawner, {"template": m.Counter}, cause="spawner")
                print(json.dumps({"error": None}))
            except UnknownImplementationError as exc:
                print(json.dumps({"error": type(exc).__name__}))
            """, str(db))
        assert out == {"error": "UnknownImplementationError"}
        assert _dump(db) == before
    _no_marks(attack)


def test_instantiate_in_a_body_and_in_a_handler(attack: dict[str, Any]) -> None:
    out = _python("""
        import json, sys
        import factory_mod as m
        from cellkernel import Runtime, UnknownImplementationError
        rt = Runtime()
        patterns = json.loads(sys.argv[1])
        raised = []
        for i, sigil in enumerate(patterns):
            holder = rt.get_cell(f"evil-pattern-{i}")
            holder.set(sigil)
            # a body-level instantiate (Host) and a handler-made child (Spawner)
            rt.run(m.Host, {"child": holder, "start": 1}, cause=f"host-{i}")
            spawner = rt.run(m.Spawner, {"template": holder}, cause=f"spawner-{i}")
            spawner.spawn.send({"count": 1})
            spawner.spawn_by_call.send({"count": 1})
            try:
                holder.get()
            except UnknownImplementationError:
                raised.append(i)
        kinds = sorted({type(e.error).__name__ for e in rt.errors})
        print(json.dumps({"kinds": kinds, "count": len(rt.errors), "raised": raised}))
        """, json.dumps(attack["patterns"]))
    assert out["kinds"] == ["UnknownImplementationError"]
    assert out["count"] >= 3 * len(EVIL_REFS)
    assert out["raised"] == list(range(len(EVIL_REFS)))
    _no_marks(attack)


# --------------------------------------------------------------------------- modules named by data

MARKER_MODULE = """
import os
from pathlib import Path
from typing import Any
from cellkernel import lift

Path(os.environ["CK_IMPORT_MARK"]).write_text("imported")

@lift
def shout(text: str) -> str:
    return text.upper()

def plain(text: str) -> str:
    return text.upper()
"""


@pytest.fixture()
def marker_module(tmp_path: Path) -> dict[str, Any]:
    """A module on sys.path whose import writes a marker, with a factory and a plain function."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "ck_marker_mod.py").write_text(MARKER_MODULE)
    mark = tmp_path / "imported.txt"
    os.environ["CK_IMPORT_MARK"] = str(mark)
    made = _python("""
        import json
        import ck_marker_mod as mod
        from cellkernel import lift
        from cellkernel.patterns import fingerprints as impls
        print(json.dumps({"shout": mod.shout.to_json(),
                          "plain": lift(mod.plain).to_json(),
                          "plain_hash": impls.fingerprint_function(mod.plain)[0]}))
        """, path=[mods])
    assert mark.read_text() == "imported"
    mark.unlink()
    return {"mods": mods, "mark": mark, **made}


RESOLVE_IN_FRESH_PROCESS = """
    import json, sys
    from cellkernel import materialize, UnknownImplementationError
    sigil, trusted = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    try:
        f = materialize(sigil, trusted_modules=trusted)
        out = {"result": f("hi")}
    except UnknownImplementationError as exc:
        out = {"error": str(exc)}
    out["imported"] = "ck_marker_mod" in sys.modules
    print(json.dumps(out))
"""


def test_a_ref_naming_an_untrusted_module_is_refused_without_importing_it(
    marker_module: dict[str, Any],
) -> None:
    for name in ("shout", "plain"):
        out = _python(RESOLVE_IN_FRESH_PROCESS, json.dumps(marker_module[name]), "[]",
                      path=[marker_module["mods"]])
        assert out["imported"] is False
        assert "ck_marker_mod" in out["error"] and "trusted_modules" in out["error"]
        assert not marker_module["mark"].exists()
    # a prefix is a whole module name: "ck_marker" does not trust "ck_marker_mod"
    out = _python(RESOLVE_IN_FRESH_PROCESS, json.dumps(marker_module["shout"]), '["ck_marker"]',
                  path=[marker_module["mods"]])
    assert out["imported"] is False and "error" in out
    assert not marker_module["mark"].exists()


def test_a_trusted_module_resolves_its_factories_and_nothing_else(
    marker_module: dict[str, Any],
) -> None:
    out = _python(RESOLVE_IN_FRESH_PROCESS, json.dumps(marker_module["shout"]),
                  '["ck_marker_mod"]', path=[marker_module["mods"]])
    assert out == {"result": "HI", "imported": True}
    assert marker_module["mark"].exists()
    marker_module["mark"].unlink()
    # the plain function has a correct fingerprint, but no decorator defined it
    plain = marker_module["plain"]
    assert _module_of(plain)["hash"] == marker_module["plain_hash"]
    out = _python(RESOLVE_IN_FRESH_PROCESS, json.dumps(plain), '["ck_marker_mod"]',
                  path=[marker_module["mods"]])
    assert out["imported"] is True and "no factory" in out["error"]


def test_a_trusted_module_edited_since_is_refused(marker_module: dict[str, Any]) -> None:
    sigil = json.loads(json.dumps(marker_module["shout"]))
    _module_of(sigil)["hash"] = "e" * 64
    out = _python(RESOLVE_IN_FRESH_PROCESS, json.dumps(sigil), '["ck_marker_mod"]',
                  path=[marker_module["mods"]])
    assert "edited since" in out["error"]


# --------------------------------------------------------------------------- carried source


def _source_sigil(source: str, digest: str, ref: str = "ck_nowhere:f") -> dict[str, Any]:
    return {"/": {"nodeFactory@1": {
        "module": {"type": "python", "ref": ref, "hash": digest, "source": source},
        "kind": "lift", "argumentSchema": {}, "resultSchema": None, "curried": []}}}


SOURCE_IN_FRESH_PROCESS = """
    import json, sys
    from cellkernel import Runtime, materialize, UnknownImplementationError
    sigil = json.loads(sys.argv[1])
    rt = Runtime(trust_source=True)
    try:
        out = {"result": materialize(sigil, rt)(2)}
    except UnknownImplementationError as exc:
        out = {"error": str(exc)}
    print(json.dumps(out))
"""


def test_trusted_source_whose_hash_differs_runs_nothing(tmp_path: Path) -> None:
    mark = tmp_path / "ran.txt"
    honest = "def f(x):\n    return x + 1\n"
    src = tmp_path / "honest.py"
    src.write_text(honest)
    digest = _python("""
        import json, sys, importlib.util
        spec = importlib.util.spec_from_file_location("honest_src", sys.argv[1])
        mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
        from cellkernel.patterns import fingerprints as impls
        print(json.dumps({"hash": impls.fingerprint_function(mod.f)[0]}))
        """, str(src))["hash"]
    # the honest source compiles and runs
    assert _python(SOURCE_IN_FRESH_PROCESS, json.dumps(_source_sigil(honest, digest))) == {
        "result": 3}
    side_effect = f"open({str(mark)!r}, 'w').write('ran')"
    tampered = [
        # a module-level statement beside the honest definition
        f"{side_effect}\n{honest}",
        # a decorator that would run at definition
        f"@(lambda g: ({side_effect}, g)[1])\n{honest}",
        # a default evaluated at definition
        f"def f(x, _=({side_effect})):\n    return x + 1\n",
        # the body changed
        f"def f(x):\n    {side_effect}\n    return x + 1\n",
    ]
    outs = [_python(SOURCE_IN_FRESH_PROCESS, json.dumps(_source_sigil(t, digest)))
            for t in tampered]
    assert not mark.exists()
    # beside the honest node, the statement and the decorator never run: the node alone is
    # compiled; the other two do not match the hash
    assert outs[0] == {"result": 3} and outs[1] == {"result": 3}
    assert all("does not match its hash" in o["error"] for o in outs[2:]), outs


# --------------------------------------------------------------------------- property


_ATTACK_MODULES = ["os", "posix", "subprocess", "shutil", "builtins", "pickle", "marshal",
                   "importlib", "ctypes", "runpy", "code", "pty", "webbrowser",
                   "cellkernel.patterns.registry", "cellkernel.patterns.fingerprints",
                   "cellkernel.reactive.cells", "cellkernel.patterns.runner",
                   "cellkernel.patterns.materialize", "cellkernel.store.sqlite"]


def _callables() -> list[tuple[str, Any]]:
    import importlib

    found = []
    for name in _ATTACK_MODULES:
        module = importlib.import_module(name)
        for attr in sorted(vars(module)):
            value = getattr(module, attr)
            if callable(value) and not isinstance(value, type):
                found.append((f"{name}:{attr}", value))
    return found


_CALLABLES = _callables()
_UNIMPORTED = sorted(n for n in sys.stdlib_module_names
                     if n not in sys.modules and not n.startswith("_"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target=st.sampled_from(_CALLABLES), true_hash=st.booleans(),
       random_hash=st.text("0123456789abcdef", min_size=64, max_size=64),
       with_source=st.booleans())
def test_stdlib_and_package_refs_never_resolve(target: tuple[str, Any], true_hash: bool,
                                               random_hash: str, with_source: bool) -> None:
    ref, fn = target
    digest = impls.fingerprint_function(fn)[0] if true_hash else random_hash
    if registry.registered_function(digest) is not None:
        return  # this test process defined a factory with that very hash itself
    module: dict[str, Any] = {"type": "python", "ref": ref, "hash": digest}
    if with_source:
        module["source"] = "import os\nos.system('exit 1')\n"
    with pytest.raises(UnknownImplementationError):
        registry.resolve_function(module)
    with pytest.raises(UnknownImplementationError):
        materialize({"/": {"nodeFactory@1": {"module": module, "kind": "lift",
                                             "argumentSchema": {}, "curried": []}}})


@settings(max_examples=100, deadline=None)
@given(name=st.sampled_from(_UNIMPORTED),
       qualname=st.from_regex(r"\A[a-z_][a-z0-9_]{0,12}\Z"),
       digest=st.text("0123456789abcdef", min_size=64, max_size=64))
def test_refs_to_unimported_modules_import_nothing(name: str, qualname: str,
                                                   digest: str) -> None:
    before = set(sys.modules)
    for policy in (registry.UNTRUSTED, registry.TrustPolicy.of(["myapp"], True)):
        with pytest.raises(UnknownImplementationError):
            registry.resolve_function({"type": "python", "ref": f"{name}:{qualname}",
                                       "hash": digest}, policy)
        assert registry.resolve_pattern(digest, f"{name}:{qualname}", policy) is None
    assert set(sys.modules) == before


def test_a_bad_policy_is_a_clear_error() -> None:
    with pytest.raises(TypeError, match="list of module-name prefixes"):
        Runtime(trusted_modules="myapp")
    with pytest.raises(ValueError, match="not a dotted module name"):
        Runtime(trusted_modules=["my app"])
    with pytest.raises(ValueError, match="not a dotted module name"):
        Runtime(trusted_modules=[""])
    rt = Runtime(trusted_modules=["myapp.patterns"])
    try:
        assert rt.trust.trusts("myapp.patterns") and rt.trust.trusts("myapp.patterns.sub")
        assert not rt.trust.trusts("myapp.patternsx") and not rt.trust.trusts("myapp")
    finally:
        rt.close()


def test_a_schema_never_reads_files_or_the_network(tmp_path: Path) -> None:
    """Stored schemas are compiled by fastjsonschema, which would follow a remote ``$ref``."""
    secret = tmp_path / "remote.json"
    secret.write_text('{"type": "integer"}')
    rt = Runtime()
    try:
        for ref in (f"file://{secret}", "http://127.0.0.1:9/schema.json", 5):
            cell = rt.get_cell(f"schema-{ref}", schema={"$ref": ref})
            with pytest.raises(ValueError, match=r"\$ref .* is not allowed"):
                cell.set(3)
            assert cell.get_raw() is None  # nothing was written
        local = rt.get_cell("local", schema={"$defs": {"n": {"type": "integer"}},
                                             "$ref": "#/$defs/n"})
        local.set(3)
        with pytest.raises(ValueError):
            local.set("x")
    finally:
        rt.close()


# ------------------------------------------------------------------ what the registry keeps


def test_patterns_defined_and_dropped_leave_no_registry_entry() -> None:
    import gc

    from cellkernel import derive, pattern

    def define(k: int) -> Any:
        @pattern
        def Dropped(x: int = 0):  # type: ignore[no-untyped-def]
            return {"y": derive(x, lambda v: v + k),
                    "ys": x.map(lambda e: derive(e, len))}  # type: ignore[attr-defined]

        return Dropped

    gc.collect()
    functions, patterns = len(registry._functions), len(registry._patterns)
    made = [define(k) for k in range(200)]
    assert len(registry._patterns) >= patterns + 200  # each pattern and its map callback
    del made
    gc.collect()
    assert len(registry._functions) <= functions + 1
    assert len(registry._patterns) <= patterns + 1


def test_a_running_instance_keeps_what_it_needs_after_its_pattern_is_dropped() -> None:
    import gc

    from cellkernel import derive, pattern

    def define() -> Any:
        @pattern
        def Doubler(items: list[Any] = []):  # type: ignore[no-untyped-def]  # noqa: B006 - a schema default
            return {"out": items.map(lambda e: derive(e, lambda v: v * 2))}  # type: ignore[attr-defined]

        return Doubler

    rt = Runtime()
    try:
        src = rt.get_cell("src")
        src.set([1, 2])
        result = rt.run(define(), {"items": src}, cause="doubler")
        gc.collect()  # the pattern object is gone; the instance must not be
        src.push(3)
        assert result.out.get() == [2, 4, 6]
        assert rt.errors == []
    finally:
        rt.close()
