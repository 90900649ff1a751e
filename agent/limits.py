"""Per-person rate limiting: RATE_LIMIT_PER_MINUTE messages in any 60 s window.

One process (SQLite): counted in memory. Several replicas on one database: counted in the database
(`SharedRateLimiter`), so a person cannot get N times the limit by landing on N replicas.
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Protocol

from agent.storage.connection import Connection, lock_person, transaction
from agent.storage.database import Database

WINDOW_SECONDS = 60.0


class Limiter(Protocol):
    per_minute: int

    async def allow(self, person_id: str) -> bool: ...

    async def forget_idle(self) -> None: ...


class RateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._seen: defaultdict[str, deque[float]] = defaultdict(deque)

    async def allow(self, person_id: str) -> bool:
        return self.allow_now(person_id)

    def allow_now(self, person_id: str) -> bool:
        """Count one message; False when the person already sent `per_minute` in the last 60 s."""
        if self.per_minute <= 0:
            return True
        now = self._clock()
        seen = self._seen[person_id]
        while seen and now - seen[0] >= 60:
            seen.popleft()
        if len(seen) >= self.per_minute:
            return False
        seen.append(now)
        return True

    async def forget_idle(self) -> None:
        """Drop people with no message in the last minute (called by the periodic check)."""
        now = self._clock()
        for person_id in [p for p, seen in self._seen.items() if not seen or now - seen[-1] >= 60]:
            del self._seen[person_id]


class SharedRateLimiter:
    """The same window, counted in the shared database: one transaction per message, under the person's
    lock (two replicas counting one person take turns)."""

    def __init__(self, database: Database, per_minute: int) -> None:
        self.per_minute = per_minute
        self._database = database

    async def allow(self, person_id: str) -> bool:
        if self.per_minute <= 0:
            return True
        now = time.time()

        def count(conn: Connection) -> bool:
            with transaction(conn):
                lock_person(conn, person_id)
                conn.execute(
                    "DELETE FROM rate_events WHERE person_id = ? AND at <= ?",
                    (person_id, now - WINDOW_SECONDS),
                )
                seen = conn.execute("SELECT COUNT(*) FROM rate_events WHERE person_id = ?", (person_id,))
                if int(seen.fetchone()[0]) >= self.per_minute:
                    return False
                conn.execute("INSERT INTO rate_events (person_id, at) VALUES (?, ?)", (person_id, now))
                return True

        return await self._database.run_for_request(count)

    async def forget_idle(self) -> None:
        """Rows of people silent for a minute (the periodic check; any replica's run will do)."""
        cutoff = time.time() - WINDOW_SECONDS
        await self._database.run(
            lambda conn: conn.execute("DELETE FROM rate_events WHERE at <= ?", (cutoff,))
        )
