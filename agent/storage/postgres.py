"""The PostgreSQL engine: a server at DATABASE_URL, shared by every replica (psycopg 3).

Statements keep the project's `?` placeholders; `PgConnection` turns them into psycopg's `%s` (cached).
psycopg is used directly, not through SQLAlchemy: measured here, SQLAlchemy Core added ~160 µs of CPU to
every statement (and its async layer 0.55 ms to the ack's one statement), a cost paid ~12 times per
answered message. SQLAlchemy and Alembic run the migrations at startup only.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import sqlalchemy as sa
from psycopg.pq import TransactionStatus

from agent.storage.connection import Connection, transaction
from agent.storage.engine import PROBE_BYTES, PROBE_WRITE, Engine
from agent.storage.health import StorageFault

CONNECT_TIMEOUT_SECONDS = 5
log = logging.getLogger(__name__)

_FIXES = {
    StorageFault.UNREACHABLE: "the database server does not answer: start it, or check DATABASE_URL "
    "(host, port, user, password, database)",
    StorageFault.FULL: "the database server's disk is full: free space on it",
    StorageFault.UNWRITABLE: "the database refuses writes (a read-only standby, or a user without rights): "
    "point DATABASE_URL at the primary, with a user that owns the tables",
    StorageFault.DAMAGED: "the server reports damaged data: see its log, and restore from a backup",
    StorageFault.FAILING: "the server reports I/O errors: see its log and its disk",
}


def without_password(url: str) -> str:
    """The URL to show: never its password (nor a password given as a query parameter)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    query = "&".join(p for p in parts.query.split("&") if p and not p.lower().startswith("password="))
    return urlunsplit((parts.scheme, user + host, parts.path, query, ""))


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """A psycopg connection speaking the project's SQL (`?` placeholders), in autocommit mode."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[Any]:
        return self.raw.execute(_placeholders(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        with self.raw.cursor() as cursor:
            cursor.executemany(_placeholders(sql), parameters)

    def pipeline(self) -> contextlib.AbstractContextManager[Any]:
        return self.raw.pipeline()

    def close(self) -> None:
        self.raw.close()


class PostgresEngine(Engine):
    name = "postgresql"
    single_owner = False  # replicas share it: a `processing` row may be another replica's live work
    # Several: a statement is a round trip to the server, and one connection made every reply wait for
    # the others' (answered/s 78 -> see docs/benchmarks.md). Rows are locked per person and claims are
    # conditional statements, as for replicas, so the lanes need nothing else. SQLite keeps one writer.
    work_lanes = 3

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = without_password(url)

    def connect(self) -> Connection:
        raw = psycopg.connect(
            self.url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS, application_name="dingbot"
        )
        return PgConnection(raw)

    def sqlalchemy_engine(self) -> sa.Engine:
        url = sa.make_url(self.url).set(drivername="postgresql+psycopg")
        return sa.create_engine(
            url, poolclass=sa.NullPool, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}
        )

    def fault_of(self, exc: BaseException) -> StorageFault | None:
        if not isinstance(exc, psycopg.Error):
            return None
        state = exc.sqlstate or ""
        if state == "53100":  # disk_full
            return StorageFault.FULL
        if state in ("25006", "42501"):  # read_only_sql_transaction, insufficient_privilege
            return StorageFault.UNWRITABLE
        if state in ("XX001", "XX002"):  # data_corrupted, index_corrupted
            return StorageFault.DAMAGED
        if state.startswith("58"):  # system_error, io_error
            return StorageFault.FAILING
        if isinstance(exc, psycopg.InterfaceError) or (
            isinstance(exc, psycopg.OperationalError)
            and (not state or state.startswith(("08", "57P")) or state == "53300")
        ):  # no connection, connection lost, server shutting down or starting, too many connections
            return StorageFault.UNREACHABLE
        return None

    def fix(self, fault: StorageFault) -> str:
        return _FIXES[fault]

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        return (psycopg.Error,)

    def broken(self, conn: Connection, exc: BaseException) -> bool:
        return not isinstance(conn, PgConnection) or conn.raw.closed or conn.raw.broken

    def probe(self, conn: Connection, fault: StorageFault) -> bool:
        with transaction(conn):
            conn.execute(PROBE_WRITE, (time.time(), bytes(PROBE_BYTES)))
        return True

    def shrink(self, conn: Connection) -> None:
        """VACUUM the tables that hold what people wrote: deleted rows' space is reclaimed and reused.
        (Not VACUUM FULL: it would lock the tables every replica writes. The server's WAL archive and
        backups are the operator's to expire: docs/replicas.md.)"""
        conn.execute("VACUUM history, inbox, outbox, learning")


class PgListener:
    """LISTEN on `channel` over a connection of its own, on a thread of its own; reconnects after a loss.
    `on_connected` runs once listening (again after each reconnect: notices in between were missed),
    `on_lost` when the connection broke, `on_notice(payload)` for each notice."""

    POLL_SECONDS = 0.5  # how often the thread checks the connection and whether it should stop

    def __init__(
        self,
        url: str,
        channel: str,
        on_notice: Callable[[str], None],
        on_connected: Callable[[], None],
        on_lost: Callable[[], None],
    ) -> None:
        self._url = url
        self._channel = channel
        self._on_notice, self._on_connected, self._on_lost = on_notice, on_connected, on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"dingbot-listen-{channel}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=CONNECT_TIMEOUT_SECONDS + 2 * self.POLL_SECONDS)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(
                    self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                ) as conn:
                    conn.execute(f"LISTEN {self._channel}")
                    self._on_connected()
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=self.POLL_SECONDS):
                            self._on_notice(notice.payload)
                        conn.execute("SELECT 1")  # a connection that broke quietly shows here
            except psycopg.Error:
                pass  # the server went away or the connection broke: listened to again below
            except Exception as exc:  # a callback failed (e.g. a cache that could not be filled)
                log.warning("listening on %s: %s: %s; starting again", self._channel, type(exc).__name__, exc)
            if not self._stop.is_set():
                self._on_lost()
                self._stop.wait(1.0)
