"""Subprocess worker for tests/test_resume.py and tests/test_reliability.py.

Every command opens its own ``Runtime`` on a SQLite file, so the tests see
what a fresh process sees.  ``tests/fixtures`` must be on ``PYTHONPATH`` (the
tests set it) so the fixture module imports as ``reliability_mod``.
Results are printed as one JSON line.

Usage:
    reliability_worker.py run DB CAUSE ARG_JSON        # run make_counter(); send {"amount": 2}
    reliability_worker.py resume DB CAUSE OPS_JSON     # resume, then apply OPS (see _apply)
    reliability_worker.py commits DB                   # rt-level commits forever, print each k
    reliability_worker.py read DB                      # the cells `commits` writes, as JSON
    reliability_worker.py pair DB                      # a handler killed between two writes
    reliability_worker.py counter DB N RETRIES [WINDOW]  # "ready", wait for stdin, N increments
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from cellkernel import ConflictError, Runtime, Stream, UnknownImplementationError

PAD = 1500  # big enough that the `commits` document spans several SQLite pages


def _url(db: str) -> str:
    return f"sqlite:///{db}"


def _plain(value: Any) -> Any:
    """A result value as JSON: streams become the string "<stream>"."""
    if isinstance(value, Stream):
        return "<stream>"
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def _traces() -> list[str]:
    mod = sys.modules.get("reliability_mod")
    return list(getattr(mod, "TRACES", []))


def cmd_run(db: str, cause: str, argument: str) -> None:
    import reliability_mod as m

    rt = Runtime(store=_url(db))
    result = rt.run(m.make_counter(), json.loads(argument), cause=cause)
    result.key("increment").send({"amount": 2})
    rt.idle()
    _emit({"value": _plain(result.get()), "errors": [str(e) for e in rt.errors]})
    rt.close()


def _apply(rt: Runtime, result: Any, ops: list[dict[str, Any]]) -> list[Any]:
    """Each op: {"send": key, "event": ...} or {"set": key, "value": ...}; value after each."""
    seen = []
    for op in ops:
        if "send" in op:
            result.key(op["send"]).send(op.get("event"))
        else:
            result.key(op["set"]).set(op["value"])
        rt.idle()
        seen.append(_plain(result.get()))
    return seen


def cmd_resume(db: str, cause: str, ops_json: str) -> None:
    # the fixture's module is trusted, so resolution may import it (SPEC §8); its
    # decorators define the lifts, and no pattern body runs at import
    rt = Runtime(store=_url(db), trusted_modules=["reliability_mod"])
    out: dict[str, Any] = {"modules_before": "reliability_mod" in sys.modules}
    try:
        result = rt.resume(cause)
    except UnknownImplementationError as exc:
        out.update(error=type(exc).__name__, message=str(exc))
    else:
        out["resumed"] = _plain(result.get())
        out["after_ops"] = _apply(rt, result, json.loads(ops_json))
        out["generation"] = rt.snapshot(result).generation
    out.update(
        traces=_traces(),
        module_imported="reliability_mod" in sys.modules,
        stats=rt.scheduler.stats(),
        instances=len(rt.runner.instances),
        errors=[str(e) for e in rt.errors],
    )
    _emit(out)
    rt.close()


def cmd_commits(db: str) -> None:
    """Acknowledge k only after the commit that wrote it returned."""
    rt = Runtime(store=_url(db))
    big, small, solo = rt.get_cell("big"), rt.get_cell("small"), rt.get_cell("solo")
    k = 0
    while True:
        k += 1
        with rt.edit() as tx:  # one transaction, two documents
            big.with_tx(tx).set({"n": k, "pad": [k] * PAD, "tail": k})
            small.with_tx(tx).set({"n": k})
        solo.set(k)  # a notebook-style write: its own commit
        print(k, flush=True)


def cmd_read(db: str) -> None:
    rt = Runtime(store=_url(db))
    _emit({name: rt.get_cell(name).get() for name in ("big", "small", "solo")})
    rt.close()


def cmd_pair(db: str) -> None:
    import reliability_mod as m

    rt = Runtime(store=_url(db))
    result = rt.run(m.make_pair(), {"a": 0, "b": 0}, cause="pair")
    result.key("step").send({"mode": "ok"})
    rt.idle()
    _emit({"acked": _plain(result.get())})
    result.key("step").send({"mode": "kill"})  # SIGKILLs this process between a and b
    rt.idle()
    _emit({"survived": True})


def cmd_counter(db: str, n: str, retries: str, window: str = "0") -> None:
    rt = Runtime(store=_url(db))
    cell = rt.get_cell("shared-counter")
    attempts = 0
    failures = 0  # ConflictError after all retries: the increment is redone, never dropped

    def bump(tx: Any) -> None:
        nonlocal attempts
        attempts += 1
        here = cell.with_tx(tx)
        value = here.get() or 0
        time.sleep(float(window))  # widen the read-to-commit window so processes really race
        here.set(value + 1)

    print("ready", flush=True)
    sys.stdin.readline()
    done = 0
    while done < int(n):
        try:
            rt.edit_with_retry(bump, retries=int(retries))
        except ConflictError:
            failures += 1
            continue
        done += 1
    _emit({"done": done, "attempts": attempts, "failures": failures})
    rt.close()


COMMANDS: dict[str, Callable[..., object]] = {
    "run": cmd_run,
    "resume": cmd_resume,
    "commits": cmd_commits,
    "read": cmd_read,
    "pair": cmd_pair,
    "counter": cmd_counter,
}

if __name__ == "__main__":
    COMMANDS[sys.argv[1]](*sys.argv[2:])
