"""Values, identity, links and schemas: pure functions over JSON."""
