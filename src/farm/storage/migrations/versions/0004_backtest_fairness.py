"""backtest fairness: lanes for round-robin claims, an index for per-user counts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farm.storage.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backtest_lanes",
        sa.Column("lane", sa.String(length=60), nullable=False),
        sa.Column(
            "last_started_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("lane"),
    )
    with op.batch_alter_table("backtest_sessions", schema=None) as batch_op:
        batch_op.create_index("ix_backtests_user_status", ["user_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("backtest_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_backtests_user_status")
    op.drop_table("backtest_lanes")
