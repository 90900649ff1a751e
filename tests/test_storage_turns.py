"""SQLite's writers take turns (agent/storage/turns.py): a callback's write waiting for the lock goes
before the next transaction of another connection, even one of another process (a mapped file)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from agent.storage import turns as turns_module
from agent.storage.connection import Connection, transaction
from agent.storage.database import Database
from agent.storage.turns import STALE_SECONDS, WriterTurns

WORK_JOBS = 30
HOLD_SECONDS = 0.003  # each work transaction keeps the lock this long


def test_a_waiting_callback_write_goes_before_the_next_work_transaction(tmp_path: Path) -> None:
    """The answering process (one Database) writes back to back; the acking process (another Database on
    the same file, as in two processes) inserts once. Its insert waits for the transaction under way, not
    for the queue: without the turns it lost every race to the next BEGIN (the work lane's thread takes
    the lock again within microseconds, the waiter looks every 0.1-0.5 ms) and waited for nearly all."""
    path = tmp_path / "turns.db"
    began: list[float] = []  # when each work transaction had the lock
    first_try: list[float] = []
    some_began = threading.Event()

    def work(conn: Connection) -> None:
        with transaction(conn):
            began.append(time.monotonic())
            some_began.set()
            conn.execute("INSERT INTO turn_test (id) VALUES (?)", (len(began) + 10,))
            time.sleep(HOLD_SECONDS)

    def insert(conn: Connection) -> float:
        if not first_try:
            first_try.append(time.monotonic())
        conn.execute("INSERT INTO turn_test (id) VALUES (1)")
        return time.monotonic()

    async def scenario() -> float:
        service, front = Database(path), Database(path, work_lanes=1)
        await service.open()
        await front.open()
        try:
            await service.run(lambda conn: conn.execute("CREATE TABLE turn_test (id INTEGER PRIMARY KEY)"))
            jobs = [asyncio.ensure_future(service.run(work)) for _ in range(WORK_JOBS)]
            await asyncio.to_thread(some_began.wait)
            inserted = await front.run_for_request(insert)
            await asyncio.gather(*jobs)
            return inserted
        finally:
            await service.close()
            await front.close()

    inserted = asyncio.run(scenario())
    began_while_waiting = [at for at in began if first_try[0] < at < inserted]
    assert len(began) == WORK_JOBS
    # The transaction under way when the insert came finishes first; at most one more slips in (a waiter
    # whose thread was not scheduled for GIVE_WAY_LONGEST_SECONDS on a busy machine).
    assert len(began_while_waiting) <= 1, f"{len(began_while_waiting)} work transactions went first"
    assert sqlite3.connect(path).execute("SELECT COUNT(*) FROM turn_test").fetchone()[0] == WORK_JOBS + 1


def test_a_waiters_mark_that_went_stale_holds_nobody_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A waiter that died (its process killed mid-wait) never cleared its mark: other writers go on at
    once once it is older than STALE_SECONDS, and at once after `done`."""
    waiter, writer = WriterTurns(tmp_path / "db-turn"), WriterTurns(tmp_path / "db-turn")
    held: list[float] = []
    monkeypatch.setattr(turns_module.time, "sleep", held.append)  # a writer holding back sleeps in steps
    now = time.monotonic()
    try:
        monkeypatch.setattr(turns_module.time, "monotonic", lambda: now)
        waiter.waiting()
        monkeypatch.setattr(turns_module.time, "monotonic", lambda: now + STALE_SECONDS + 0.001)
        writer.give_way()
        assert held == []  # stale: not waited for
        monkeypatch.setattr(turns_module.time, "monotonic", lambda: now)
        waiter.done()
        writer.give_way()
        assert held == []  # cleared
    finally:
        waiter.close()
        writer.close()


def test_the_turns_work_from_the_first_start_in_a_new_folder(tmp_path: Path) -> None:
    """The mark's file is made before the first connection makes the database's folder."""
    path = tmp_path / "new" / "folder" / "dingbot.db"

    async def scenario() -> bool:
        database = Database(path)
        await database.open()
        try:
            return database._turns is not None
        finally:
            await database.close()

    assert asyncio.run(scenario())
    assert (path.parent / "dingbot.db-turn").exists()
