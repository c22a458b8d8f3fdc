"""``python -m cellkernel``: the same as the ``cellkernel`` console script."""

from __future__ import annotations

from cellkernel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
