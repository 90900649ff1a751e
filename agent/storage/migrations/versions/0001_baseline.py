"""The schema as it was before migrations were versioned (a database from then is taken up as it is).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid
TIME: sa.Double[float] = sa.Double()  # epoch seconds: DOUBLE PRECISION on PostgreSQL (REAL loses them)


def upgrade() -> None:
    # if_not_exists: a database made before versioning has these already (created by the old startup).
    op.create_table(
        "history",
        sa.Column("id", ID, primary_key=True),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("person_id", sa.Text(), nullable=False),  # whose turn: "forget me" reaches group scopes
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        sa.CheckConstraint("role IN ('human', 'ai')", name="history_role"),
        if_not_exists=True,
    )
    op.create_index("history_scope", "history", ["scope", "id"], if_not_exists=True)
    op.create_index("history_created", "history", ["created_at"], if_not_exists=True)
    op.create_index("history_person", "history", ["person_id"], if_not_exists=True)

    # One row per accepted msgId: the dedupe key, and the message itself until it is answered.
    op.create_table(
        "inbox",
        sa.Column("msg_id", sa.Text(), primary_key=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("received_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.Column("person_id", sa.Text()),
        sa.Column("payload", sa.Text()),  # the parsed message (JSON) while unanswered
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("state IN ('processing', 'done', 'failed')", name="inbox_state_known"),
        if_not_exists=True,
    )
    op.create_index("inbox_updated", "inbox", ["updated_at"], if_not_exists=True)
    op.create_index("inbox_state", "inbox", ["state", "received_at"], if_not_exists=True)

    # Replies (and proactive notices) stored before they are sent; marked sent on errcode 0.
    op.create_table(
        "outbox",
        sa.Column("id", ID, primary_key=True),
        sa.Column("msg_id", sa.Text()),  # the message answered; NULL for a proactive notice
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("person_id", sa.Text()),
        sa.Column("body", sa.Text()),  # the webhook JSON body; cleared once sent
        sa.Column("route", sa.Text()),  # where it goes (holds the session webhook, a credential)
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TIME, nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", TIME, nullable=False),
        sa.Column("updated_at", TIME, nullable=False),
        sa.CheckConstraint("channel IN ('reply', 'robot')", name="outbox_channel_known"),
        sa.CheckConstraint("state IN ('pending', 'sent', 'failed', 'skipped')", name="outbox_state_known"),
        sa.UniqueConstraint("msg_id", "part", name="outbox_msg_part"),
        if_not_exists=True,
    )
    op.create_index("outbox_due", "outbox", ["state", "next_attempt_at"], if_not_exists=True)
    op.create_index("outbox_updated", "outbox", ["updated_at"], if_not_exists=True)

    op.create_table(
        "memory_sharing",
        sa.Column("person_id", sa.Text(), primary_key=True),
        sa.Column("shared", sa.Integer(), nullable=False),
        if_not_exists=True,
    )
    # Messages answered whose facts are not learned yet: stored with the reply, gone once learned.
    op.create_table(
        "learning",
        sa.Column("msg_id", sa.Text(), primary_key=True),
        sa.Column("person_id", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", TIME, nullable=False),
        if_not_exists=True,
    )
    # The last "/forget all" of each person (when they sent it): anything said before it is never written.
    op.create_table(
        "forgotten",
        sa.Column("person_id", sa.Text(), primary_key=True),
        sa.Column("at", TIME, nullable=False),
        if_not_exists=True,
    )
    # One row, rewritten by the probe that says whether the database can be written again after a fault.
    op.create_table(
        "storage_probe",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("at", TIME, nullable=False),
        sa.Column("room", sa.LargeBinary()),
        sa.CheckConstraint("id = 1", name="storage_probe_one_row"),
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
