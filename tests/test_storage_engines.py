"""The storage layer on both engines: schema versions, claims from two processes, PostgreSQL's faults."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from agent.messages import message_to_json
from agent.settings.config import Settings
from agent.storage import migrate
from agent.storage.database import Database
from agent.storage.engine import Engine
from agent.storage.health import StorageError, StorageFault
from agent.storage.migrate import SchemaTooNew
from agent.storage.postgres import PostgresEngine, without_password
from agent.storage.sqlite import SqliteEngine
from api.delivery.inbox import Inbox
from tests.assistants import person_message
from tests.conftest import SECRET, serve
from tests.fakes.payloads import callback, encode, signed_headers
from tests.fakes.servers import FakeDingTalk
from tests.fakes.tcp_proxy import TcpProxy
from tests.postgres import SERVER
from tests.store import sql
from tests.waiting import PATIENCE, wait_until

T = TypeVar("T")

DATA = Path(__file__).parent / "data"


def head() -> str:
    engine = SqliteEngine(Path(":memory:"))
    with engine.sqlalchemy_engine().connect() as connection:
        return migrate.status(connection).head


def open_once(target: Path | Engine) -> None:
    """Open the database (migrating it, as a start does) and close it."""

    async def scenario() -> None:
        db = Database(target)
        await db.open()
        await db.close()

    asyncio.run(scenario())


def test_a_new_database_is_made_at_the_newest_schema(database_target: Path | Engine) -> None:
    open_once(database_target)
    assert sql(database_target, "SELECT version_num FROM alembic_version") == [(head(),)]
    tables = {"history", "inbox", "outbox", "memory_sharing", "learning", "forgotten", "storage_probe"}
    engine = database_target if isinstance(database_target, Engine) else SqliteEngine(database_target)
    with engine.sqlalchemy_engine().connect() as connection:
        assert tables <= set(sa.inspect(connection).get_table_names())


def test_a_database_from_before_versions_keeps_every_row(tmp_path: Path) -> None:
    """A file the previous release made (its schema verbatim), with a row in every table: taken up as it
    is, stamped with the newest version, every row still there."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript((DATA / "schema_before_versions.sql").read_text())
        message = message_to_json(person_message(message_id="m-old"))
        conn.execute("INSERT INTO history VALUES (1, 's', 'p', 'human', '旧话', 1.5)")
        conn.execute("INSERT INTO inbox VALUES ('m-old', 'processing', 1.0, 2.0, 'p', ?, 0)", (message,))
        conn.execute(
            "INSERT INTO outbox VALUES "
            "(1, 'm-old', 0, 'reply', 'p', '{}', NULL, 'pending', 0, 3.0, NULL, 1, 1)"
        )
        conn.execute("INSERT INTO memory_sharing VALUES ('p', 1)")
        conn.execute("INSERT INTO learning VALUES ('m-old', 'p', ?, 4.0)", (message,))
        conn.execute("INSERT INTO forgotten VALUES ('q', 5.0)")

    open_once(path)
    assert sql(path, "SELECT version_num FROM alembic_version") == [(head(),)]
    assert sql(path, "SELECT content FROM history") == [("旧话",)]
    assert sql(path, "SELECT msg_id, payload FROM inbox") == [("m-old", message)]
    assert sql(path, "SELECT msg_id, state FROM outbox") == [("m-old", "pending")]
    assert sql(path, "SELECT * FROM memory_sharing") == [("p", 1)]
    assert sql(path, "SELECT msg_id FROM learning") == [("m-old",)]
    assert sql(path, "SELECT * FROM forgotten") == [("q", 5.0)]


def test_a_database_newer_than_the_code_is_refused_in_one_line(database_target: Path | Engine) -> None:
    open_once(database_target)
    sql(database_target, "UPDATE alembic_version SET version_num = '9001'")
    with pytest.raises(SchemaTooNew) as refused:
        open_once(database_target)
    assert str(refused.value) == (
        f"database schema version 9001 is newer than this dingbot knows (up to {head()}): run the dingbot "
        "that upgraded it, or restore a backup made before that upgrade"
    )
    assert sql(database_target, "SELECT version_num FROM alembic_version") == [("9001",)]  # left as it was


def test_two_processes_claiming_the_same_messages_win_each_once(database_target: Path | Engine) -> None:
    """Two replicas, each with its own connections, take the same 40 redelivered messages at once."""

    async def scenario() -> list[list[bool]]:
        first, second = Database(database_target), Database(database_target)
        await first.open()
        await second.open()
        try:
            inboxes = (Inbox(first, lease_seconds=60), Inbox(second, lease_seconds=60))
            messages = [person_message(message_id=f"m{i}") for i in range(40)]
            return [
                list(pair)
                for pair in await asyncio.gather(
                    *(asyncio.gather(*(inbox.claim(m) for inbox in inboxes)) for m in messages)
                )
            ]
        finally:
            await first.close()
            await second.close()

    results = asyncio.run(scenario())
    assert all(sorted(pair) == [False, True] for pair in results), results


def test_the_password_is_never_shown() -> None:
    assert without_password("postgresql://bot:s3cret@db.example:5433/dingbot?sslmode=require") == (
        "postgresql://bot@db.example:5433/dingbot?sslmode=require"
    )
    assert "hunter2" not in without_password("postgresql://db/x?user=bot&password=hunter2&sslmode=require")


@pytest.mark.postgres_only
def test_postgres_errors_are_classified(database_url: str) -> None:
    """(SQLite's own errors: tests/test_storage_health.py.)"""
    engine = PostgresEngine(database_url)
    with pytest.raises(psycopg.OperationalError) as gone:
        psycopg.connect("postgresql://postgres@127.0.0.1:1/x", connect_timeout=2)
    assert engine.fault_of(gone.value) is StorageFault.UNREACHABLE
    read_only = PostgresEngine(database_url + "%20-cdefault_transaction_read_only%3Don")
    conn = read_only.connect()
    try:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("CREATE TABLE t (x int)")
        assert engine.fault_of(refused.value) is StorageFault.UNWRITABLE
        with pytest.raises(psycopg.Error) as mistake:
            conn.execute("SELEC 1")
        assert engine.fault_of(mistake.value) is None  # a mistake in a statement says nothing of the server
    finally:
        read_only.close(conn)


@pytest.fixture
def proxied_url(database_url: str) -> tuple[str, TcpProxy]:
    """The test's database through a proxy that can cut the line, with a password in the URL (trust
    auth ignores it) that must never be shown."""
    proxy = TcpProxy("127.0.0.1", int(SERVER.rsplit(":", 1)[1]))
    host = SERVER.rsplit(":", 1)[0].replace("postgres@", "postgres:s3cret@")
    return database_url.replace(SERVER, f"{host}:{proxy.port}"), proxy


@pytest.mark.postgres_only
def test_a_server_that_goes_away_is_a_fault_until_it_answers_again(proxied_url: tuple[str, TcpProxy]) -> None:
    url, proxy = proxied_url

    async def scenario() -> None:
        db = Database(PostgresEngine(url))
        await db.open()
        try:
            assert await db.ping()
            proxy.down()
            with pytest.raises(StorageError) as lost:
                await db.run(lambda c: c.execute("SELECT 1").fetchone())
            assert lost.value.fault is StorageFault.UNREACHABLE
            assert "s3cret" not in str(lost.value)
            assert not await db.ping()
            assert not await db.probe()  # still down: a new connection is refused
            proxy.up()
            assert await db.probe()  # a new connection, a real write
            assert db.health.ok
            assert await db.run(lambda c: c.execute("SELECT 2").fetchone()) == (2,)
            assert await db.ping()  # the request lane has a new connection too
        finally:
            await db.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.stop()
    assert proxy.refused >= 1


@pytest.mark.postgres_only
def test_a_replica_that_loses_the_database_stops_acking_until_it_returns(
    proxied_url: tuple[str, TcpProxy],
    make_settings: Callable[..., Settings],
    fake_dingtalk: FakeDingTalk,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It cannot store what it would accept: 503 (DingTalk delivers to another replica, or again), /readyz
    503 naming the fault; when the server answers again, the redelivery is answered."""
    url, proxy = proxied_url
    settings = make_settings(database_url=url)
    first = callback(fake_dingtalk.webhook(), "第一条")
    second = callback(fake_dingtalk.webhook(), "第二条")
    try:
        with serve(settings) as app:
            assert app.post_callback(encode(first), signed_headers(SECRET)).status_code == 200
            fake_dingtalk.wait_for(1)
            proxy.down()
            refused = app.post_callback(encode(second), signed_headers(SECRET))
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "5"
            ready = app.client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["database"] == "unreachable"
            proxy.up()
            wait_until(lambda: app.client.get("/readyz").status_code == 200, what="/readyz 200 again")
            assert app.post_callback(encode(second), signed_headers(SECRET)).status_code == 200
            [_, answer] = fake_dingtalk.wait_for(2)
    finally:
        proxy.stop()
    assert "你说的是：「第二条」" in answer.json()["text"]["content"]
    assert "s3cret" not in caplog.text
    assert [r for r in caplog.records if r.levelname == "ERROR"], "the fault is logged"


def test_a_database_at_an_older_version_is_migrated_forward_with_its_rows(
    database_target: Path | Engine,
) -> None:
    engine = database_target if isinstance(database_target, Engine) else SqliteEngine(database_target)
    sa_engine = engine.sqlalchemy_engine()
    with sa_engine.connect() as connection:  # what the release with only the baseline made
        command.upgrade(migrate._config(connection), "0001")
        connection.commit()
    sa_engine.dispose()
    sql(engine, "INSERT INTO forgotten (person_id, at) VALUES ('p', 1.5)")

    open_once(engine)
    assert sql(engine, "SELECT version_num FROM alembic_version") == [(head(),)]
    assert sql(engine, "SELECT * FROM forgotten") == [("p", 1.5)]
    assert sql(engine, "SELECT COUNT(*) FROM rate_events") == [(0,)]  # made by 0002


def test_dingbot_migrate_shows_and_applies_the_schema(
    database_url: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from dingbot.cli import main

    monkeypatch.setenv("DATABASE_PATH", str(tmp_path / "bot.db"))
    if database_url is not None:
        monkeypatch.setenv("DATABASE_URL", database_url)
    versions = ", ".join(sorted(p.name[:4] for p in (migrate.MIGRATIONS / "versions").glob("0*.py")))
    assert main(["migrate", "--show"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        f"schema:   none (a new database); this dingbot's newest: {head()}",
        f"pending:  {versions}",
    ]
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == f"applied:  {versions}"
    assert main(["migrate"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "applied:  nothing (already up to date)"
    engine = PostgresEngine(database_url) if database_url else SqliteEngine(tmp_path / "bot.db")
    sql(engine, "UPDATE alembic_version SET version_num = '9001'")
    assert main(["migrate"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dingbot: database schema version 9001 is newer than this dingbot")
    assert "\n" not in err


def on_database(target: Path | Engine, work: Callable[[Any], T]) -> T:
    """`work(connection)` on a work lane of a Database opened on `target` for it."""

    async def go() -> T:
        database = Database(target)
        await database.open()
        try:
            return await database.run(work)
        finally:
            await database.close()

    return asyncio.run(go())


def test_a_pipelined_transaction_that_fails_leaves_nothing_and_a_usable_connection(
    database_target: Path | Engine,
) -> None:
    """On PostgreSQL `pipelined` sends statements without waiting for their answers; a failed statement
    (here a duplicate key) surfaces at the next read or at the end, the transaction is rolled back after the
    pipeline (inside it, a ROLLBACK would be discarded), and the connection works on. Asynchronous commits
    (`durable=False`) begin in two statements there, one query each."""
    from agent.storage.connection import Connection, transaction

    def work(conn: Connection) -> list[str]:
        conn.execute("CREATE TABLE pipelined (id INTEGER PRIMARY KEY)")
        outcomes = []
        for read_between in (True, False):
            try:
                with transaction(conn, durable=read_between, pipelined=True):
                    conn.execute("INSERT INTO pipelined (id) VALUES (1)")
                    conn.execute("INSERT INTO pipelined (id) VALUES (1)")
                    if read_between:
                        conn.execute("SELECT COUNT(*) FROM pipelined").fetchone()
                outcomes.append("committed")
            except Exception as exc:  # each engine's own duplicate-key error
                outcomes.append(f"{type(exc).__name__}, in a transaction after it: {conn.in_transaction}")
        with transaction(conn, durable=False, pipelined=True):
            conn.execute("INSERT INTO pipelined (id) VALUES (2)")
        outcomes.append(str(conn.execute("SELECT id FROM pipelined").fetchall()))
        return outcomes

    first, second, rows = on_database(database_target, work)
    assert first.endswith("in a transaction after it: False")
    assert second.endswith("in a transaction after it: False")
    assert "committed" not in (first, second)
    assert rows == "[(2,)]"  # only the good transaction's row


@pytest.mark.postgres_only
def test_a_write_that_is_not_a_promise_does_not_wait_for_the_wal_flush(database_target: Engine) -> None:
    """History, token counts and summaries commit asynchronously on PostgreSQL; the inbox and outbox (and
    whatever follows on the connection) keep the server's synchronous commit."""
    from agent.storage.connection import transaction

    def seen(durable: bool) -> tuple[str, str]:
        def work(conn: object) -> tuple[str, str]:
            with transaction(conn, durable=durable):  # type: ignore[arg-type]
                inside = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[attr-defined]
            after = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[attr-defined]
            return str(inside), str(after)

        return on_database(database_target, work)

    assert seen(durable=False) == ("off", "on")
    assert seen(durable=True) == ("on", "on")


def _holding_the_write_lock(path: Path, release: threading.Event, holding: threading.Event) -> None:
    """Another writer (the service's connection, say): BEGIN IMMEDIATE, then COMMIT once `release` is set."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        holding.set()
        release.wait(PATIENCE)
        conn.execute("COMMIT")
    finally:
        conn.close()


@pytest.mark.sqlite_only
def test_a_callback_s_insert_waits_for_another_writer_s_lock_then_goes_in(
    database_target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request lane reports a busy lock at once (busy_timeout 0) and tries again in 0.1-2 ms steps:
    the insert lands once the other writer commits, and fails with the busy error after the patience."""
    from agent.storage import database as database_module

    async def scenario() -> None:
        database = Database(database_target)
        await database.open()
        try:
            insert = "INSERT INTO rate_events (person_id, at) VALUES (?, ?)"
            release, holding = threading.Event(), threading.Event()
            holder = threading.Thread(
                target=_holding_the_write_lock, args=(database_target, release, holding)
            )
            holder.start()
            assert holding.wait(PATIENCE)
            for pragma in ("busy_timeout", "wal_autocheckpoint"):  # waits and checkpoints are not its
                [(value,)] = await database.run_for_request(
                    lambda c, pragma=pragma: c.execute(f"PRAGMA {pragma}").fetchall()
                )
                assert value == 0, pragma
            waiting = asyncio.ensure_future(database.run_for_request(lambda c: c.execute(insert, ("a", 1.0))))
            await asyncio.sleep(0.2)  # it has found the lock taken: SQLite would have failed it already
            assert not waiting.done()
            release.set()
            await asyncio.wait_for(waiting, PATIENCE)
            holder.join()

            monkeypatch.setattr(database_module, "BUSY_PATIENCE_SECONDS", 0.2)
            release, holding = threading.Event(), threading.Event()
            holder = threading.Thread(
                target=_holding_the_write_lock, args=(database_target, release, holding)
            )
            holder.start()
            assert holding.wait(PATIENCE)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                await database.run_for_request(lambda c: c.execute(insert, ("b", 2.0)))
            release.set()
            holder.join()
            await database.run_for_request(lambda c: c.execute(insert, ("c", 3.0)))  # the lane still works
        finally:
            await database.close()

    asyncio.run(scenario())
    assert sql(database_target, "SELECT person_id FROM rate_events ORDER BY at") == [("a",), ("c",)]


@pytest.mark.postgres_only
def test_work_on_postgresql_is_not_held_up_by_a_slow_statement(database_target: Engine) -> None:
    """Several work lanes: while one connection waits (a slow statement, a lock), the next work runs on
    another."""
    stuck = threading.Event()

    def slow(conn: object) -> int:
        stuck.wait(PATIENCE)
        return 1

    async def scenario() -> tuple[int, int]:
        database = Database(database_target)
        await database.open()
        try:
            first = asyncio.ensure_future(database.run(slow))
            quick = await asyncio.wait_for(
                database.run(lambda conn: int(conn.execute("SELECT 2").fetchone()[0])), PATIENCE
            )
            stuck.set()
            return await first, quick
        finally:
            stuck.set()
            await database.close()

    assert asyncio.run(scenario()) == (1, 2)
