"""The file a conversation last sent, kept as text for FILE_CONTEXT_MINUTES so a follow-up question
("第二部分说了什么？") can still be answered: one per history scope, the bounded exception to "nothing of a
file outlives its turn". /reset and /forget all erase it (agent/memory/history.py, storage/records.py)."""

from __future__ import annotations

import time

from agent.media.documents import Document
from agent.storage.connection import Connection, lock_person, transaction
from agent.storage.database import Database
from agent.storage.records import forgotten_at


class FileContext:
    def __init__(self, db: Database, minutes: float) -> None:
        self._db = db
        self.seconds = minutes * 60
        # On a database this process owns alone, when the last file was kept (None: not read yet): every
        # text message asks for its conversation's file, and most of the time none can be recent, so
        # the question needs no round trip. Replicas share the database: they always ask it.
        self._last_kept: float | None = None

    async def keep(self, scope: str, person_id: str, document: Document, said_at: float) -> bool:
        """Keep the document for the scope's next questions, replacing the one before; refused (False)
        when the person asked to be forgotten after sending it, or when the window is 0."""
        if self.seconds <= 0:
            return False

        def write(conn: Connection) -> bool:
            with transaction(conn):
                lock_person(conn, person_id)
                if forgotten_at(conn, person_id) >= said_at:
                    return False
                conn.execute("DELETE FROM file_context WHERE scope = ?", (scope,))
                conn.execute(
                    "INSERT INTO file_context (scope, person_id, name, label, pages, unit, complete, text, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        scope,
                        person_id,
                        document.name,
                        document.label,
                        document.pages,
                        document.unit,
                        int(document.complete),
                        document.text,
                        now,
                    ),
                )
                return True

        now = time.time()
        kept = await self._db.run(write)
        if kept:
            self._last_kept = now
        return kept

    async def recent(self, scope: str) -> Document | None:
        """The scope's file when it was sent less than FILE_CONTEXT_MINUTES ago."""
        if self.seconds <= 0:
            return None
        since = time.time() - self.seconds
        if self._db.single_owner:
            if self._last_kept is None:
                self._last_kept = await self._db.run(_newest)
            if self._last_kept < since:
                return None

        def read(conn: Connection) -> Document | None:
            row = conn.execute(
                "SELECT name, label, text, pages, unit, complete FROM file_context "
                "WHERE scope = ? AND created_at >= ?",
                (scope, since),
            ).fetchone()
            if row is None:
                return None
            return Document(str(row[0]), str(row[1]), str(row[2]), int(row[3]), str(row[4]), bool(row[5]))

        return await self._db.run(read)

    async def purge_expired(self) -> int:
        """Delete files older than the window (the periodic check): how many went."""
        cutoff = time.time() - max(self.seconds, 0)

        def delete(conn: Connection) -> int:
            return conn.execute("DELETE FROM file_context WHERE created_at < ?", (cutoff,)).rowcount

        return await self._db.run(delete)


def _newest(conn: Connection) -> float:
    row = conn.execute("SELECT MAX(created_at) FROM file_context").fetchone()
    return float(row[0]) if row and row[0] is not None else float("-inf")
