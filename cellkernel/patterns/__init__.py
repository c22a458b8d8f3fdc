"""Patterns: the builder, factories as values, the registry and the runner."""
