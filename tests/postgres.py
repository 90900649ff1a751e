"""PostgreSQL for tests: one database per run (made here, dropped at the end), one schema per test.

The server is the machine's own (127.0.0.1:5432, trust auth, DINGBOT_TEST_POSTGRES to point elsewhere on
loopback). Locally, tests that need it skip with one line when none answers; in CI (CI=true) they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest

SERVER = os.environ.get("DINGBOT_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def _admin_connect(dbname: str = "postgres"):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(f"{SERVER}/{dbname}", autocommit=True, connect_timeout=3)


def server_problem() -> str | None:
    """None when the server answers; else why not, in a few words."""
    try:
        with _admin_connect() as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return " ".join(str(exc).split())[:200] or type(exc).__name__
    return None


class RunDatabase:
    """A database for this run; `schema()` gives each test its own schema in it."""

    def __init__(self) -> None:
        self.name = f"dingbot_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"

    def create(self) -> None:
        with _admin_connect() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def drop(self) -> None:
        with _admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    @contextmanager
    def schema(self) -> Iterator[str]:
        """A fresh schema; the URL whose connections use it (search_path), dropped afterwards."""
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with _admin_connect(self.name) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
        try:
            yield f"{SERVER}/{self.name}?options={quote(f'-csearch_path={schema}')}"
        finally:
            with _admin_connect(self.name) as conn:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")


def require_server() -> None:
    """Skip (locally) or fail (CI) when no PostgreSQL answers."""
    problem = server_problem()
    if problem is None:
        return
    message = f"PostgreSQL at {SERVER} does not answer ({problem})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: CI must run the PostgreSQL tests", pytrace=False)
    pytest.skip(f"{message}: PostgreSQL tests skipped")
