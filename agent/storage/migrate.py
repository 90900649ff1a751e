"""Schema versions: Alembic migrations applied forward at startup, on either engine.

A database made before versions were kept (no `alembic_version` table) is repaired the old way first
(columns added since, the outbox's `skipped` state) and then taken up by the baseline. A database whose
version this code does not know was migrated by a newer dingbot: refused, in one line.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from agent.errors import DingbotError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_LOCK = 7_240_331  # pg_advisory_lock key: replicas starting together migrate one after the other

# Columns added before versioning: (table, column, definition), added to a database that lacks them.
_LEGACY_COLUMNS = (
    ("inbox", "person_id", "TEXT"),
    ("inbox", "payload", "TEXT"),
    ("inbox", "attempts", "INTEGER NOT NULL DEFAULT 0"),
)


class SchemaTooNew(DingbotError):
    """The database was migrated by a newer dingbot."""


@dataclasses.dataclass(frozen=True)
class SchemaStatus:
    current: str | None  # None: an empty database, or one from before versioning
    head: str
    pending: tuple[str, ...]  # revisions an upgrade would apply, oldest first


def _config(connection: sa.Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def status(connection: sa.Connection) -> SchemaStatus:
    scripts = _scripts()
    head = scripts.get_current_head()
    assert head is not None  # the baseline exists
    current = MigrationContext.configure(connection).get_current_revision()
    known = {script.revision for script in scripts.walk_revisions()}
    if current is not None and current not in known:
        raise SchemaTooNew(
            f"database schema version {current} is newer than this dingbot knows (up to {head}): run the "
            "dingbot that upgraded it, or restore a backup made before that upgrade"
        )
    pending = [
        script.revision
        for script in scripts.iterate_revisions(head, current or "base")
        if script.revision != current
    ]
    return SchemaStatus(current, head, tuple(reversed(pending)))


def _repair_legacy_sqlite(connection: sa.Connection) -> None:
    """A SQLite database from before versioning: bring its tables to the baseline's shape."""
    tables = set(sa.inspect(connection).get_table_names())
    for table, column, definition in _LEGACY_COLUMNS:
        if table in tables and column not in {c["name"] for c in sa.inspect(connection).get_columns(table)}:
            connection.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
    if "outbox" in tables and "outbox_before_skipped" not in tables:
        sql = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'outbox'"
        ).scalar_one()
        if "'skipped'" not in sql:  # made before the `skipped` state: its CHECK cannot take it
            # The baseline makes the table (and its indexes, which followed the rename) anew; the rows
            # are copied back after it.
            connection.exec_driver_sql("ALTER TABLE outbox RENAME TO outbox_before_skipped")
            connection.exec_driver_sql("DROP INDEX IF EXISTS outbox_due")
            connection.exec_driver_sql("DROP INDEX IF EXISTS outbox_updated")
    connection.commit()


def _copy_back_outbox(connection: sa.Connection) -> None:
    if "outbox_before_skipped" in sa.inspect(connection).get_table_names():
        columns = ", ".join(c["name"] for c in sa.inspect(connection).get_columns("outbox_before_skipped"))
        connection.exec_driver_sql(  # its columns by name: later versions add columns to the new table
            f"INSERT INTO outbox ({columns}) SELECT {columns} FROM outbox_before_skipped"  # noqa: S608
        )
        connection.exec_driver_sql("DROP TABLE outbox_before_skipped")
        connection.commit()


def upgrade(engine: sa.Engine) -> SchemaStatus:
    """Bring the database to this code's schema. Raises SchemaTooNew for a database ahead of it."""
    with engine.connect() as connection:
        postgres = connection.dialect.name == "postgresql"
        if postgres:
            connection.exec_driver_sql(f"SELECT pg_advisory_lock({_LOCK})")
            connection.commit()
        try:
            before = status(connection)
            if before.pending:
                if before.current is None and not postgres:
                    _repair_legacy_sqlite(connection)
                command.upgrade(_config(connection), "head")
                connection.commit()
                log.info(
                    "database schema %s -> %s (%s applied)",
                    before.current or "unversioned",
                    before.head,
                    ", ".join(before.pending),
                )
            if not postgres:
                _copy_back_outbox(connection)  # also after a crash between the rename and the copy
            return status(connection)
        finally:
            if postgres:
                connection.exec_driver_sql(f"SELECT pg_advisory_unlock({_LOCK})")
                connection.commit()
