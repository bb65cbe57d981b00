"""alpaca accounts: encrypted broker keys, a session's broker status, order reasons

Revision ID: 0011_alpaca_accounts
Revises: 0010_paper_books
Create Date: 2026-12-05 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_alpaca_accounts"
down_revision = "0010_paper_books"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("paper_accounts", sa.Column("broker_key_id", sa.String(length=64), nullable=True))
    op.add_column("paper_accounts", sa.Column("broker_secret", sa.Text(), nullable=True))
    op.create_index(
        "ix_paper_accounts_broker_key", "paper_accounts", ["broker_key_id"], unique=True
    )
    op.add_column("paper_sessions", sa.Column("broker_status", sa.JSON(), nullable=True))
    op.add_column("paper_orders", sa.Column("reason", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("paper_orders", "reason")
    op.drop_column("paper_sessions", "broker_status")
    op.drop_index("ix_paper_accounts_broker_key", table_name="paper_accounts")
    with op.batch_alter_table("paper_accounts") as batch:
        batch.drop_column("broker_secret")
        batch.drop_column("broker_key_id")
