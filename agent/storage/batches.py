"""Group writes: what is recorded within a moment is written together, in one job on a work lane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from agent.storage.connection import Connection
from agent.storage.database import Database
from agent.storage.health import StorageError

T = TypeVar("T")
log = logging.getLogger(__name__)


class GroupWriter(Generic[T]):
    """Items added on the event loop are written by `write(connection, items)` once `seconds` have passed
    since the first of them waited: a busy service pays one write per interval, not one per item.
    `flush` writes what waits at once (reads of what was written, shutdown). A write that fails on the
    database itself is dropped (its health logs it): only for records whose loss costs little — a count,
    or a marker whose absence means work done once more."""

    def __init__(
        self, database: Database, write: Callable[[Connection, list[T]], None], seconds: float
    ) -> None:
        self._db = database
        self._write = write
        self._seconds = seconds
        self._items: list[T] = []
        self._writer: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # set: write what waits without waiting out the interval

    def add(self, item: T) -> None:
        """Record one item (on the event loop); written within `seconds`."""
        self._items.append(item)
        if self._writer is None or self._writer.done():
            self._now = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_soon(self._now))

    async def _write_soon(self, now: asyncio.Event) -> None:
        while self._items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(now.wait(), self._seconds)
            try:
                await self._db.run(self._job())
            except StorageError:
                pass  # the database's health logs it
            except Exception as exc:  # a closed database, a driver error: dropped too, the writer goes on
                log.warning("a group write was dropped (%s)", type(exc).__name__)

    def _job(self) -> Callable[[Connection], None]:
        """Writing what waits now (what is added meanwhile waits for the next job)."""
        items, self._items = self._items, []
        return lambda conn: self._write(conn, items)

    async def flush(self) -> None:
        """Write what waits, now, and wait for that."""
        if self._items and (self._writer is None or self._writer.done()):  # its writer ended early
            self._now = asyncio.Event()
            self._writer = asyncio.get_running_loop().create_task(self._write_soon(self._now))
        while self._writer is not None and not self._writer.done():
            self._now.set()
            await asyncio.gather(self._writer, return_exceptions=True)
