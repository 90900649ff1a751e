"""Whether the database can be used: its engine's errors classified into one line (where, cause and fix).

A damaged file or table, a full disk, a database that refuses writes, a failing disk or a server that does
not answer is a *fault*: `StorageHealth` records it, logs one ERROR line per LOG_EVERY_SECONDS however many
statements fail, and is cleared by a probe that proves the database works again (`Database.probe`). Each
engine (`agent/storage/sqlite.py`, `agent/storage/postgres.py`) says which of its errors is which fault, and
what fixes it.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable

from agent.errors import DingbotError

log = logging.getLogger(__name__)

LOG_EVERY_SECONDS = 60.0


class StorageFault(enum.StrEnum):
    DAMAGED = "damaged"  # the file or the server's data is corrupt
    FULL = "full"  # the disk (or the file system's quota) is full
    UNWRITABLE = "unwritable"  # read-only, or no permission
    FAILING = "failing"  # the disk or file system reports errors
    UNREACHABLE = "unreachable"  # the database server does not answer (PostgreSQL)


class StorageError(DingbotError):
    """The database cannot be used right now. The message is one line: where, the cause, the fix."""

    def __init__(self, fault: StorageFault, where: str, said: str, fix: str) -> None:
        said = " ".join(said.split())  # drivers' messages may span lines: the line stays one
        super().__init__(f"database {where} ({said}): {fix}")
        self.fault = fault
        self.said = said  # the engine's own words


class StorageHealth:
    """The database's current fault, if any. Used on the event loop's thread only."""

    def __init__(self, where: str, fix: Callable[[StorageFault], str], *, quiet: bool = False) -> None:
        self.where = where
        self._fix = fix
        self._quiet = quiet  # another process (the service) logs the same database's faults
        self.fault: StorageFault | None = None
        self.error: StorageError | None = None
        self.since = 0.0  # when the current fault began (monotonic)
        self._unlogged = 0
        self._logged_at = float("-inf")

    @property
    def ok(self) -> bool:
        return self.fault is None

    def error_for(self, exc: BaseException, fault: StorageFault) -> StorageError:
        return StorageError(fault, self.where, str(exc), self._fix(fault))

    def failed(self, exc: BaseException, fault: StorageFault) -> StorageError:
        """Record a failed statement; the error to raise in its place."""
        error = self.error_for(exc, fault)
        now = time.monotonic()
        if self.fault is None:
            self.since = now
        self.fault, self.error = fault, error
        self._unlogged += 1
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            log.log(
                logging.DEBUG if self._quiet else logging.ERROR,
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
        log.log(
            logging.DEBUG if self._quiet else logging.WARNING,
            "database %s works again after %.0f s (it was %s): resuming the work left behind",
            self.where,
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
