"""Each replica's policy version in its heartbeat row.

Replicas follow the applied policy version (bot/services/policy_version.py); the worker writes the one
it runs with each heartbeat, so that ``/metrics`` and ``/healthz`` of any replica show which version
every replica runs, workers without an HTTP port included.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 02:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('worker_heartbeat') as batch:
        batch.add_column(sa.Column('policy_version', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('worker_heartbeat') as batch:
        batch.drop_column('policy_version')
