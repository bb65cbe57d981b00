"""leaderboard entries

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farm.storage.models

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leaderboard_entries",
        sa.Column("board_type", sa.String(length=20), nullable=False),
        sa.Column("timeframe", sa.String(length=10), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("evaluated_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("returns", sa.Double(), nullable=True),
        sa.Column("sharpe", sa.Double(), nullable=True),
        sa.Column("sortino", sa.Double(), nullable=True),
        sa.Column("calmar", sa.Double(), nullable=True),
        sa.Column("max_drawdown", sa.Double(), nullable=True),
        sa.Column("win_rate", sa.Double(), nullable=True),
        sa.Column("total_pnl", sa.Double(), nullable=True),
        sa.Column("total_trades", sa.Integer(), nullable=True),
        sa.Column("probabilistic_sharpe", sa.Double(), nullable=True),
        sa.Column("deflated_sharpe", sa.Double(), nullable=True),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("updated_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("board_type", "timeframe", "agent_id"),
    )
    with op.batch_alter_table("leaderboard_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_leaderboard_board", ["board_type", "timeframe", "evaluated_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("leaderboard_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_leaderboard_board")

    op.drop_table("leaderboard_entries")
