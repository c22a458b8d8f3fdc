"""Subprocess worker for tests/test_storage.py: real processes sharing one SQLite file.

Usage:
    storage_worker.py counter DB N   # print "ready", wait for a line on stdin, then do N
                                     # read-increment-commit loops with retry; print
                                     # "done <conflicts>"
    storage_worker.py writer DB      # commit {"n": k, "copy": k, "pad": [k]*PAD} forever,
                                     # printing each acknowledged version
"""

from __future__ import annotations

import sys
import time

from cellkernel.errors import ConflictError
from cellkernel.store.documents import Document
from cellkernel.store.sqlite import SqliteStore

SPACE = "test"
COUNTER = "counter"
WRITER = "torn"
PAD = 2000  # big enough that one document spans several SQLite pages


def counter(db: str, n: int) -> None:
    store = SqliteStore(db)
    print("ready", flush=True)
    sys.stdin.readline()
    conflicts = 0
    for _ in range(n):
        while True:
            doc = store.load(SPACE, COUNTER)
            count = doc.value["count"] if doc is not None and isinstance(doc.value, dict) else 0
            assert isinstance(count, int)
            version = doc.version if doc is not None else 0
            time.sleep(0.0002)  # widen the read-to-commit window so processes really race
            try:
                store.commit(
                    SPACE, {COUNTER: Document({"count": count + 1})}, {(SPACE, COUNTER): version}
                )
                break
            except ConflictError:
                conflicts += 1
    store.close()
    print(f"done {conflicts}", flush=True)


def writer(db: str) -> None:
    store = SqliteStore(db)
    while True:
        doc = store.load(SPACE, WRITER)
        version = doc.version if doc is not None else 0
        k = version + 1
        [change] = store.commit(
            SPACE,
            {WRITER: Document({"n": k, "copy": k, "pad": [k] * PAD}, meta={"k": k})},
            {(SPACE, WRITER): version},
        )
        assert change.after.version == k
        print(k, flush=True)


def main(argv: list[str]) -> None:
    mode, db, *rest = argv
    if mode == "counter":
        counter(db, int(rest[0]))
    elif mode == "writer":
        writer(db)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
