"""Group writes (agent/storage/batches.py) on both engines: written together, at once when flushed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from agent.storage.batches import GroupWriter
from agent.storage.connection import Connection, transaction
from agent.storage.database import Database
from agent.storage.engine import Engine
from agent.storage.health import StorageError, StorageFault
from agent.storage.records import finish_learning, store_learning
from tests.store import sql

AN_HOUR = 3600.0  # longer than any test: only a flush writes


def learning_ids(where: Path | Engine) -> list[str]:
    return [str(row[0]) for row in sql(where, "SELECT msg_id FROM learning ORDER BY msg_id")]


def test_done_learning_jobs_leave_the_table_together_when_flushed(database_target: Path | Engine) -> None:
    jobs: list[list[str]] = []  # what each write was given

    def finish(conn: Connection, msg_ids: list[str]) -> None:
        jobs.append(list(msg_ids))
        finish_learning(conn, msg_ids)

    async def scenario() -> tuple[list[str], list[str]]:
        db = Database(database_target)
        await db.open()
        try:

            def store(conn: Connection) -> None:
                with transaction(conn):
                    for n in range(5):
                        store_learning(conn, f"m{n}", "corp:u1", "{}")

            await db.run(store)
            finished: GroupWriter[str] = GroupWriter(db, finish, AN_HOUR)
            for n in range(4):
                finished.add(f"m{n}")
            await asyncio.sleep(0)  # the writer waits for the interval, not for the event loop
            before = learning_ids(database_target)
            await finished.flush()
            return before, learning_ids(database_target)
        finally:
            await db.close()

    before, after = asyncio.run(scenario())
    assert before == ["m0", "m1", "m2", "m3", "m4"]  # nothing written before the interval or a flush
    assert jobs == [["m0", "m1", "m2", "m3"]]  # one write for the four
    assert after == ["m4"]


@pytest.mark.parametrize(
    "failure",
    [
        StorageError(StorageFault.UNREACHABLE, "test", "gone", "wait"),
        sqlite3.OperationalError("a driver error"),
    ],
    ids=["the database's health", "a driver error"],
)
def test_a_batch_that_fails_is_dropped_and_the_next_is_written(tmp_path: Path, failure: Exception) -> None:
    """A count or a marker is not worth a failure: the batch is dropped, `flush` raises nothing, and what is
    added after it is written by the next flush (a writer that ended is started again)."""
    written: list[list[int]] = []

    def write(conn: Connection, items: list[int]) -> None:
        if items == [1]:
            raise failure
        written.append(items)

    async def scenario() -> None:
        db = Database(tmp_path / "batches.db")
        await db.open()
        try:
            group: GroupWriter[int] = GroupWriter(db, write, AN_HOUR)
            group.add(1)
            await group.flush()
            group.add(2)
            group.add(3)
            await group.flush()
        finally:
            await db.close()

    asyncio.run(scenario())
    assert written == [[2, 3]]
