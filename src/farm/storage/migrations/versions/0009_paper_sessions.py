"""paper sessions

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 10:55:20.423653
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farm.storage.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paper_sessions",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("agent_id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("symbols", sa.JSON(), nullable=False),
        sa.Column("warmup_bars", sa.Integer(), nullable=False),
        sa.Column("commission", sa.Double(), nullable=False),
        sa.Column("initial_cash", farm.storage.models.Money(), nullable=False),
        sa.Column("stop_requested", sa.Boolean(), nullable=False),
        sa.Column("liquidate", sa.Boolean(), nullable=False),
        sa.Column("first_bar_time", farm.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_bar_time", farm.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("bars_processed", sa.Integer(), nullable=False),
        sa.Column("missing_at_last_step", sa.JSON(), nullable=False),
        sa.Column("failure_reason", sa.String(length=30), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("failure_traceback", sa.Text(), nullable=True),
        sa.Column("created_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("started_at", farm.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("stopped_at", farm.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["paper_accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("paper_sessions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_paper_sessions_agent_created", ["agent_id", "created_at"], unique=False
        )
        batch_op.create_index("ix_paper_sessions_status", ["status"], unique=False)
        batch_op.create_index(
            "ix_paper_sessions_user_created", ["user_id", "created_at"], unique=False
        )

    op.create_table(
        "paper_equity",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("bar_time", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cash", sa.Double(), nullable=False),
        sa.Column("equity", sa.Double(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["paper_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id", "seq"),
    )
    op.create_table(
        "paper_trades",
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Double(), nullable=False),
        sa.Column("entry_time", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("exit_time", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("entry_price", sa.Double(), nullable=False),
        sa.Column("exit_price", sa.Double(), nullable=False),
        sa.Column("pnl", sa.Double(), nullable=False),
        sa.Column("pnl_net", sa.Double(), nullable=False),
        sa.Column("commission", sa.Double(), nullable=False),
        sa.Column("bars_held", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["paper_sessions.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("session_id", "n"),
    )


def downgrade() -> None:
    op.drop_table("paper_trades")
    op.drop_table("paper_equity")
    with op.batch_alter_table("paper_sessions", schema=None) as batch_op:
        batch_op.drop_index("ix_paper_sessions_user_created")
        batch_op.drop_index("ix_paper_sessions_status")
        batch_op.drop_index("ix_paper_sessions_agent_created")

    op.drop_table("paper_sessions")
