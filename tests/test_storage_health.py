"""Storage faults on real SQLite files: classified, named in one line, logged once a minute, probed back."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.storage.database import Database
from agent.storage.health import StorageError, StorageFault, StorageHealth
from agent.storage.sqlite import SqliteEngine, check_file, fault_of

_TURN = "INSERT INTO history VALUES (NULL, 's', 'p', 'human', ?, 0)"


def _filled(path: Path, rows: int = 3000) -> Path:
    """A sound database of a few hundred KiB, its WAL folded back (all pages in the main file)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (a INTEGER, b TEXT)")
        conn.execute("CREATE INDEX t_a ON t (a)")
        conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, "x" * 200) for i in range(rows)])
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _page_size(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])


def _spoil_page(path: Path, page: int) -> None:
    size = _page_size(path)
    with path.open("r+b") as file:
        file.seek((page - 1) * size)
        file.write(b"\xa5" * size)


def _root_page(path: Path, name: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)).fetchone()[0])


def test_a_sound_file_and_a_new_one_pass(tmp_path: Path) -> None:
    assert check_file(_filled(tmp_path / "sound.db")) == "sound"
    assert check_file(tmp_path / "new.db") == "sound"


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (lambda p: os.truncate(p, p.stat().st_size // 2), "quick_check: "),
        (lambda p: os.truncate(p, 50), "database disk image is malformed"),
        (lambda p: p.write_bytes(b"not a database at all" * 10), "file is not a database"),
        (lambda p: _spoil_page(p, _root_page(p, "t")), "quick_check"),
    ],
    ids=["truncated to half", "truncated to 50 bytes", "not a database", "a spoiled page"],
)
def test_a_damaged_file_is_named_in_one_line_with_the_fix(
    tmp_path: Path, spoil: Callable[[Path], object], said: str
) -> None:
    path = _filled(tmp_path / "bot.db")
    spoil(path)
    with pytest.raises(StorageError) as caught:
        check_file(path)
    message = str(caught.value)
    assert caught.value.fault is StorageFault.DAMAGED
    assert "\n" not in message
    assert message.startswith(f"database {path} (")
    assert said in message
    assert "restore a backup" in message
    assert f"sqlite3 {path} .recover" in message


def test_the_check_is_bounded_in_time(tmp_path: Path) -> None:
    found = check_file(_filled(tmp_path / "big.db", rows=20000), budget_seconds=0.0)
    assert found == "quick_check not finished within 0 s: skipped (the file is large)"


def test_faults_from_real_errors(tmp_path: Path) -> None:
    path = _filled(tmp_path / "bot.db")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA max_page_count = 1")  # the engine's own "disk is full"
        with pytest.raises(sqlite3.Error) as full:
            conn.execute("INSERT INTO t VALUES (1, ?)", ("y" * 5000,))
    assert fault_of(full.value) is StorageFault.FULL
    readonly = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    with pytest.raises(sqlite3.Error) as refused:
        readonly.execute("INSERT INTO t VALUES (2, 'z')")
    readonly.close()
    assert fault_of(refused.value) is StorageFault.UNWRITABLE
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.Error) as mistake:
        conn.execute("SELECT nope FROM t")
    assert fault_of(mistake.value) is None  # a mistake in a statement says nothing about the file
    assert fault_of(ValueError("x")) is None


def test_one_error_line_a_minute_and_one_line_when_it_works_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.storage.health")
    engine = SqliteEngine(tmp_path / "bot.db")
    health = StorageHealth(engine.where, engine.fix)
    for _ in range(50):
        error = health.failed(sqlite3.OperationalError("database or disk is full"), StorageFault.FULL)
    assert not health.ok
    assert "the disk holding it is full" in str(error)
    assert health.public(details=False) == {"database": "full"}
    assert health.public(details=True)["database_problem"] == str(error)
    health.recovered()
    health.failed(sqlite3.OperationalError("database or disk is full"), StorageFault.FULL)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in lines] == ["ERROR", "WARNING", "ERROR"]
    assert "(1 statement(s) failed since the last line)" in lines[0][1]
    assert "works again" in lines[1][1]


def test_the_probe_ends_a_full_disk_only_when_a_write_succeeds(tmp_path: Path) -> None:
    async def scenario() -> None:
        db = Database(tmp_path / "bot.db")
        await db.open()
        try:
            pages = await db.run(lambda c: int(c.execute("PRAGMA page_count").fetchone()[0]))
            # every lane, and the probe's too, limited to the pages the file has now: the engine reports full
            await db.run(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
            await db.run_for_request(lambda c: c.execute(f"PRAGMA max_page_count = {pages}"))
            big = "x" * 100_000
            with pytest.raises(StorageError):
                await db.run(lambda c: c.execute(_TURN, (big,)))
            assert db.health.fault is StorageFault.FULL
            assert not await db.ping()
            # a read still works on a full disk: it does not end the fault, and neither does a failing probe
            await db.run(lambda c: c.execute("SELECT COUNT(*) FROM history").fetchone())
            assert not await db.probe()  # its write needs pages the file may not grow by
            assert db.health.fault is StorageFault.FULL
            await db.run(lambda c: c.execute("PRAGMA max_page_count = 100000"))
            assert await db.probe()
            assert db.health.ok
            assert await db.ping()
        finally:
            await db.close()

    asyncio.run(scenario())


def test_a_damaged_file_at_runtime_stays_a_fault(tmp_path: Path) -> None:
    path = tmp_path / "bot.db"

    async def scenario() -> None:
        db = Database(path)
        await db.open()
        await db.close()
        _spoil_page(path, _root_page(path, "history"))
        await db.open()  # the schema pages are intact: it opens
        try:
            with pytest.raises(StorageError) as caught:
                await db.run(lambda c: c.execute("SELECT * FROM history").fetchall())
            assert caught.value.fault is StorageFault.DAMAGED
            assert not await db.probe()  # quick_check still finds the damage
            assert db.health.fault is StorageFault.DAMAGED
        finally:
            await db.close()

    asyncio.run(scenario())
