"""Per-person rate limits that hold across replicas: one row per counted message, for the last minute.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_events",
        sa.Column("person_id", sa.Text(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),  # epoch seconds
    )
    op.create_index("rate_events_person", "rate_events", ["person_id", "at"])


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
