"""The SQLite engine: one file at DATABASE_PATH, owned by one process (WAL, secure_delete).

`check_file` runs `PRAGMA quick_check` before the service starts, within a time budget, so a damaged file
stops startup with one line instead of a traceback.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa

from agent.storage.connection import Connection, transaction
from agent.storage.engine import PROBE_BYTES, PROBE_WRITE, Engine
from agent.storage.health import StorageError, StorageFault
from agent.storage.turns import WriterTurns

QUICK_CHECK_SECONDS = 10.0  # a quick_check reads every page: bounded, so a huge file cannot hold startup

# Primary result codes (the low byte of an extended code): https://sqlite.org/rescode.html
_FAULTS = {
    11: StorageFault.DAMAGED,  # SQLITE_CORRUPT
    26: StorageFault.DAMAGED,  # SQLITE_NOTADB
    13: StorageFault.FULL,  # SQLITE_FULL
    8: StorageFault.UNWRITABLE,  # SQLITE_READONLY
    14: StorageFault.UNWRITABLE,  # SQLITE_CANTOPEN
    3: StorageFault.UNWRITABLE,  # SQLITE_PERM
    10: StorageFault.FAILING,  # SQLITE_IOERR
}

_FIXES = {
    StorageFault.DAMAGED: (
        "the file is damaged: with the service stopped, move it aside and restore a backup, or recover what "
        "is readable with `sqlite3 {path} .recover | sqlite3 {path}.recovered` and point DATABASE_PATH there"
    ),
    StorageFault.FULL: "the disk holding it is full: free space there (`df -h {folder}`)",
    StorageFault.UNWRITABLE: "it cannot be written: make {path} and {folder} writable by this user",
    StorageFault.FAILING: "the disk reports errors: check it (`dmesg`) and its space (`df -h {folder}`)",
    StorageFault.UNREACHABLE: "it cannot be opened: check {path} and {folder}",
}


def fault_of(exc: BaseException) -> StorageFault | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and isinstance(code, int):
        return _FAULTS.get(code & 0xFF)
    return None


def fix_for(path: Path, fault: StorageFault) -> str:
    return _FIXES[fault].format(path=path, folder=path.resolve().parent)


def quick_check(conn: sqlite3.Connection, budget_seconds: float) -> str | None:
    """`PRAGMA quick_check` within `budget_seconds`: None when the file is sound, else SQLite's first
    complaint. Raises sqlite3.OperationalError ("interrupted") when the budget ran out."""
    deadline = time.monotonic() + budget_seconds
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = conn.execute("PRAGMA quick_check(1)").fetchall()
    finally:
        conn.set_progress_handler(None, 0)
    first = str(rows[0][0]) if rows else "no answer"
    return None if first == "ok" else first.splitlines()[-1]


def _error(path: Path, fault: StorageFault, said: str) -> StorageError:
    return StorageError(fault, str(path), said, fix_for(path, fault))


def check_file(path: Path, budget_seconds: float = QUICK_CHECK_SECONDS) -> str:
    """Before the service starts: raises StorageError (one line) when the file at `path` cannot be used.
    Returns what was found, for the log ("sound", or that the check was cut short by its budget)."""
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise _error(path, fault_of(exc) or StorageFault.UNWRITABLE, str(exc)) from None
    try:
        complaint = quick_check(conn, budget_seconds)
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc):
            return f"quick_check not finished within {budget_seconds:g} s: skipped (the file is large)"
        raise _error(path, fault_of(exc) or StorageFault.FAILING, str(exc)) from None
    except sqlite3.Error as exc:
        raise _error(path, fault_of(exc) or StorageFault.DAMAGED, str(exc)) from None
    finally:
        conn.close()
    if complaint is not None:
        raise _error(path, StorageFault.DAMAGED, f"quick_check: {complaint}")
    return "sound"


class SqliteEngine(Engine):
    name = "sqlite"
    single_owner = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def connect(self) -> Connection:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA secure_delete=ON")  # deleted text does not linger in free pages
        return conn

    def serve_requests(self, conn: Connection) -> None:
        # SQLite's own busy handler sleeps 1, 2, 5, 10, 15... ms between tries: a write that finds the
        # lock taken by a transaction of 0.3 ms waited 8-25 ms (the acks' p99 at 200/s, measured).
        conn.execute("PRAGMA busy_timeout=0")
        # Checkpoints (copying the WAL into the file, with an fsync) are left to the work lane's
        # connection, which writes after every answer: a callback's commit never pays for one.
        conn.execute("PRAGMA wal_autocheckpoint=0")

    def turns(self) -> WriterTurns | None:
        if str(self.path) in ("", ":memory:"):  # one connection's private database: nobody to wait for
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # before the first connection makes it
            return WriterTurns(self.path.with_name(self.path.name + "-turn"))
        except (OSError, ValueError):  # a read-only folder: the writers simply race, as before
            return None

    def busy(self, exc: BaseException) -> bool:
        code = getattr(exc, "sqlite_errorcode", None)  # extended codes too: BUSY_RECOVERY, BUSY_SNAPSHOT
        return (
            isinstance(exc, sqlite3.OperationalError)
            and code is not None
            and code & 0xFF == sqlite3.SQLITE_BUSY
        )

    def check(self) -> str:
        found = check_file(self.path)  # a damaged file is named before anything else reads it
        schema = super().check()
        return schema if found == "sound" else f"{found}; {schema}"

    def sqlalchemy_engine(self) -> sa.Engine:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(f"sqlite:///{self.path}", poolclass=sa.NullPool)

    def fault_of(self, exc: BaseException) -> StorageFault | None:
        return fault_of(exc)

    def fix(self, fault: StorageFault) -> str:
        return fix_for(self.path, fault)

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (sqlite3.Error,)

    def probe(self, conn: Connection, fault: StorageFault) -> bool:
        if fault is StorageFault.DAMAGED:
            assert isinstance(conn, sqlite3.Connection)
            return quick_check(conn, QUICK_CHECK_SECONDS) is None
        with transaction(conn):  # room for real work: 64 KiB, not a row that fits in a page already there
            conn.execute(PROBE_WRITE, (time.time(), bytes(PROBE_BYTES)))
        return True

    def shrink(self, conn: Connection) -> None:
        """Fold the WAL back and rebuild the file, so no copy of deleted rows remains."""
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
