"""Whether the database can be used: SQLite's errors classified into one line (the file, cause and fix).

A corrupt file, a full disk, an unwritable file or a failing disk is a *fault*: `StorageHealth` records it,
logs one ERROR line per LOG_EVERY_SECONDS however many statements fail, and is cleared by a probe that
proves the database works again (`Database.probe`). `check_file` runs `PRAGMA quick_check` before the
service starts, within a time budget, so a damaged file stops startup with one line instead of a traceback.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import time
from pathlib import Path

from agent.errors import DingbotError

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 60.0
QUICK_CHECK_SECONDS = 10.0  # a quick_check reads every page: bounded, so a huge file cannot hold startup


class StorageFault(enum.StrEnum):
    DAMAGED = "damaged"  # SQLITE_CORRUPT, SQLITE_NOTADB
    FULL = "full"  # SQLITE_FULL: the disk (or the file system's quota) is full
    UNWRITABLE = "unwritable"  # SQLITE_READONLY, SQLITE_CANTOPEN, SQLITE_PERM
    FAILING = "failing"  # SQLITE_IOERR: the disk or file system reports errors


# Primary result codes (the low byte of an extended code): https://sqlite.org/rescode.html
_FAULTS = {
    11: StorageFault.DAMAGED,
    26: StorageFault.DAMAGED,
    13: StorageFault.FULL,
    8: StorageFault.UNWRITABLE,
    14: StorageFault.UNWRITABLE,
    3: StorageFault.UNWRITABLE,
    10: StorageFault.FAILING,
}

_FIXES = {
    StorageFault.DAMAGED: (
        "the file is damaged: with the service stopped, move it aside and restore a backup, or recover what "
        "is readable with `sqlite3 {path} .recover | sqlite3 {path}.recovered` and point DATABASE_PATH there"
    ),
    StorageFault.FULL: "the disk holding it is full: free space there (`df -h {folder}`)",
    StorageFault.UNWRITABLE: "it cannot be written: make {path} and {folder} writable by this user",
    StorageFault.FAILING: "the disk reports errors: check it (`dmesg`) and its space (`df -h {folder}`)",
}


class StorageError(DingbotError):
    """The database cannot be used right now. The message is one line: the file, the cause, the fix."""

    def __init__(self, fault: StorageFault, path: Path, said: str) -> None:
        fix = _FIXES[fault].format(path=path, folder=path.resolve().parent)
        super().__init__(f"database {path} ({said}): {fix}")
        self.fault = fault
        self.said = said  # SQLite's own words


def fault_of(exc: BaseException) -> StorageFault | None:
    """The fault behind an SQLite error, or None for errors that say nothing about the file (a constraint,
    a busy lock, a mistake in a statement)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.Error) and isinstance(code, int):
        return _FAULTS.get(code & 0xFF)
    return None


class StorageHealth:
    """The database's current fault, if any. Used on the event loop's thread only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fault: StorageFault | None = None
        self.error: StorageError | None = None
        self.since = 0.0  # when the current fault began (monotonic)
        self._unlogged = 0
        self._logged_at = float("-inf")

    @property
    def ok(self) -> bool:
        return self.fault is None

    def failed(self, exc: sqlite3.Error, fault: StorageFault) -> StorageError:
        """Record a failed statement; the error to raise in its place."""
        error = StorageError(fault, self.path, str(exc))
        now = time.monotonic()
        if self.fault is None:
            self.since = now
        self.fault, self.error = fault, error
        self._unlogged += 1
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.error(
                "%s (%d statement(s) failed since the last line). Callbacks are answered 503 until it works "
                "again (DingTalk delivers them again); the work left behind resumes by itself then",
                error,
                self._unlogged,
            )
            self._unlogged, self._logged_at = 0, now
        return error

    def recovered(self) -> None:
        if self.fault is None:
            return
        log.warning(
            "database %s works again after %.0f s (it was %s): resuming the work left behind",
            self.path,
            time.monotonic() - self.since,
            self.fault.value,
        )
        self.fault = self.error = None
        self._unlogged, self._logged_at = 0, float("-inf")

    def public(self, *, details: bool) -> dict[str, str]:
        """For /healthz and /readyz: the fault for everyone, the file and the fix for this machine only."""
        if self.error is None or self.fault is None:
            return {"database": "ok"}
        return {"database": self.fault.value, **({"database_problem": str(self.error)} if details else {})}


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


def check_file(path: Path, budget_seconds: float = QUICK_CHECK_SECONDS) -> str:
    """Before the service starts: raises StorageError (one line) when the file at `path` cannot be used.
    Returns what was found, for the log ("sound", or that the check was cut short by its budget)."""
    try:
        conn = sqlite3.connect(path)
    except sqlite3.Error as exc:
        raise StorageError(fault_of(exc) or StorageFault.UNWRITABLE, path, str(exc)) from None
    try:
        complaint = quick_check(conn, budget_seconds)
    except sqlite3.OperationalError as exc:
        if "interrupt" in str(exc):
            return f"quick_check not finished within {budget_seconds:g} s: skipped (the file is large)"
        raise StorageError(fault_of(exc) or StorageFault.FAILING, path, str(exc)) from None
    except sqlite3.Error as exc:
        raise StorageError(fault_of(exc) or StorageFault.DAMAGED, path, str(exc)) from None
    finally:
        conn.close()
    if complaint is not None:
        raise StorageError(StorageFault.DAMAGED, path, f"quick_check: {complaint}")
    return "sound"
