"""The SQLite database at DATABASE_PATH. This module owns the schema of every table.

All access goes through one connection on one dedicated thread, so the event loop never blocks on
disk and no two statements race. SQL stays portable (no SQLite-only syntax beyond pragmas) so a
server database can take over later.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('human', 'ai')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_scope ON history (scope, id);

CREATE TABLE IF NOT EXISTS inbox (
    msg_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('processing', 'done', 'failed')),
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


class Database:
    """One SQLite connection, used from one worker thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> None:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA secure_delete=ON")  # deleted text does not linger in free pages
        conn.executescript(SCHEMA)
        self._conn = conn

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dingbot-db")
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` on the database thread."""
        if self._executor is None or self._conn is None:
            raise RuntimeError("database is not open")
        conn = self._conn
        return await asyncio.get_running_loop().run_in_executor(self._executor, work, conn)

    async def ping(self) -> bool:
        try:
            await self.run(lambda c: c.execute("SELECT 1").fetchone())
        except (sqlite3.Error, RuntimeError):
            return False
        return True

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._conn is not None:
            conn = self._conn
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
            self._conn = None
        self._executor.shutdown(wait=True)
        self._executor = None
