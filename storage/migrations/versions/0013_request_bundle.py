"""Bundles: ``access_request.bundle_id`` links the requests of one bundle (bot/services/requesting/bundles.py).

The bundle's own request (the one approved) has its own id there; each other member's request, made when
the bundle is approved, has the bundle request's id.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 05:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_request') as batch:
        batch.add_column(sa.Column('bundle_id', sa.String(length=32), nullable=True))
    # partial: the worker's all-or-nothing check reads bundle members only, however many requests are open
    where = sa.text("bundle_id IS NOT NULL")
    op.create_index('ix_request_bundle', 'access_request', ['bundle_id', 'status'], sqlite_where=where,
                    postgresql_where=where)


def downgrade() -> None:
    op.drop_index('ix_request_bundle', 'access_request')
    with op.batch_alter_table('access_request') as batch:
        batch.drop_column('bundle_id')
