"""The database: SQLite at DATABASE_PATH, or PostgreSQL at DATABASE_URL, reached through lanes.

Statements run on dedicated threads (one connection each), so the event loop never blocks on the database.
The SQL is written once (`?` placeholders, standard upserts, `RETURNING`); the schema lives in Alembic
migrations (`agent/storage/migrations/`), applied forward when the database is opened.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from agent.storage.connection import Connection
from agent.storage.engine import Engine
from agent.storage.health import StorageError, StorageFault, StorageHealth
from agent.storage.migrate import SchemaTooNew
from agent.storage.sqlite import SqliteEngine
from agent.storage.turns import WriterTurns

if TYPE_CHECKING:
    from agent.settings.config import Settings

T = TypeVar("T")


class Listener(Protocol):
    def stop(self) -> None: ...


def engine_for(settings: Settings) -> Engine:
    """PostgreSQL when DATABASE_URL is set, else SQLite at DATABASE_PATH."""
    if settings.database_url is not None:
        from agent.storage.postgres import PostgresEngine  # psycopg is loaded only when it is used

        return PostgresEngine(settings.database_url.get_secret_value())
    return SqliteEngine(settings.database_path)


BUSY_PATIENCE_SECONDS = 5.0  # a request-lane statement waits this long for another writer's lock
BUSY_FIRST_WAIT_SECONDS = 0.0001
BUSY_LONGEST_WAIT_SECONDS = 0.0005  # the other writers hold back meanwhile (WriterTurns): look often


class _Lane:
    """One connection on one dedicated thread, made (again) on that thread when it is needed."""

    def __init__(self, name: str, *, fine_waits: bool = False) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self.conn: Connection | None = None
        self.pending = 0  # statements given to it and not finished: work goes to the least busy lane
        self.fresh = False  # connect anew before the next statement (set after a fault is over)
        # The request lane waits for a lock in steps of 0.1-2 ms (its work is one transaction, so trying
        # it again is safe); the work lane lets the driver wait.
        self.fine_waits = fine_waits


class Database:
    """The request lane serves the few statements a callback waits for (the dedupe insert); the work lanes
    (one on SQLite, whose writers take turns anyway; `Engine.work_lanes` on PostgreSQL) serve everything
    else. So an acknowledgement never queues behind background history writes.

    A statement that fails because of the database itself (damaged, full, unwritable, failing, a server
    that does not answer) raises `StorageError` and puts `health` in that fault until `probe()` finds the
    database working again. A lost PostgreSQL connection is replaced on the lane's next statement.
    """

    def __init__(
        self, target: Path | Engine, *, quiet_health: bool = False, work_lanes: int | None = None
    ) -> None:
        """`quiet_health`: faults are logged at DEBUG only (the acking process: the service logs them);
        `work_lanes`: instead of the engine's number (the acking process needs one)."""
        self.engine = target if isinstance(target, Engine) else SqliteEngine(target)
        self._work_lanes = work_lanes or self.engine.work_lanes
        self.health = StorageHealth(self.engine.where, self.engine.fix, quiet=quiet_health)
        self._lanes: dict[str, _Lane] = {}
        self._work: list[_Lane] = []  # the work lanes (Engine.work_lanes): "work" picks the least busy
        self._turn = 0
        self._turns: WriterTurns | None = None  # a waiting request-lane write goes first (SQLite)

    @classmethod
    def for_settings(cls, settings: Settings) -> Database:
        return cls(engine_for(settings))

    @property
    def single_owner(self) -> bool:
        """One process owns the database: whatever is `processing` when it starts was left by its past."""
        return self.engine.single_owner

    async def open(self) -> None:
        """Migrate the schema forward and connect both lanes. Raises StorageError (one line) when the
        database cannot be used, SchemaTooNew when a newer dingbot migrated it."""
        loop = asyncio.get_running_loop()
        work, request = _Lane("dingbot-db"), _Lane("dingbot-db-request", fine_waits=True)
        self._lanes = {"work": work, "request": request}
        self._work = [work] + [_Lane(f"dingbot-db-{n}") for n in range(2, self._work_lanes + 1)]
        self._lanes.update({f"work-{n}": lane for n, lane in enumerate(self._work[1:], start=2)})
        if self._turns is not None:  # opened again
            self._turns.close()
        self._turns = self.engine.turns()
        try:
            await loop.run_in_executor(work.executor, self.engine.migrate)
            for lane in self._lanes.values():
                await loop.run_in_executor(lane.executor, self._connection, lane)
        except SchemaTooNew:
            await self.close()
            raise
        except Exception as exc:
            await self.close()
            error = self.engine.error_for(exc)
            if error is exc:
                raise
            raise error from None

    def _connection(self, lane: _Lane) -> Connection:
        if lane.fresh:
            lane.fresh = False
            old, lane.conn = lane.conn, None
            if old is not None:
                with contextlib.suppress(Exception):  # closing a broken connection may fail too
                    self.engine.close(old)
        if lane.conn is None:
            conn = self.engine.connect()
            if lane.fine_waits:
                self.engine.serve_requests(conn)
            lane.conn = conn
        return lane.conn

    def _patiently(self, lane: _Lane, work: Callable[[Connection], T]) -> T:
        """`work` again while another connection holds the lock, waiting 0.1 ms, then twice as long each
        time up to 2 ms, for at most BUSY_PATIENCE_SECONDS (then the busy error is raised)."""
        wait = BUSY_FIRST_WAIT_SECONDS
        deadline = time.monotonic() + BUSY_PATIENCE_SECONDS
        turns, waited = self._turns, False
        try:
            while True:
                try:
                    return work(self._connection(lane))
                except self.engine.errors as exc:
                    if not self.engine.busy(exc) or time.monotonic() > deadline:
                        raise
                if turns is not None:
                    turns.waiting()  # the other writers hold back until this one is through
                    waited = True
                time.sleep(wait)
                wait = min(2 * wait, BUSY_LONGEST_WAIT_SECONDS)
        finally:
            if waited and turns is not None:
                turns.done()

    def _least_busy(self) -> _Lane | None:
        """The work lane with the fewest statements pending; among equals each in turn, so none sits idle
        (an idle connection is the one a firewall or a restarted server has quietly dropped)."""
        if not self._work:
            return None
        self._turn = (self._turn + 1) % len(self._work)
        return min(self._work[self._turn :] + self._work[: self._turn], key=lambda lane: lane.pending)

    async def _run_on(self, lane: _Lane | None, work: Callable[[Connection], T]) -> T:
        if lane is None:
            raise RuntimeError("database is not open")

        turns = self._turns

        def run() -> T:
            conn = self._connection(lane)
            if turns is not None and not lane.fine_waits:
                turns.give_way()  # a callback's write waiting for the lock goes first
            try:
                return self._patiently(lane, work) if lane.fine_waits else work(conn)
            except self.engine.errors as exc:
                if self.engine.broken(conn, exc):
                    lane.conn = None
                    with contextlib.suppress(Exception):  # closing a broken connection may fail too
                        self.engine.close(conn)
                raise

        lane.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(lane.executor, run)
        except self.engine.errors as exc:
            fault = self.engine.fault_of(exc)
            if fault is None:
                raise
            raise self.health.failed(exc, fault) from exc
        finally:
            lane.pending -= 1

    async def probe(self) -> bool:
        """After a fault: does the database work again? A damaged SQLite file must pass a quick_check, any
        other fault a real write (a full disk still reads). Clears the fault when it does."""
        fault = self.health.fault
        if fault is None:
            return True
        work = self._lanes.get("work")
        if work is not None and fault is StorageFault.UNREACHABLE:
            work.fresh = True  # on a new connection: the others may be as dead as the one that failed
        try:
            works = await self._run_on(work, lambda conn: self.engine.probe(conn, fault))
        except StorageError:
            return False
        except self.engine.errors:
            return False
        if works:
            self.health.recovered()
            for lane in self._lanes.values():  # a fault may have broken idle connections too (a restarted
                lane.fresh = True  # server): each lane connects anew before its next statement
        return works

    async def run(self, work: Callable[[Connection], T]) -> T:
        """Run `work(connection)` on the least busy work lane."""
        return await self._run_on(self._least_busy(), work)

    async def run_for_request(self, work: Callable[[Connection], T]) -> T:
        """Run `work(connection)` on the request lane: only for short statements a caller waits on."""
        return await self._run_on(self._lanes.get("request"), work)

    async def notify(self, channel: str, payload: str) -> None:
        """Tell every process listening on `channel` (PostgreSQL NOTIFY; nobody else listens to SQLite)."""
        if not self.single_owner:
            await self.run(lambda conn: conn.execute("SELECT pg_notify(?, ?)", (channel, payload)))

    def listen(
        self,
        channel: str,
        on_notice: Callable[[str], None],
        on_connected: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> Listener:
        """Hear `channel` on a connection and thread of its own (PostgreSQL only), reconnecting when the
        connection drops. The callbacks run on that thread."""
        from agent.storage.postgres import PgListener, PostgresEngine

        if not isinstance(self.engine, PostgresEngine):
            raise RuntimeError("only PostgreSQL carries notices between processes")
        listener = PgListener(self.engine.url, channel, on_notice, on_connected, on_lost)
        listener.start()
        return listener

    async def shrink(self) -> None:
        """After deleting personal data: leave no readable copy behind (SQLite rebuilds its file)."""
        await self.run(self.engine.shrink)

    async def ping(self) -> bool:
        """The database answers and has no fault."""
        try:
            await self.run_for_request(lambda c: c.execute("SELECT 1").fetchone())
        except (StorageError, RuntimeError):
            return False
        except self.engine.errors:
            return False
        return self.health.ok

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        lanes, self._lanes, self._work = self._lanes, {}, []
        for lane in lanes.values():
            conn, lane.conn = lane.conn, None
            if conn is not None:
                with contextlib.suppress(Exception):  # closing a broken connection may fail too
                    await loop.run_in_executor(lane.executor, self.engine.close, conn)
            lane.executor.shutdown(wait=True)
        turns, self._turns = self._turns, None
        if turns is not None:
            turns.close()
