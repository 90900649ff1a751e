"""Read and write the service's tables directly from a test, whichever engine holds them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.settings.config import Settings
from agent.storage.database import engine_for
from agent.storage.engine import Engine
from agent.storage.sqlite import SqliteEngine


def engine_of(where: Settings | Path | Engine) -> Engine:
    if isinstance(where, Engine):
        return where
    if isinstance(where, Settings):
        return engine_for(where)
    return SqliteEngine(where)


def sql(where: Settings | Path | Engine, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    """Run one statement (`?` placeholders) on its own connection; the rows it returns, if any."""
    engine = engine_of(where)
    conn = engine.connect()
    try:
        cursor = conn.execute(statement, params)
        description = getattr(cursor, "description", None)
        return [tuple(row) for row in cursor.fetchall()] if description else []
    finally:
        engine.close(conn)
