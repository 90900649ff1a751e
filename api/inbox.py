"""The inbox table: one row per accepted msgId. The claim is the atomic dedupe."""

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
    def __init__(self, db: Database, *, stale_after_seconds: float) -> None:
        self._db = db
        self.stale_after_seconds = stale_after_seconds

    async def claim(self, msg_id: str) -> bool:
        """Record a msgId; False while it is being handled or once it was answered.

        One upsert, no read first, so concurrent duplicates cannot both win. A row is claimed again when
        its reply failed, or when it has been `processing` for longer than any answer can take (the
        process died or stopped mid-answer), so DingTalk's redelivery of it is answered.
        """
        now = time.time()

        def upsert(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT INTO inbox (msg_id, state, received_at, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (msg_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at "
                "WHERE inbox.state = ? OR (inbox.state = ? AND inbox.updated_at < ?)",
                (
                    msg_id,
                    InboxState.PROCESSING.value,
                    now,
                    now,
                    InboxState.FAILED.value,
                    InboxState.PROCESSING.value,
                    now - self.stale_after_seconds,
                ),
            )
            return cursor.rowcount == 1

        return await self._db.run_for_request(upsert)

    async def mark(self, msg_id: str, state: InboxState) -> None:
        now = time.time()

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE inbox SET state = ?, updated_at = ? WHERE msg_id = ?", (state.value, now, msg_id)
            )

        await self._db.run(update)

    async def purge_older_than(self, cutoff: float) -> int:
        """Forget answered or failed msgIds last touched before `cutoff` (epoch seconds)."""

        def delete(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "DELETE FROM inbox WHERE updated_at < ? AND state <> ?", (cutoff, InboxState.PROCESSING.value)
            ).rowcount

        return await self._db.run(delete)

    async def count_stuck(self) -> int:
        """Messages `processing` for longer than any answer can take."""
        cutoff = time.time() - self.stale_after_seconds

        def count(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM inbox WHERE state = ? AND updated_at < ?",
                (InboxState.PROCESSING.value, cutoff),
            ).fetchone()
            return int(row[0])

        return await self._db.run(count)
