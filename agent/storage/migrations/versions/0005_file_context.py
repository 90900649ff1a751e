"""The file a conversation last sent, as text, so the next questions can still ask about it for
FILE_CONTEXT_MINUTES: one row per history scope, replaced by the next file, erased by /reset and
/forget all, purged when it expires.

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "file_context",
        sa.Column("scope", sa.Text(), primary_key=True),  # the history scope it was sent in
        sa.Column("person_id", sa.Text(), nullable=False),  # who sent it: /forget all erases it
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("complete", sa.Integer(), nullable=False),  # 1: whole, 0: cut at FILE_MAX_CHARS
        sa.Column("text", sa.Text(), nullable=False),  # at most FILE_MAX_CHARS
        sa.Column("created_at", TIME, nullable=False),
    )
    op.create_index("file_context_person", "file_context", ["person_id"])
    op.create_index("file_context_created", "file_context", ["created_at"])


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
