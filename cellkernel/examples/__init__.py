"""Worked examples of cellkernel patterns.

* ``cellkernel.examples.members``: ``Members`` and ``Record`` — a pattern that
  creates instances of another pattern it receives as a value (SPEC §8).
"""
