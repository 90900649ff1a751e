"""The inbox table: one row per accepted msgId. The insert is the atomic dedupe."""

from __future__ import annotations

import sqlite3
import time
from enum import StrEnum

from agent.database import Database


class InboxState(StrEnum):
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class Inbox:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def claim(self, msg_id: str) -> bool:
        """Record a msgId; False when it is being handled or was answered.

        A new msgId is one INSERT; a redelivery of a message whose reply failed is claimed again by one
        conditional UPDATE. Neither reads first, so concurrent duplicates cannot both win.
        """
        now = time.time()

        def insert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO inbox (msg_id, state, received_at, updated_at) VALUES (?, ?, ?, ?)",
                (msg_id, InboxState.PROCESSING.value, now, now),
            )
            if cursor.rowcount == 1:
                return True
            cursor = conn.execute(
                "UPDATE inbox SET state = ?, updated_at = ? WHERE msg_id = ? AND state = ?",
                (InboxState.PROCESSING.value, now, msg_id, InboxState.FAILED.value),
            )
            return cursor.rowcount == 1

        return await self._db.run_for_request(insert)

    async def mark(self, msg_id: str, state: InboxState) -> None:
        now = time.time()

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE inbox SET state = ?, updated_at = ? WHERE msg_id = ?", (state.value, now, msg_id)
            )

        await self._db.run(update)

    async def state(self, msg_id: str) -> InboxState | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT state FROM inbox WHERE msg_id = ?", (msg_id,)).fetchone()
            return None if row is None else str(row[0])

        value = await self._db.run(read)
        return None if value is None else InboxState(value)
