// GraphView front end (cellkernel.widgets.GraphView): a plain ES module, no build
// step and no network imports. The kernel sends `svg` (redrawn only when the graph
// changes) and `nodes` (status, run count, value, error per node); this restyles
// the drawn nodes in place: red on error, a short flash when a node has just run.

const FLASH_MS = 700;

function stripProlog(svg) {
  // the XML prolog and doctype mean nothing inside HTML
  return (svg || "").replace(/<\?xml[^>]*\?>/g, "").replace(/<!DOCTYPE[^>]*>/gi, "");
}

function indexNodes(root) {
  // graphviz puts the DOT node name in <title> (and in id= when the DOT sets one)
  const byKey = new Map();
  for (const g of root.querySelectorAll("g.node")) {
    const title = g.querySelector("title:not(.ck-tip)");
    if (title) byKey.set(title.textContent.trim(), g);
    if (g.id) byKey.set(g.id, g);
  }
  return byKey;
}

function find(byKey, node) {
  for (const key of node.keys || [node.id]) {
    const g = byKey.get(key);
    if (g) return g;
  }
  return null;
}

function flash(g) {
  g.classList.remove("ck-ran");
  // restart the animation even if the class was still set
  void g.getBoundingClientRect();
  g.classList.add("ck-ran");
  setTimeout(() => g.classList.remove("ck-ran"), FLASH_MS);
}

function render({ model, el }) {
  el.classList.add("ck-graph-view");
  const canvas = document.createElement("div");
  canvas.className = "ck-graph-canvas";
  // node errors, always in view (name, exception, message, the user's line)
  const errorList = document.createElement("div");
  errorList.className = "ck-graph-errors";
  const details = document.createElement("details");
  details.className = "ck-graph-values";
  const summary = document.createElement("summary");
  const table = document.createElement("table");
  details.append(summary, table);
  el.append(errorList, canvas, details);

  let byKey = new Map();
  const seenRuns = new Map();

  function decorate(animate) {
    const nodes = model.get("nodes") || [];
    let errors = 0;
    table.replaceChildren();
    errorList.replaceChildren();
    for (const node of nodes) {
      const g = find(byKey, node);
      const failed = node.status === "error";
      if (failed) {
        errors += 1;
        const pre = document.createElement("pre");
        pre.className = "ck-graph-error";
        pre.textContent = `${node.name}: ${node.error}`;
        errorList.append(pre);
      }
      if (g) {
        g.classList.toggle("ck-error", failed);
        g.classList.toggle("ck-idle", node.status === "idle");
        let tip = g.querySelector("title.ck-tip");
        const text = `${node.name} = ${node.value}${failed ? "\n" + node.error : ""}`;
        if (!tip) {
          tip = document.createElementNS("http://www.w3.org/2000/svg", "title");
          tip.classList.add("ck-tip");
          g.prepend(tip);
        }
        tip.textContent = text;
        if (animate && node.runs > (seenRuns.get(node.id) ?? 0)) flash(g);
      }
      seenRuns.set(node.id, node.runs);
      const row = table.insertRow();
      row.className = failed ? "ck-row-error" : "";
      row.insertCell().textContent = node.name;
      row.insertCell().textContent = failed ? node.error : node.value;
    }
    summary.textContent =
      `${nodes.length} nodes` + (errors ? `, ${errors} in error` : "");
    // open while something is in error, so the table shows the stale values too
    if (errors) details.open = true;
  }

  function draw() {
    const svg = model.get("svg");
    if (svg) {
      canvas.innerHTML = stripProlog(svg);
    } else {
      canvas.replaceChildren();
      const note = document.createElement("pre");
      note.textContent = "(no graph: the DOT renderer is not available)";
      canvas.append(note);
    }
    byKey = indexNodes(canvas);
    decorate(false);
  }

  const onNodes = () => decorate(true);
  model.on("change:svg", draw);
  model.on("change:nodes", onNodes);
  draw();
  return () => {
    model.off("change:svg", draw);
    model.off("change:nodes", onNodes);
  };
}

export default { render };
