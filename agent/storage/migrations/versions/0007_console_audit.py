"""What was done through the web console (logins, erased memories, saved prompts, retried replies), for its
audit page: when, from which address, what and on what, never the content.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TIME: sa.Double[float] = sa.Double()
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "console_audit",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("at", TIME, nullable=False),
        sa.Column("address", sa.Text(), nullable=False),  # the client's IP
        sa.Column("action", sa.Text(), nullable=False),  # login, login_failed, locked_out, logout, ...
        sa.Column("target", sa.Text(), nullable=False),  # what it acted on ("" for a login)
    )
    op.create_index("console_audit_at", "console_audit", ["at"])


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
