"""paper accounts and feed

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-05 10:15:18.385569
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farm.storage.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "market_feeds",
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("replay_start", sa.Date(), nullable=True),
        sa.Column("symbols", sa.JSON(), nullable=False),
        sa.Column("last_bar_time", farm.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "last_published_at", farm.storage.models.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("steps_published", sa.BigInteger(), nullable=False),
        sa.Column("bars_published", sa.BigInteger(), nullable=False),
        sa.Column("missing_at_last_step", sa.JSON(), nullable=False),
        sa.Column("updated_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("source"),
    )
    op.create_table(
        "paper_accounts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("broker", sa.String(length=20), nullable=False),
        sa.Column("initial_cash", farm.storage.models.Money(), nullable=False),
        sa.Column("cash", farm.storage.models.Money(), nullable=False),
        sa.Column("funded", farm.storage.models.Money(), nullable=False),
        sa.Column("running_session_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("paper_accounts", schema=None) as batch_op:
        batch_op.create_index(
            "ix_paper_accounts_user_created", ["user_id", "created_at"], unique=False
        )

    op.create_table(
        "paper_orders",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("client_order_id", sa.String(length=48), nullable=False),
        sa.Column("session_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Double(), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("price", sa.Double(), nullable=True),
        sa.Column("limit_price", sa.Double(), nullable=True),
        sa.Column("valid_until", farm.storage.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("filled", sa.Double(), nullable=False),
        sa.Column("bar_time", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["paper_accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "client_order_id"),
    )
    with op.batch_alter_table("paper_orders", schema=None) as batch_op:
        batch_op.create_index(
            "ix_paper_orders_account_status", ["account_id", "status"], unique=False
        )

    op.create_table(
        "paper_positions",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("symbol", sa.String(length=32), nullable=False),
        sa.Column("size", sa.Double(), nullable=False),
        sa.Column("average_price", sa.Double(), nullable=False),
        sa.Column("last_price", sa.Double(), nullable=False),
        sa.Column("marked_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", farm.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["paper_accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("account_id", "symbol"),
    )


def downgrade() -> None:
    op.drop_table("paper_positions")
    with op.batch_alter_table("paper_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_paper_orders_account_status")

    op.drop_table("paper_orders")
    with op.batch_alter_table("paper_accounts", schema=None) as batch_op:
        batch_op.drop_index("ix_paper_accounts_user_created")

    op.drop_table("paper_accounts")
    op.drop_table("market_feeds")
