"""Reminders people set by asking the assistant ("明天9点提醒我交周报"): one row per reminder, fired by
moving `due_at` forward (or ending the row) in the same transaction that writes its message to the outbox.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "reminders",
        sa.Column("id", ID, primary_key=True),
        sa.Column("person_id", sa.Text(), nullable=False),  # whose it is: only they list or cancel it
        sa.Column(
            "conversation_id", sa.Text(), nullable=False
        ),  # where it was set: a group sees only its own
        sa.Column("text", sa.Text(), nullable=False),  # what to remind of, in the person's words
        sa.Column("due_at", TIME, nullable=False),  # the next firing, epoch seconds
        sa.Column("repeat", sa.Text()),  # NULL once; daily, weekdays, weekly, monthly
        sa.Column("anchor", sa.Text(), nullable=False),  # the first due time, local ISO (recurrences)
        sa.Column("timezone", sa.Text(), nullable=False),
        sa.Column("origin", sa.Text(), nullable=False),  # where it was asked (JSON; holds a session webhook)
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("fired", sa.Integer(), nullable=False, server_default="0"),
        # the message and call that set it / cancelled it: answering a message again does not act twice
        sa.Column("source", sa.Text(), unique=True),
        sa.Column("cancelled_by", sa.Text()),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint("state IN ('active', 'done', 'cancelled')", name="reminders_state_known"),
    )
    op.create_index("reminders_due", "reminders", ["state", "due_at"])
    op.create_index("reminders_person", "reminders", ["person_id", "state"])
    op.create_index("reminders_cancelled_by", "reminders", ["cancelled_by"])


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
