"""Messages by when they arrived: the console's overview counts the last 24 hours hour by hour, an index
range instead of a scan of every message kept for deduplication.

Revision ID: 0008
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("inbox_received", "inbox", ["received_at"])


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
