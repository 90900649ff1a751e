"""The SQLite database at DATABASE_PATH. This module owns the schema of every table.

Statements run on dedicated threads (one connection each), so the event loop never blocks on disk.
SQL stays portable (standard upserts, no SQLite-only syntax beyond pragmas) so a server database can
take over later.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from agent.messages import IncomingMessage, message_from_json
from agent.storage.health import (
    QUICK_CHECK_SECONDS,
    StorageError,
    StorageFault,
    StorageHealth,
    fault_of,
    quick_check,
)

T = TypeVar("T")

PROBE_BYTES = 64 * 1024  # what the storage probe writes: enough that a full disk refuses it

OUTBOX_TABLE = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    msg_id TEXT,  -- the message answered; NULL for a proactive notice
    part INTEGER NOT NULL,
    channel TEXT NOT NULL CHECK (channel IN ('reply', 'robot')),
    person_id TEXT,
    body TEXT,  -- the webhook JSON body; cleared once sent
    route TEXT,  -- where it goes (JSON; holds the session webhook, a credential); cleared once sent
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    last_error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (msg_id, part)
);
"""

SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    scope TEXT NOT NULL,
    person_id TEXT NOT NULL,  -- whose turn it is: "forget me" removes them from shared group scopes too
    role TEXT NOT NULL CHECK (role IN ('human', 'ai')),
    content TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS history_scope ON history (scope, id);
CREATE INDEX IF NOT EXISTS history_created ON history (created_at);
CREATE INDEX IF NOT EXISTS history_person ON history (person_id);

-- One row per accepted msgId: the dedupe key, and the message itself until it is answered.
CREATE TABLE IF NOT EXISTS inbox (
    msg_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('processing', 'done', 'failed')),
    received_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    person_id TEXT,
    payload TEXT,  -- the parsed message (JSON) while unanswered; cleared once the reply is stored
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS inbox_updated ON inbox (updated_at);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox (state, received_at);

-- Replies (and proactive notices) stored before they are sent; marked sent on errcode 0.
"""
    + OUTBOX_TABLE
    + """CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_updated ON outbox (updated_at);

CREATE TABLE IF NOT EXISTS memory_sharing (
    person_id TEXT PRIMARY KEY,
    shared INTEGER NOT NULL
);

-- Messages answered whose facts are not learned yet: stored with the reply, gone once learned (a crash
-- in between is resumed at the next start), erased by "/forget all".
CREATE TABLE IF NOT EXISTS learning (
    msg_id TEXT PRIMARY KEY,
    person_id TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- The last "/forget all" of each person (when they sent it): anything said before it is never written.
CREATE TABLE IF NOT EXISTS forgotten (
    person_id TEXT PRIMARY KEY,
    at REAL NOT NULL
);

-- One row, rewritten by the probe that says whether the database can be written again after a fault.
CREATE TABLE IF NOT EXISTS storage_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    at REAL NOT NULL,
    room BLOB
);
"""
)


# Columns added after a table first shipped: (table, column, definition). Added to older databases at open.
_ADDED_COLUMNS = (
    ("inbox", "person_id", "TEXT"),
    ("inbox", "payload", "TEXT"),
    ("inbox", "attempts", "INTEGER NOT NULL DEFAULT 0"),
)


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    for table, column, definition in _ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if present and column not in present:  # an absent table is created whole by SCHEMA
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error. SQLite may already have rolled back (a full
    disk does that): the original error is what is raised, never "no transaction is active"."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _migrate_outbox(conn: sqlite3.Connection) -> None:
    """An outbox made before the `skipped` state cannot take it (a CHECK constraint): rebuilt with its
    rows, in one transaction (a crash leaves either the old table or the new one, whole)."""
    with transaction(conn):
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
        ).fetchone()
        if row is not None and "'skipped'" not in row[0]:
            conn.execute("ALTER TABLE outbox RENAME TO outbox_before_skipped")
            conn.execute(OUTBOX_TABLE)
            conn.execute("INSERT INTO outbox SELECT * FROM outbox_before_skipped")
            conn.execute("DROP TABLE outbox_before_skipped")  # its indexes too: the schema makes them anew


def erase_person_messages(conn: sqlite3.Connection, person_id: str) -> None:
    """Stored message and reply text of one person, except what is still on its way (/forget all)."""
    conn.execute(
        "UPDATE inbox SET payload = NULL WHERE person_id = ? AND state <> 'processing'", (person_id,)
    )
    conn.execute("DELETE FROM outbox WHERE person_id = ? AND state <> 'pending'", (person_id,))
    conn.execute("DELETE FROM learning WHERE person_id = ?", (person_id,))


def mark_forgotten(conn: sqlite3.Connection, person_id: str, at: float) -> None:
    """Record a "/forget all" sent at `at`: writes of anything said before it are refused from now on."""
    conn.execute(
        "INSERT INTO forgotten (person_id, at) VALUES (?, ?) "
        "ON CONFLICT (person_id) DO UPDATE SET at = MAX(at, excluded.at)",
        (person_id, at),
    )


def store_learning(conn: sqlite3.Connection, msg_id: str, person_id: str, message: str) -> None:
    """Inside the reply's transaction: its message is to be learned from, even after a crash."""
    conn.execute(
        "INSERT INTO learning (msg_id, person_id, message, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (msg_id) DO NOTHING",
        (msg_id, person_id, message, time.time()),
    )


def pending_learning(conn: sqlite3.Connection) -> list[IncomingMessage]:
    rows = conn.execute("SELECT message FROM learning ORDER BY created_at").fetchall()
    return [message_from_json(str(row[0])) for row in rows]


def finish_learning(conn: sqlite3.Connection, msg_id: str) -> None:
    conn.execute("DELETE FROM learning WHERE msg_id = ?", (msg_id,))


def forgotten_at(conn: sqlite3.Connection, person_id: str) -> float:
    """When the person last asked to be forgotten; -inf when never."""
    row = conn.execute("SELECT at FROM forgotten WHERE person_id = ?", (person_id,)).fetchone()
    return float(row[0]) if row else float("-inf")


class _Lane:
    """One connection on one dedicated thread."""

    def __init__(self, name: str) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: sqlite3.Connection | None = None


class Database:
    """SQLite at `path`, reached through two lanes, each a connection on its own thread.

    The request lane serves the few statements a callback waits for (the dedupe insert); the work lane
    serves everything else. So an acknowledgement never queues behind background history writes.
    WAL mode lets the two connections read concurrently; writes take turns (busy_timeout).

    A statement that fails because of the file or the disk (damaged, full, unwritable, failing) raises
    `StorageError` and puts `health` in that fault until `probe()` finds the database working again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.health = StorageHealth(path)
        self._lanes: dict[str, _Lane] = {}

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA secure_delete=ON")  # deleted text does not linger in free pages
        return conn

    def _open_work_lane(self) -> sqlite3.Connection:
        if self.path.parent != Path():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        _add_missing_columns(conn)  # before the schema script: its new indexes may use new columns
        _migrate_outbox(conn)
        conn.executescript(SCHEMA)
        return conn

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        work, request = _Lane("dingbot-db"), _Lane("dingbot-db-request")
        self._lanes = {"work": work, "request": request}
        try:
            work.conn = await loop.run_in_executor(work.executor, self._open_work_lane)
            request.conn = await loop.run_in_executor(request.executor, self._connect)
        except sqlite3.Error as exc:
            await self.close()
            raise self.health.failed(exc, fault_of(exc) or StorageFault.FAILING) from None

    async def _run_on(self, lane_name: str, work: Callable[[sqlite3.Connection], T]) -> T:
        lane = self._lanes.get(lane_name)
        if lane is None or lane.conn is None:
            raise RuntimeError("database is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(lane.executor, work, lane.conn)
        except sqlite3.Error as exc:
            fault = fault_of(exc)
            if fault is None:
                raise
            raise self.health.failed(exc, fault) from exc

    async def probe(self) -> bool:
        """After a fault: does the database work again? A damaged file must pass a quick_check, any other
        fault a real write (a full disk still reads). Clears the fault when it does."""
        if self.health.ok:
            return True
        damaged = self.health.fault is StorageFault.DAMAGED

        def check(conn: sqlite3.Connection) -> bool:
            if damaged:
                return quick_check(conn, QUICK_CHECK_SECONDS) is None
            with transaction(conn):  # room for real work: 64 KiB, not a row that fits in a page already there
                conn.execute(
                    "INSERT INTO storage_probe (id, at, room) VALUES (1, ?, zeroblob(?)) "
                    "ON CONFLICT (id) DO UPDATE SET at = excluded.at, room = excluded.room",
                    (time.time(), PROBE_BYTES),
                )
            return True

        try:
            works = await self._run_on("work", check)
        except (StorageError, sqlite3.Error):
            return False
        if works:
            self.health.recovered()
        return works

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` on the work lane."""
        return await self._run_on("work", work)

    async def run_for_request(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(connection)` on the request lane: only for short statements a caller waits on."""
        return await self._run_on("request", work)

    async def shrink(self) -> None:
        """After deleting personal data: fold the WAL back and rebuild the file, so no copy remains."""

        def vacuum(conn: sqlite3.Connection) -> None:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("VACUUM")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        await self.run(vacuum)

    async def ping(self) -> bool:
        """The database answers and has no fault."""
        try:
            await self.run_for_request(lambda c: c.execute("SELECT 1").fetchone())
        except (sqlite3.Error, StorageError, RuntimeError):
            return False
        return self.health.ok

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        lanes, self._lanes = self._lanes, {}
        for lane in lanes.values():
            if lane.conn is not None:
                await loop.run_in_executor(lane.executor, lane.conn.close)
                lane.conn = None
            lane.executor.shutdown(wait=True)
