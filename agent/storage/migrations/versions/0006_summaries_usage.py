"""The rolling summary of each conversation's older turns (one row per history scope, with the people
whose words it holds: /forget all of any of them erases it), and the tokens each person's messages cost
per day and model (/usage).

Revision ID: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TIME: sa.Double[float] = sa.Double()


def upgrade() -> None:
    op.create_table(
        "summaries",
        sa.Column("scope", sa.Text(), primary_key=True),  # the history scope it summarises
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column(
            "version", sa.BigInteger(), nullable=False
        ),  # random: a fold writes only over the one it read
        sa.Column(
            "oldest_at", TIME, nullable=False
        ),  # when the oldest turn folded into it was said (retention)
        sa.Column("updated_at", TIME, nullable=False),
    )
    op.create_index("summaries_oldest", "summaries", ["oldest_at"])
    op.create_table(
        "summary_people",
        sa.Column("scope", sa.Text(), primary_key=True),
        sa.Column("person_id", sa.Text(), primary_key=True),
    )
    op.create_index("summary_people_person", "summary_people", ["person_id"])
    op.create_table(
        "token_usage",
        sa.Column("person_id", sa.Text(), primary_key=True),
        sa.Column("day", sa.Text(), primary_key=True),  # YYYY-MM-DD in BOT_TIMEZONE
        sa.Column("model", sa.Text(), primary_key=True),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
    )
    op.create_index("token_usage_day", "token_usage", ["day"])


def downgrade() -> None:
    raise NotImplementedError("the schema only moves forward: restore a backup to go back")
