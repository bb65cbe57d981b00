"""leases on paper sessions

Revision ID: 0013_paper_leases
Revises: 0012_outbox
Create Date: 2026-12-05 16:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import farm.storage.models

revision = "0013_paper_leases"
down_revision = "0012_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("paper_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("lease_token", sa.String(length=36), nullable=True))
        batch_op.add_column(
            sa.Column(
                "lease_expires_at", farm.storage.models.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("paper_sessions", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_token")
        batch_op.drop_column("lease_owner")
