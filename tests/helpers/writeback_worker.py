"""Worker for tests/store/test_writeback.py: run, kill mid-settle, read, resume the chain.

    python writeback_worker.py start|read|resume <db>

Prints one JSON line: the result id (start), the stored values (read, without
starting anything) or the values after resuming.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures"))

import writeback_mod as m

from cellkernel import Runtime

KEYS = ("x", "a", "b", "c")


def main(mode: str, db: str) -> None:
    rt = Runtime(store=f"sqlite:///{db}")
    if mode == "start":
        result = rt.run(m.Chain, {"x": 1}, cause="writeback-chain")
        rt.idle()
        print(json.dumps({"id": result.entity_id, **{k: result.key(k).get() for k in KEYS}}),
              flush=True)
        result.key("x").set(5)  # $WRITEBACK_KILL_AT=11: ``last`` kills the process mid-settle
        print(json.dumps({"survived": True}), flush=True)
    elif mode == "read":
        result = rt.cell_at(sys.argv[3])
        print(json.dumps({k: result.key(k).get() for k in KEYS}))
    else:
        result = rt.resume("writeback-chain")
        rt.idle()
        print(json.dumps({k: result.key(k).get() for k in KEYS}))
    rt.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
