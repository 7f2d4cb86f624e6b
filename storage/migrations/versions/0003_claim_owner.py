"""claimed_by on grants and outbox rows: a restarted worker releases its own claims at once

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 15:05:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("grant", "outbox"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    for table in ("grant", "outbox"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("claimed_by")
