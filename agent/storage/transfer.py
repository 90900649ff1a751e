"""Rows out of one database and into another: `dingbot export` / `dingbot import` (one machine to replicas).

Every table that holds the service's state is copied whole, each row as it is (ids kept, so the
outbox's parts and the history's order survive); tables of passing state (the storage probe, the rate
window) are not. Importing is idempotent: a row already there is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from agent.storage.connection import Connection, transaction
from agent.storage.engine import Engine

TABLES = (
    "history",
    "inbox",
    "outbox",
    "memory_sharing",
    "learning",
    "forgotten",
    "reminders",
    "file_context",
    "summaries",
    "summary_people",
    "token_usage",
    "console_audit",
)
_KEYED = {
    "history": "id",
    "outbox": "id",
    "reminders": "id",
    "console_audit": "id",
}  # tables whose ids a sequence hands out on PostgreSQL


def export_rows(engine: Engine) -> Iterator[tuple[str, dict[str, Any]]]:
    """(table, row) for every row of every table, in id order where there is one."""
    conn = engine.connect()
    try:
        for table in TABLES:
            order = f" ORDER BY {_KEYED[table]}" if table in _KEYED else ""
            cursor = conn.execute(f"SELECT * FROM {table}{order}")  # noqa: S608 - names from TABLES
            names = [column[0] for column in getattr(cursor, "description", None) or ()]
            for row in cursor.fetchall():
                yield table, dict(zip(names, row, strict=True))
    finally:
        engine.close(conn)


def import_rows(engine: Engine, rows: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, int]:
    """Insert the rows (a row whose key is there already is skipped); how many went in, per table."""
    counts = dict.fromkeys(TABLES, 0)
    conn = engine.connect()
    try:
        with transaction(conn):
            for table, row in rows:
                if table not in counts:
                    raise ValueError(f"unknown table {table!r} in the export")
                columns = ", ".join(row)
                marks = ", ".join("?" * len(row))
                cursor = conn.execute(
                    f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING",  # noqa: S608
                    tuple(row.values()),
                )
                counts[table] += cursor.rowcount
            _advance_sequences(engine, conn)
    finally:
        engine.close(conn)
    return counts


def _advance_sequences(engine: Engine, conn: Connection) -> None:
    """PostgreSQL hands out ids from a sequence: past the imported ones, or the next insert collides."""
    if engine.name != "postgresql":
        return
    for table, key in _KEYED.items():
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', '{key}'), "  # noqa: S608
            f"GREATEST((SELECT MAX({key}) FROM {table}), 1))"
        )
