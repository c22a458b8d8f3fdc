"""Cells and the scheduler: reactive reads and writes over a store."""
