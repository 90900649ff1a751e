"""What a statement sees of a database connection, whichever engine is behind it.

The SQL in this project is written once, with `?` placeholders and standard upserts; SQLite's own
connection runs it as it is, and `postgres.PgConnection` turns the placeholders into psycopg's.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the stores use (sqlite3.Connection is one as it is)."""

    @property
    def in_transaction(self) -> bool: ...

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any: ...


class AlsoWrite(Protocol):
    """Work that rides in a transaction another store runs, on the same connection and thread: `write`
    inside it, `then` after its commit. One round trip for both, and both or neither."""

    def write(self, conn: Connection) -> None: ...

    def then(self, conn: Connection) -> None: ...


@contextlib.contextmanager
def transaction(conn: Connection, *, durable: bool = True, pipelined: bool = False) -> Iterator[None]:
    """BEGIN ... COMMIT, rolled back on any error. On SQLite BEGIN IMMEDIATE: writers take turns from the
    first statement. The engine may already have rolled back (a full disk does that, a lost connection
    too): the original error is what is raised, never "no transaction is active".

    `durable=False` is for what a server crash may lose without breaking a promise (history turns, token
    counts, summaries; never the inbox or the outbox): PostgreSQL commits it without waiting for the WAL
    flush (`synchronous_commit` off for this transaction: still atomic and in order, only the last fraction
    of a second could be lost if the server itself crashes), which halves the commit on a disk that syncs.
    SQLite (WAL, synchronous=NORMAL) does not sync a commit anyway.

    `pipelined`: on PostgreSQL the statements go out without waiting for each answer (psycopg's pipeline
    mode), until one whose rows are read: a transaction of seven statements is two round trips, 380 →
    230 µs of CPU here. Only for bodies that read no `rowcount` (known only once the answers are in)."""
    if isinstance(conn, sqlite3.Connection):
        begin = ["BEGIN IMMEDIATE"]
    elif not durable and pipelined:  # a pipeline sends one statement per query
        begin = ["BEGIN", "SET LOCAL synchronous_commit TO OFF"]
    else:  # one round trip: a statement without parameters may hold two
        begin = ["BEGIN" if durable else "BEGIN; SET LOCAL synchronous_commit TO OFF"]
    pipeline = conn.pipeline() if pipelined and isinstance(conn, Pipelining) else contextlib.nullcontext()
    try:
        with pipeline:
            for statement in begin:
                conn.execute(statement)
            yield
            conn.execute("COMMIT")
    except BaseException:
        _roll_back(conn)  # after the pipeline: inside it, an aborted pipeline discards the ROLLBACK
        raise


def _roll_back(conn: Connection) -> None:
    if conn.in_transaction:
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")


@runtime_checkable
class Pipelining(Protocol):
    """A connection that can send statements without waiting for each answer (PostgreSQL)."""

    def pipeline(self) -> contextlib.AbstractContextManager[Any]: ...


def lock_person(conn: Connection, person_id: str) -> None:
    """Inside a transaction: one writer at a time for this person's history and forget mark. SQLite's
    BEGIN IMMEDIATE already lets one writer in; PostgreSQL takes a lock held until the transaction ends,
    so "/forget all" on one replica and a history write on another cannot interleave."""
    if not isinstance(conn, sqlite3.Connection):
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (f"person:{person_id}",))
