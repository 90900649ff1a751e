"""The console's audit log (table `console_audit`): what was done through the console, when and from where."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.storage.connection import Connection
from agent.storage.database import Database


@dataclass(frozen=True)
class AuditEntry:
    at: float
    address: str
    action: str
    target: str


class AuditLog:
    def __init__(self, database: Database) -> None:
        self._db = database

    async def record(self, action: str, address: str, target: str = "") -> None:
        def write(conn: Connection) -> None:
            conn.execute(
                "INSERT INTO console_audit (at, address, action, target) VALUES (?, ?, ?, ?)",
                (time.time(), address, action, target),
            )

        await self._db.run(write)

    async def recent(self, limit: int = 200) -> list[AuditEntry]:
        def read(conn: Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT at, address, action, target FROM console_audit ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
            return [AuditEntry(float(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

        return await self._db.run(read)
