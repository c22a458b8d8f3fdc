"""Jupyter: the %%pattern magic, displays and widgets."""
