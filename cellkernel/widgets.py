"""The widget helpers' public home (SPEC §9): ``from cellkernel.widgets import bind, ui``.

They live in ``cellkernel.notebook.widgets``; this module is their public name.
"""

from cellkernel.notebook.widgets import (
    GraphView,
    PatternUI,
    PatternView,
    bind,
    error_output,
    field_kinds,
    pattern_view,
    run_guarded,
    show,
    ui,
)

__all__ = ["GraphView", "PatternUI", "PatternView", "bind", "error_output", "field_kinds",
           "pattern_view", "run_guarded", "show", "ui"]
