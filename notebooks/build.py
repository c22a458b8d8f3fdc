"""Regenerate the tutorial notebooks (sources only; execute them afterwards).

    .venv/bin/python notebooks/build.py
    .venv/bin/jupyter nbconvert --to notebook --execute --inplace \
        --ExecutePreprocessor.kernel_name=python3 notebooks/0*.ipynb
    .venv/bin/python notebooks/build.py --clean

Each tutorial teaches one thing and has one cell tagged ``raises-exception``
showing the error a user meets when they get it wrong.  Outputs are committed;
``make test`` checks them with nbval (``notebooks/nbval_sanitize.cfg``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
RAISES = "raises-exception"


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


NOTEBOOKS: dict[str, list[nbformat.NotebookNode]] = {}

NOTEBOOKS["01_quickstart"] = [
    md("""
# 01 · Quick start: a live counter

Load the extension, write a pattern in a `%%pattern` cell, drive it with
widgets, and look at its graph.
"""),
    code("""
%load_ext cellkernel
from cellkernel import Cell, derive, handler
"""),
    md("""
A `%%pattern NAME` cell is a pattern body. `count = Cell.of(0)` is state (its
cause is the variable name, so it survives edits); `doubled` is derived;
`increment` is a handler bound to `count`. The final dict is the result, and
`counter` is bound to the live result cell. Below the text you get the graph
and live widgets: press **increment**.
"""),
    code("""
%%pattern counter
count = Cell.of(0)

@handler
def increment(event, count):
    count.set(count.get() + 1)

doubled = derive(count, lambda c: c * 2)
{"count": count, "doubled": doubled, "increment": increment(count=count)}
"""),
    md("""
`counter` is a cell: read fields with `.get()`, send events to the handler's
stream with `.send()`.
"""),
    code("""
counter.increment.send({})
counter.count.get(), counter.doubled.get()
"""),
    md("""
Typing a cell's name shows the cell itself: its value (as text, and as a
table), and in a running kernel its live controls and graph.
"""),
    code("""
counter
"""),
    md("""
Widgets for any result: `cellkernel.widgets.ui` builds editable controls for
state, read-only displays for derived values and a button per handler.
Widget actions are ordinary Python calls, so we can drive them here too.
"""),
    code("""
from cellkernel.widgets import ui

panel = ui(counter)
panel.controls["increment"].click()
print("count:", counter.count.get(), "| widget shows:", panel.controls["count"].value)
panel
"""),
    md("Setting the `count` control writes the cell; `doubled` follows."),
    code("""
panel.controls["count"].value = 10
counter.doubled.get()
"""),
    md("""
The graph: the instance's stored snapshot, printed as text here (the SVG is
shown by `%%pattern` and by the snapshot's own rich display).
"""),
    code("""
from cellkernel.notebook.session import runtime

print(runtime().snapshot(counter).summary())
"""),
    md("""
A lift that fails does not stop anything. The output says which node failed,
with the exception and the line of the cell that raised, and marks the value
it left behind as stale (`tw0` is a typo for `2`):
"""),
    code("""
%%pattern typo
count = Cell.of(1)
doubled = derive(count, lambda c: c * tw0)
{"count": count, "doubled": doubled}
"""),
    md("""
Fix the typo and re-run the cell: the error and the stale mark go away.
`%cellkernel errors` lists every node error so far, and `%cellkernel status`
tells what the notebook's runtime holds (`%cellkernel?` explains them, and
`%cellkernel store sqlite:///state.db` keeps state across kernel restarts).
"""),
    code("""
%cellkernel status
"""),
    md("""
**Getting it wrong:** inside a `%%pattern` body, `count` is not a value yet
but a *ref* to a cell of the graph being built. Calling `.get()` on it fails;
use `derive` (or a `@lift` function) to compute from it:
"""),
    code("""
%%pattern broken
count = Cell.of(0)
doubled = count.get() * 2
{"count": count, "doubled": doubled}
""", RAISES),
]

NOTEBOOKS["02_handlers_and_widgets"] = [
    md("""
# 02 · Handlers, errors in place, and batches

Handlers run once per event, in order, each in its own transaction. A handler
that raises does not stop the runtime: the error is recorded and shown where
the event came from. `rt.batch()` groups writes so derived values settle once.
"""),
    code("""
from cellkernel import Runtime, Cell, handler, lift, pattern
from cellkernel.widgets import ui

@lift
def total(items):
    return sum(i["amount"] for i in items)

@handler
def add(event, items):
    amount = event["amount"]
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    items.push({"amount": amount})

@pattern
def Ledger(items: list = []):
    return {"items": items, "total": total(items), "add": add(items=items)}

rt = Runtime()
ledger = rt.run(Ledger, {}, cause="ledger")
ledger.add.send({"amount": 5})
ledger.add.send({"amount": 7})
ledger.total.get()
"""),
    md("""
A bad event: the handler raises, its transaction is discarded (nothing is
written), and the runtime records a `NodeError` in `rt.errors`.
"""),
    code("""
ledger.add.send({"amount": -3})
print("total still", ledger.total.get())
print("errors:", len(rt.errors))
print(type(rt.errors[-1]).__name__, "-", rt.errors[-1].error if hasattr(rt.errors[-1], "error") else rt.errors[-1])
"""),
    md("""
In the widgets the same error appears *in place*, under the button that sent
the event (the panel's per-control output area):
"""),
    code("""
panel = ui(ledger)
panel.send(ledger.add, {"amount": 0}, panel.outputs["add"])
print(len(panel.outputs["add"].outputs), "error shown under the add button")
print(panel.outputs["add"].outputs[0].get("ename"), panel.outputs["add"].outputs[0].get("evalue"))
panel
"""),
    md("""
`rt.batch()`: several writes, one propagation. `total` recomputes once,
at the end of the block.
"""),
    code("""
runs = []

@lift
def watched_total(items):
    runs.append(len(items))
    return sum(i["amount"] for i in items)

@pattern
def Watched(items: list = []):
    return {"items": items, "total": watched_total(items)}

w = rt.run(Watched, {}, cause="watched")
runs.clear()
with rt.batch():
    w.items.push({"amount": 1})
    w.items.push({"amount": 2})
    w.items.push({"amount": 3})
rt.idle()
print("total", w.total.get(), "after", len(runs), "recomputation(s)")
"""),
    md("""
**Getting it wrong:** events must be JSON values. A Python object that is not
JSON (a set here) is refused before anything is written:
"""),
    code("""
ledger.add.send({"amount": {1, 2}})
""", RAISES),
]

NOTEBOOKS["03_cause_stability"] = [
    md("""
# 03 · Cause stability: edit, re-run, read the report

Every node's id is derived from its causes. Edit one node and re-run the
cell: only that node and what depends on it get new ids; state elsewhere is
kept. The `%%pattern` output reports kept / changed / added / removed.
"""),
    code("""
%load_ext cellkernel
from cellkernel import Cell, derive
"""),
    code("""
%%pattern shop --no-ui --no-graph
price = Cell.of(10)
qty = Cell.of(2)
total = derive([price, qty], lambda pq: pq[0] * pq[1])
{"price": price, "qty": qty, "total": total}
"""),
    code("""
shop.qty.set(5)
shop.total.get()
"""),
    md("""
Now we "edit" the cell: `total` gets a 10% tax. (In a real notebook you
would edit the cell above and re-run it; here the edited version is a second
cell with the same name.) `price` and `qty` keep their ids **and their
values** (`qty` is still 5); `total` changed.
"""),
    code("""
%%pattern shop --no-ui --no-graph
price = Cell.of(10)
qty = Cell.of(2)
total = derive([price, qty], lambda pq: round(pq[0] * pq[1] * 1.1, 2))
{"price": price, "qty": qty, "total": total}
"""),
    md("""
What counts, exactly (SPEC §6): a node's id changes when anything that decides
its behaviour changes — its code (comments, docstrings and layout aside), a
default, a literal argument (a `fmt` template, an `if_else` branch), a
constant it captures, a module-level global it reads — or when an input's id
changes. Renaming a variable, reordering statements, adding an unrelated node
or importing the same code under another module name changes no id. Inside a
nested pattern or a `map` callback the same holds at every depth: the nested
node is known by its call site, so an inner edit touches only the inner node
and what reads it. Identical twins are told apart by the names they are bound
to, never by their order alone; an id kept under a new name is reported as
*moved*.
"""),
    md("""
A state cell without a variable name (here inside a list) has no name to take
its cause from. `.for_("...")` gives it one explicitly, so it stays stable
when other things around it change.
"""),
    code("""
%%pattern tags --no-ui --no-graph
items = [Cell.of("red").for_("first"), Cell.of("blue").for_("second")]
{"first": items[0], "second": items[1]}
"""),
    md("""
The same check outside a notebook: `python -m cellkernel inspect-causes`
runs a pattern from a file and prints each cell's id; `--against` compares
two versions.
"""),
    code("""
from pathlib import Path

_ = Path("shop_v1.py").write_text('''
from cellkernel import pattern, lift

@lift
def total(price, qty):
    return price * qty

@pattern
def Shop(price: int = 10, qty: int = 2):
    return {"price": price, "qty": qty, "total": total(price, qty)}
''')
_ = Path("shop_v2.py").write_text(Path("shop_v1.py").read_text().replace(
    "return price * qty", "return round(price * qty * 1.1, 2)"))
"""),
    code("""
import sys
!{sys.executable} -m cellkernel inspect-causes shop_v2.py --against shop_v1.py --color never 2>/dev/null
"""),
    code("""
Path("shop_v1.py").unlink(); Path("shop_v2.py").unlink()
"""),
    md("""
**Getting it wrong:** `.for_()` names a cell *before* it is connected to a
graph. Calling it on a cell that is already live is a `CauseError`:
"""),
    code("""
shop.price.for_("price-again")
""", RAISES),
]

NOTEBOOKS["04_dynamic_instantiation"] = [
    md("""
# 04 · Dynamic instantiation: Members and Records

`Members` keeps a list of records. Submitting a name either links an existing
record with that title or creates a new, live `Record` instance from inside a
handler. `Members` never imports `Record`: it gets the factory as a value.
"""),
    code("""
from cellkernel import Runtime
from cellkernel.examples.members import Members, Record

rt = Runtime()
people = rt.run(Members, {"factory": Record}, cause="people")
people.submit.send({"name": "Ada"})
people.submit.send({"name": "Grace"})
people.titles.get(), people.count.get()
"""),
    md("Each member is a live instance: its handlers fire and its lifts recompute."),
    code("""
ada = people.members[0]
ada.rename.send({"title": "Ada L."})
ada.set_notes.send({"notes": "first programmer"})
print(ada.summary.get())
print(people.titles.get())
"""),
    md("""
Records have their own team (a `Members` of records). Submitting a name that
already exists anywhere in the space *links* that record instead of making a
duplicate:
"""),
    code("""
ada.members.submit.send({"name": "Grace"})
grace_in_team = ada.members.members[0]
grace_in_team.set_notes.send({"notes": "COBOL"})
print(ada.summary.get())
print(people.members[1].summary.get())
"""),
    md("""
Errors the user can fix are written to the `error` field; nothing else
changes. (The messages are written for a form where the name is typed into a
text box; here the name arrives as the event's `name`.)
"""),
    code("""
people.submit.send({"name": "ada l."})
print(people.error.get())
people.submit.send({"name": "   "})
print(people.error.get())
print(people.count.get())
"""),
    md("""
**Getting it wrong:** a record is a live instance; writing a field of it with
a value that is not JSON is refused:
"""),
    code("""
ada.title.set(float("nan"))
""", RAISES),
]

NOTEBOOKS["05_factories_as_values"] = [
    md("""
# 05 · Factories are values: store, curry, materialize

`lift`, `handler` and `pattern` factories are values: serialise them with
`to_json()` (a `nodeFactory@1` description), store them in cells, curry
arguments into them, and turn the JSON back into a factory with `materialize`.
"""),
    code("""
from cellkernel import Runtime, Cell, lift, pattern, materialize, instantiate

@lift
def scale(factor, x):
    return factor * x

@pattern
def Scaled(x: int = 1):
    return {"x": x, "y": scale(3, x)}

desc = Scaled.to_json()
sorted(desc)
"""),
    md("Curry: fix the first argument, get a new factory."),
    code("""
triple = scale.curry(3)

@pattern
def Tripled(x: int = 1):
    return {"x": x, "y": triple(x)}

rt = Runtime()
t = rt.run(Tripled, {"x": 4}, cause="tripled")
t.y.get()
"""),
    md("Materialize: JSON back into a pattern you can run, here with a new cause."),
    code("""
import json

stored = json.loads(json.dumps(desc))       # e.g. read back from a cell or a file
again = materialize(stored)
s = rt.run(again, {"x": 7}, cause="from-json")
s.y.get()
"""),
    md("""
Where the code comes from: `materialize` finds each implementation by its
hash among the factories this process defined (here `scale`, above). Stored
data never picks code. In a new process, import the module that defines your
factories first, or name it in `Runtime(trusted_modules=["myapp.patterns"])`
so that resolution may import it. Source carried in a sigil compiles only
under `Runtime(trust_source=True)`, and only after its hash is checked.
Anything else is an `UnknownImplementationError`, and nothing runs.
"""),
    md("""
A factory stored in a cell, instantiated later from inside a handler (the
same mechanism `Members` uses in tutorial 04):
"""),
    code("""
from cellkernel import handler

@handler
def spawn(event, children, factory):
    children.push(instantiate(factory.get(), {"x": event["x"]}))

@pattern
def Spawner(children: list = [], factory=None):
    return {"children": children, "spawn": spawn(children=children, factory=factory)}

sp = rt.run(Spawner, {"factory": Scaled}, cause="spawner")
sp.spawn.send({"x": 2})
sp.spawn.send({"x": 5})
[child["y"] for child in sp.children.get()]
"""),
    md("""
**Getting it wrong:** `materialize` checks its input. Something that is
neither a `nodeFactory@1` sigil nor a pattern graph is a `ValueError`:
"""),
    code("""
materialize({"name": "Scaled", "graph": "not a graph"})
""", RAISES),
]

NOTEBOOKS["06_persistence"] = [
    md("""
# 06 · Persistence: SQLite and resuming

With `Runtime("sqlite:///file.db")` every cell lives in one SQLite file, and
each instance stores its graph snapshot. A second `Runtime` on the same file
(another process, or a new kernel) sees the values and can **resume** the
instance from storage alone.
"""),
    code("""
import tempfile
from pathlib import Path
from cellkernel import Runtime, lift, handler, pattern

tmp = tempfile.TemporaryDirectory()
url = f"sqlite:///{Path(tmp.name) / 'state.db'}"

@lift
def double(x):
    return x * 2

@handler
def increment(event, count):
    count.set(count.get() + 1)

@pattern
def Counter(count: int = 0):
    return {"count": count, "doubled": double(count), "increment": increment(count=count)}

rt1 = Runtime(url)
c1 = rt1.run(Counter, {"count": 5}, cause="counter")
c1.increment.send({})
c1.count.get(), c1.doubled.get()
"""),
    md("A second runtime on the same file resumes the instance by its cause:"),
    code("""
rt2 = Runtime(url)
c2 = rt2.resume("counter")
c2.count.get(), c2.doubled.get()
"""),
    md("""
Resuming needs the code but not the author function: each lift and handler
is found by its hash among the factories defined in this process (here, the
ones defined above). In a new process or kernel, first import the module (or
re-run the cell) that defines them. Or let the runtime import a module you
trust: `Runtime(url, trusted_modules=["myapp.patterns"])`.
"""),
    md("""
The resumed instance is live: its handler runs and its lift recomputes.
The first runtime picks up the other's commit at its next `idle()`.
"""),
    code("""
c2.increment.send({})
print("rt2:", c2.count.get(), c2.doubled.get())
rt1.idle()
print("rt1:", c1.count.get())
"""),
    code("""
rt1.close(); rt2.close()
"""),
    md("""
**Getting it wrong:** resuming a cause that was never run (or a typo in it)
finds nothing to resume:
"""),
    code("""
rt3 = Runtime(url)
try:
    rt3.resume("countr")
finally:
    rt3.close()
    tmp.cleanup()
""", RAISES),
]

NOTEBOOKS["07_snapshots"] = [
    md("""
# 07 · Graph snapshots: inspect, diff, teardown

Every instance stores a `GraphSnapshot`: its cells, nodes and links, with a
generation that increases each time the instance is re-run with a changed
graph. Snapshots diff against each other; re-running a `%%pattern` cell tears
down the nodes that are gone.
"""),
    code("""
%load_ext cellkernel
from cellkernel import Cell, derive
from cellkernel.notebook.session import runtime
rt = runtime()
"""),
    code("""
%%pattern temps --no-ui --no-graph
celsius = Cell.of(20)
fahrenheit = derive(celsius, lambda c: c * 9 / 5 + 32)
{"celsius": celsius, "fahrenheit": fahrenheit}
"""),
    code("""
before = rt.snapshot(temps)
print(before.summary())
"""),
    md("Re-run with a node removed and one added:"),
    code("""
%%pattern temps --no-ui --no-graph
celsius = Cell.of(20)
kelvin = derive(celsius, lambda c: c + 273.15)
{"celsius": celsius, "kelvin": kelvin}
"""),
    code("""
after = rt.snapshot(temps)
print(after.summary())
print()
print(before.diff(after).to_text())
"""),
    md("""
Teardown: the `fahrenheit` node is gone. Writing `celsius` recomputes
`kelvin` only; nothing else runs for the old graph.
"""),
    code("""
temps.celsius.set(100)
rt.idle()
temps.get()
"""),
    md("""
**Getting it wrong:** snapshots are validated when they are loaded. A
snapshot that was edited by hand (here: its cells dropped) is a pydantic
`ValidationError`, and nothing runs from it:
"""),
    code("""
from cellkernel import GraphSnapshot

damaged = after.model_dump()
del damaged["cells"]
GraphSnapshot.model_validate(damaged)
""", RAISES),
]


NOTEBOOKS["08_shared_spaces"] = [
    md("""
# 08 · Shared spaces on PostgreSQL

Two people's notebooks, or a notebook and a service, can work on one space:
point their runtimes at one PostgreSQL database. Every commit is announced
with `LISTEN`/`NOTIFY`, and a runtime made in a kernel (where an asyncio loop
is running) applies the other runtimes' commits as they arrive: sinks run,
lifts recompute, widgets update, with no cell run.

Here two runtimes in one kernel stand for two kernels. The URL comes from the
environment (`CELLKERNEL_STORE=postgresql://user@host:port/db`, which is also
what `%load_ext cellkernel` uses); install the driver with
`pip install 'cellkernel[postgres]'`.
"""),
    code("""
import asyncio
import os
from cellkernel import ConflictError, Runtime, handler, lift, pattern

url = os.environ["CELLKERNEL_STORE"]
print(url.split("://")[0])

@lift
def double(x):
    return (x or 0) * 2

@handler
def increment(event, count):
    count.set(count.get() + (event or {}).get("amount", 1))

@pattern
def Counter(count: int = 0):
    return {"count": count, "doubled": double(count), "increment": increment(count=count)}
"""),
    md("""
Alice runs the counter; Bob, in his own runtime, resumes the same instance
from the database (the lift and handler are found by hash among the ones
defined above, as in tutorial 06).
"""),
    code("""
alice = Runtime(url)
bob = Runtime(url)
alice_counter = alice.run(Counter, {"count": 0}, cause="shared-counter")
alice_counter.count.set(0)  # start from zero, whatever an earlier run left
bob_counter = bob.resume("shared-counter")
bob_counter.count.get(), bob_counter.doubled.get()
"""),
    md("""
Bob watches the count with a sink. Alice sends three events; nothing calls
Bob's runtime, yet his sink sees the result as soon as the kernel's loop is
free (here: while the cell awaits).
"""),
    code("""
seen = []
arrived = asyncio.Event()

def watch(value):
    seen.append(value)
    if value == 3:
        arrived.set()

stop_watching = bob_counter.count.sink(watch)
for _ in range(3):
    alice_counter.increment.send({})
await asyncio.wait_for(arrived.wait(), timeout=30)
print("Bob's sink saw:", seen[-1], "| Bob's doubled:", bob_counter.doubled.get())
"""),
    md("""
Reads outside a transaction are fresh: they see every commit that landed
before them. Bob's handler writes, Alice reads right away:
"""),
    code("""
bob_counter.increment.send({"amount": 10})
alice_counter.count.get(), alice_counter.doubled.get()
"""),
    md("""
Both runtimes write the same document, so commits are compare-and-swap: a
transaction whose reads went stale in the meantime fails whole with
`ConflictError`, and `edit_with_retry` runs it again on fresh data.
"""),
    code("""
try:
    with alice.edit() as tx:
        mine = alice_counter.count.with_tx(tx)
        value = mine.get()
        bob_counter.count.set(100)  # Bob commits first
        mine.set(value + 1)         # Alice's basis is stale
except ConflictError:
    print("conflict: nothing of Alice's transaction landed;", alice_counter.count.get())

def add_one(tx):
    mine = alice_counter.count.with_tx(tx)
    mine.set(mine.get() + 1)

alice.edit_with_retry(add_one)
bob_counter.count.get()
"""),
    code("""
stop_watching()
alice.close(); bob.close()
"""),
    md("""
**Getting it wrong:** a URL naming a server that is not there fails within
seconds (`connect_timeout`, 5 s by default) with an error naming host, port
and database:
"""),
    code("""
Runtime("postgresql://nobody@127.0.0.1:1/nowhere")
""", RAISES),
]


ROOT = HERE.parent
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _no_paths(text: str) -> str:
    """Machine paths out of saved text: the checkout, the venv, kernel temp files."""
    text = text.replace(str(ROOT) + "/", "")
    text = re.sub(r"\S*/site-packages/", "…/site-packages/", text)
    return re.sub(r"/tmp/ipykernel_\d+/\d+\.py", "<cell>", text)


def clean() -> None:
    """Make executed notebooks read well anywhere, trusted or not.

    Drops environment noise (stderr warnings), the widget views (a saved view
    without the kernel is a broken-widget icon; the text and HTML beside it
    stay) and the widget state, and takes this machine's paths out of tracebacks.
    """
    for name in NOTEBOOKS:
        path = HERE / f"{name}.ipynb"
        nb = nbformat.read(path, as_version=4)
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            kept = []
            for output in cell.outputs:
                if output.output_type == "stream" and output.name == "stderr" \
                        and "Fontconfig warning" in output.text:
                    continue
                data = output.get("data")
                if data is not None and WIDGET_VIEW in data:
                    del data[WIDGET_VIEW]
                    if not data:
                        continue
                if output.output_type == "error":
                    output.traceback = [_no_paths(line) for line in output.traceback]
                kept.append(output)
            cell.outputs = kept
        nbformat.write(nb, path)


def main() -> None:
    if "--clean" in sys.argv:
        clean()
        return
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nbformat.write(nb, HERE / f"{name}.ipynb")


if __name__ == "__main__":
    main()
