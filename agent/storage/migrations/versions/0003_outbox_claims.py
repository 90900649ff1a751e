"""A claim of an outbox row for one send, apart from its retry time: a redelivery that brings the reply
forward never takes a row another replica is sending right now.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as table:
        table.add_column(sa.Column("claimed_until", sa.Double(), nullable=True))  # epoch seconds


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
