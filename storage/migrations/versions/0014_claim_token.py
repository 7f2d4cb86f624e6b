"""Claim tokens: ``grant.claim_token`` and ``outbox.claim_token`` grow by one with every claim, so that a
worker whose claim passed to another (it was paused past its lease) finds out before it acts or records
(bot/services/access/fencing.py, docs/reliability.md "Fencing").

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 06:00:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ('grant', 'outbox'):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('claim_token', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    for table in ('outbox', 'grant'):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('claim_token')
