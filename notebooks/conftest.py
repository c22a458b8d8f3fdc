"""nbval collection for the tutorials (``pytest --nbval ... notebooks/``).

The deterministic ``text/plain`` representations carry the assertions; the
graph SVG, HTML tables, JavaScript and widget views vary between runs and
machines, and stderr only carries environment warnings (e.g. fontconfig's),
so they are not compared.
"""

from __future__ import annotations

from typing import Any

SKIP = (
    "image/svg+xml",
    "text/html",
    "text/vnd.mermaid",
    "application/javascript",
    "application/vnd.jupyter.widget-view+json",
    "stderr",
)


def pytest_collectstart(collector: Any) -> None:
    if collector.fspath and collector.fspath.ext == ".ipynb":
        collector.skip_compare = tuple(collector.skip_compare) + SKIP
