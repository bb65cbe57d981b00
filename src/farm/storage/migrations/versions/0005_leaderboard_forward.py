"""leaderboard: forward bars and the headline board's columns

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-05 10:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farm.storage.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leaderboard_forward_bars",
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("bar_time", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("ret", sa.Double(), nullable=False),
        sa.Column("pnl", sa.Double(), nullable=False),
        sa.Column("recorded_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("agent_id", "bar_time"),
    )
    with op.batch_alter_table("leaderboard_entries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("in_sample_sharpe", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("forward_sharpe", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("forward_bars", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column(
                "first_forward_at", farm.storage.models.UTCDateTime(timezone=True), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "last_forward_at", farm.storage.models.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("leaderboard_entries", schema=None) as batch_op:
        batch_op.drop_column("last_forward_at")
        batch_op.drop_column("first_forward_at")
        batch_op.drop_column("forward_bars")
        batch_op.drop_column("forward_sharpe")
        batch_op.drop_column("in_sample_sharpe")
    op.drop_table("leaderboard_forward_bars")
