"""A real PostgreSQL server for the tests, and the worker processes they start.

``PostgresServer`` runs Debian's binaries (``initdb`` + ``pg_ctl`` from
``/usr/lib/postgresql/<version>/bin``, or on ``PATH``) in a temporary
directory, listening on 127.0.0.1 on a free port, as the ``postgres`` user when
we are root (the server refuses to run as root).  ``find_binaries()`` is None
when none are installed: the tests then skip, saying so.

The same module is the worker: ``python -c "import postgres_server as s;
s.worker_main()" CMD URL ...`` (with this directory on ``PYTHONPATH``), so the
lifts and handlers below are defined in the worker under the same module name
and hash as in the tests, and ``rt.resume()`` finds them (SPEC §8).

Worker commands print one JSON object per line:

    run URL CAUSE              run Counter {"count": 5}, send increment {"amount": 2}
    resume URL CAUSE           resume CAUSE, report, send increment {}, report again
    counter URL K              print "ready", wait for stdin, K edit_with_retry increments
    writer URL                 commit big+small documents forever, print each acknowledged n
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cellkernel import Cell, ConflictError, Runtime, Stream, handler, lift, pattern

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: a login with a password (all others are trusted), to test authentication failures
SECRET_USER, SECRET_PASSWORD = "ck_secret", "right-password"
PAD = 1500


def find_binaries() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, newest version first."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class PostgresServer:
    """One throwaway cluster: ``start()``, ``url(db)``, ``create_database()``, ``stop()``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="ck-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = free_port()
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")  # KeyError: no such user (caller skips)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        self._databases = 0

    def _run(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, cwd=self.base, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
                f"\n{self.log.read_text() if self.log.exists() else ''}"
            )
        return proc.stdout

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.base}'\n"
                "max_connections = 200\nshared_buffers = 32MB\n"
            )
        (self.data / "pg_hba.conf").write_text(
            f"local all all trust\n"
            f"host all {SECRET_USER} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w",
                  "-t", "60", "restart")

    def url(self, database: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str, database: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows."""
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def create_database(self, prefix: str = "ck") -> str:
        """A new, empty database; returns its URL."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        self.admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def setup(self) -> None:
        self.init()
        self.start()
        self.admin(f"CREATE ROLE {SECRET_USER} LOGIN SUPERUSER PASSWORD '{SECRET_PASSWORD}'")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_server() -> Iterator[PostgresServer | str]:
    """A started server, or the reason there is none (a str) when no binaries exist."""
    bindir = find_binaries()
    if bindir is None:
        yield ("no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin "
               "or on PATH: install Debian's postgresql package (.ci/run does)")
        return
    try:
        server = PostgresServer(bindir)
    except KeyError:
        yield "running as root but there is no 'postgres' user to run the server as"
        return
    try:
        server.setup()
        yield server
    finally:
        server.cleanup()


# =========================================================================== worker side


@lift
def double(x: int) -> int:
    return (x or 0) * 2


@handler
def increment(event: Any, count: Cell[int]) -> None:
    count.set(count.get() + (event or {}).get("amount", 1))


@pattern
def Counter(count: int = 0) -> Any:
    return {"count": count, "doubled": double(count), "increment": increment(count=count)}


def plain(value: Any) -> Any:
    """A result value as JSON: streams become the string "<stream>" (results are shallow)."""
    if isinstance(value, Stream):
        return "<stream>"
    if isinstance(value, dict):
        return {k: "<stream>" if isinstance(v, Stream) else v for k, v in value.items()}
    return value


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)])
    return env


def spawn(*args: str, **kw: Any) -> subprocess.Popen[str]:
    """Start a worker process (see the module docstring for commands)."""
    return subprocess.Popen(
        [sys.executable, "-c", "import postgres_server as s; s.worker_main()", *args],
        cwd=REPO, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, **kw,
    )


def run_worker(*args: str, timeout: float = 60) -> dict[str, Any]:
    """Run a worker to completion; its last JSON line."""
    proc = spawn(*args)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker {args[0]} failed ({proc.returncode}):\n{err}"
    lines = [line for line in out.splitlines() if line.strip()]
    assert lines, f"worker {args[0]} printed nothing:\n{err}"
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def _emit(payload: Any) -> None:
    print(json.dumps(payload), flush=True)


def _cmd_run(url: str, cause: str) -> None:
    with Runtime(url) as rt:
        result = rt.run(Counter, {"count": 5}, cause=cause)
        result.increment.send({"amount": 2})
        rt.idle()
        _emit({"value": plain(result.get()), "errors": [str(e) for e in rt.errors]})


def _cmd_resume(url: str, cause: str) -> None:
    with Runtime(url) as rt:
        result = rt.resume(cause)
        first = plain(result.get())
        result.increment.send({})
        rt.idle()
        _emit({"resumed": first, "after": plain(result.get()),
               "errors": [str(e) for e in rt.errors]})


def _cmd_counter(url: str, k: str) -> None:
    with Runtime(url) as rt:
        cell = rt.get_cell("shared-counter")
        attempts = 0

        def bump(tx: Any) -> None:
            nonlocal attempts
            attempts += 1
            here = cell.with_tx(tx)
            here.set((here.get() or 0) + 1)

        print("ready", flush=True)
        sys.stdin.readline()
        for _ in range(int(k)):
            rt.edit_with_retry(bump, retries=1000)
        _emit({"done": int(k), "attempts": attempts})


def _cmd_writer(url: str, survive: str = "") -> None:
    """Commit {"n": k, ...} to two documents in one transaction, forever; print each k.

    With ``survive``, an outage prints ``outage`` and the loop carries on: the
    store reconnects by itself once the server is back.
    """
    from cellkernel.store.postgres import PostgresUnavailableError

    with Runtime(url) as rt:
        big, small = rt.get_cell("big"), rt.get_cell("small")
        while True:
            try:
                with rt.edit() as tx:
                    k = (big.with_tx(tx).get() or {"n": 0})["n"] + 1
                    big.with_tx(tx).set({"n": k, "pad": [k] * PAD, "tail": k})
                    small.with_tx(tx).set({"n": k})
            except PostgresUnavailableError:
                if not survive:
                    raise
                print("outage", flush=True)
                time.sleep(0.05)
                continue
            except ConflictError:  # a commit in doubt across the restart, resolved as lost
                if not survive:
                    raise
                print("conflict", flush=True)
                continue
            print(k, flush=True)  # acknowledged: the commit returned


def worker_main() -> None:
    command, *args = sys.argv[1:]
    commands = {"run": _cmd_run, "resume": _cmd_resume, "counter": _cmd_counter,
                "writer": _cmd_writer}
    try:
        commands[command](*args)
    except ConflictError as exc:  # pragma: no cover - reported to the test
        _emit({"conflict": str(exc)})
        raise
