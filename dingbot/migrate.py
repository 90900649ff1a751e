"""`dingbot migrate`: show or apply the database's schema migrations (the service applies them at start)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from agent.errors import ConfigError
    from agent.settings.loading import load_settings
    from agent.storage import migrate
    from agent.storage.database import engine_for
    from agent.storage.health import StorageError

    engine = engine_for(load_settings(runnable=False))
    try:
        before = engine.status()  # one line for a database that cannot be reached, or one too new
        after = before if args.show else engine.migrate()
    except (ConfigError, StorageError, migrate.SchemaTooNew) as exc:
        print(f"dingbot: {exc}", file=sys.stderr)
        return 2
    print(f"database: {engine.where} ({engine.name})")
    print(f"schema:   {after.current or 'none (a new database)'}; this dingbot's newest: {after.head}")
    if args.show:
        print(f"pending:  {', '.join(after.pending) or 'none'}")
    else:
        print(f"applied:  {', '.join(before.pending) or 'nothing (already up to date)'}")
    return 0


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "migrate",
        help="bring the database's schema up to this version (done at every start); --show only reads",
        description="Apply the schema migrations to DATABASE_URL (PostgreSQL) or DATABASE_PATH (SQLite).",
    )
    parser.add_argument("--show", action="store_true", help="print the schema version and what is pending")
    parser.set_defaults(handler=_run)
