"""paper books: what a restart needs to restore a paper account exactly

Revision ID: 0010_paper_books
Revises: 0009
Create Date: 2026-12-05 13:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_paper_books"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("paper_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("books", sa.JSON(), nullable=True))
    with op.batch_alter_table("paper_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("created_price", sa.Double(), nullable=True))
    with op.batch_alter_table("paper_trades", schema=None) as batch_op:
        batch_op.add_column(sa.Column("opened_by_seq", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("closed_by_seq", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("paper_trades", schema=None) as batch_op:
        batch_op.drop_column("closed_by_seq")
        batch_op.drop_column("opened_by_seq")
    with op.batch_alter_table("paper_orders", schema=None) as batch_op:
        batch_op.drop_column("created_price")
    with op.batch_alter_table("paper_sessions", schema=None) as batch_op:
        batch_op.drop_column("books")
