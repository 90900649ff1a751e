"""Short-term memory: the last HISTORY_TURNS turns of a conversation, in the database."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.storage.connection import Connection, lock_person, transaction
from agent.storage.database import Database
from agent.storage.records import erase_person_messages, forgotten_at, mark_forgotten


@dataclass(frozen=True, slots=True)
class Turn:
    human: str
    ai: str


class HistoryStore:
    """Turns per scope (a conversation and speaker, or a whole group). Never grows past `turns`."""

    def __init__(self, db: Database, turns: int) -> None:
        self._db = db
        self.turns = turns

    async def recent(self, scope: str) -> list[Turn]:
        if self.turns == 0:
            return []

        def read(conn: Connection) -> list[tuple[str, str]]:
            rows = conn.execute(
                "SELECT role, content FROM history WHERE scope = ? ORDER BY id DESC LIMIT ?",
                (scope, self.turns * 2),
            ).fetchall()
            return [(str(r[0]), str(r[1])) for r in reversed(rows)]

        rows = await self._db.run(read)
        turns: list[Turn] = []
        pending: str | None = None
        for role, content in rows:
            if role == "human":
                pending = content
            elif pending is not None:
                turns.append(Turn(human=pending, ai=content))
                pending = None
        return turns

    async def append(self, scope: str, turn: Turn, person_id: str, said_at: float) -> bool:
        """Keep a turn the person began at `said_at`; refused (False) when they asked to be forgotten
        after saying it — checked in the same transaction as the write."""
        keep = self.turns * 2
        now = time.time()

        def write(conn: Connection) -> bool:
            with transaction(conn):
                lock_person(conn, person_id)
                if forgotten_at(conn, person_id) >= said_at:
                    return False
                conn.executemany(
                    "INSERT INTO history (scope, person_id, role, content, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    [(scope, person_id, "human", turn.human, now), (scope, person_id, "ai", turn.ai, now)],
                )
                conn.execute(
                    "DELETE FROM history WHERE scope = ? AND id NOT IN "
                    "(SELECT id FROM history WHERE scope = ? ORDER BY id DESC LIMIT ?)",
                    (scope, scope, keep),
                )
                return True

        return await self._db.run(write)

    async def clear(self, scope: str) -> None:
        """/reset: forget the recent turns of one scope, and the file it last sent."""

        def delete(conn: Connection) -> None:
            with transaction(conn):
                conn.execute("DELETE FROM history WHERE scope = ?", (scope,))
                conn.execute("DELETE FROM file_context WHERE scope = ?", (scope,))

        await self._db.run(delete)

    async def erase_person(self, person_id: str, asked_at: float) -> None:
        """/forget all, sent at `asked_at`: every turn of this person, in every scope, their stored messages,
        and a mark that refuses anything they said before it (still on its way) — one transaction."""

        def delete(conn: Connection) -> None:
            with transaction(conn):
                lock_person(conn, person_id)
                mark_forgotten(conn, person_id, asked_at)
                conn.execute("DELETE FROM history WHERE person_id = ?", (person_id,))
                erase_person_messages(conn, person_id)

        await self._db.run(delete)

    async def shrink(self) -> None:
        """Rebuild the database file after personal data was deleted (no recoverable copy)."""
        await self._db.shrink()

    async def purge_older_than(self, cutoff: float) -> int:
        """Delete turns written before `cutoff` (epoch seconds); return how many rows went."""

        def delete(conn: Connection) -> int:
            return conn.execute("DELETE FROM history WHERE created_at < ?", (cutoff,)).rowcount

        return await self._db.run(delete)
