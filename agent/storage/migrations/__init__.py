"""Alembic migrations of the database schema, applied forward at startup on SQLite and PostgreSQL."""
