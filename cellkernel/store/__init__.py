"""Documents, the Store contract (memory, SQLite) and transactions."""
