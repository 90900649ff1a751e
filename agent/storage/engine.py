"""What differs between the two database engines, behind one interface the rest of the code never sees."""

from __future__ import annotations

import abc
from typing import Any

import sqlalchemy as sa

from agent.storage import migrate
from agent.storage.connection import Connection
from agent.storage.health import StorageError, StorageFault
from agent.storage.migrate import SchemaStatus
from agent.storage.turns import WriterTurns

PROBE_BYTES = 64 * 1024  # what the storage probe writes: enough that a full disk refuses it

PROBE_WRITE = (
    "INSERT INTO storage_probe (id, at, room) VALUES (1, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET at = excluded.at, room = excluded.room"
)


class Engine(abc.ABC):
    """SQLite at DATABASE_PATH, or PostgreSQL at DATABASE_URL."""

    name: str
    where: str  # for messages and logs: a file path, or a URL without its password
    single_owner: bool  # True: one process owns the database (whatever is `processing` at start is ours)
    work_lanes: int = 1  # connections (each on its own thread) for the work that is not a callback's

    @abc.abstractmethod
    def connect(self) -> Connection:
        """A new connection, in autocommit mode (transactions are explicit: `connection.transaction`)."""

    def serve_requests(self, conn: Connection) -> None:  # noqa: B027 (PostgreSQL: nothing to do)
        """Set `conn` up for statements a caller waits on: it reports a busy lock at once instead of waiting
        for it itself (see `busy`), and leaves slow upkeep to the other connections."""

    def turns(self) -> WriterTurns | None:
        """How a waiting callback's write asks the other writers to hold back (SQLite's lock has no queue;
        PostgreSQL locks rows, and a callback's insert waits for no other statement)."""
        return None

    def busy(self, exc: BaseException) -> bool:
        """`exc` says another connection holds the lock: the same work may simply be tried again."""
        return False

    def close(self, conn: Connection) -> None:
        conn.close()  # type: ignore[attr-defined]  # both drivers' connections have it

    @abc.abstractmethod
    def sqlalchemy_engine(self) -> sa.Engine:
        """For migrations only (statements go through `connect`): disposed of after use."""

    def migrate(self) -> SchemaStatus:
        """Bring the schema to this code's version (raises SchemaTooNew for a newer database)."""
        engine = self.sqlalchemy_engine()
        try:
            return migrate.upgrade(engine)
        finally:
            engine.dispose()

    def status(self) -> SchemaStatus:
        """The schema's version and what an upgrade would apply, changing nothing. Raises StorageError
        for a database that cannot be used, SchemaTooNew for one ahead of this code (each one line)."""
        engine = self.sqlalchemy_engine()
        try:
            with engine.connect() as connection:
                return migrate.status(connection)
        except migrate.SchemaTooNew:
            raise
        except Exception as exc:
            raise self.error_for(exc) from None
        finally:
            engine.dispose()

    def check(self) -> str:
        """Before the service starts: `status`, as a few words for the log."""
        found = self.status()
        return f"schema {found.current or 'new'}" + (
            f", {len(found.pending)} to apply" if found.pending else ""
        )

    def error_for(self, exc: BaseException) -> BaseException:
        """The one-line StorageError for a driver error (also when SQLAlchemy wraps it); else `exc`."""
        seen: BaseException | None = exc
        while seen is not None and not isinstance(seen, self.errors):
            seen = getattr(seen, "orig", None) or seen.__cause__
        if seen is None:
            return exc
        fault = self.fault_of(seen) or StorageFault.FAILING
        return StorageError(fault, self.where, str(seen), self.fix(fault))

    @abc.abstractmethod
    def fault_of(self, exc: BaseException) -> StorageFault | None:
        """The fault behind a driver error; None for errors that say nothing about the database's state
        (a constraint, a busy lock, a mistake in a statement)."""

    @abc.abstractmethod
    def fix(self, fault: StorageFault) -> str:
        """What an operator does about `fault`, in one sentence."""

    @property
    @abc.abstractmethod
    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's error classes."""

    def broken(self, conn: Connection, exc: BaseException) -> bool:
        """After `exc`: must the connection be replaced before the next statement?"""
        return False

    @abc.abstractmethod
    def probe(self, conn: Connection, fault: StorageFault) -> bool:
        """After `fault`: does the database work again? Raises a driver error when it does not."""

    @abc.abstractmethod
    def shrink(self, conn: Connection) -> None:
        """After personal data was deleted: leave no readable copy of it where the engine can."""

    def describe(self) -> dict[str, Any]:
        return {"engine": self.name, "where": self.where}
