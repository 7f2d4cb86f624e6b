"""Approval context on a request: what PagerDuty and Jira said, and the time access must end by.

``access_request.context`` (JSON) holds the Jira ticket as checked when the request was made (key,
summary, status, link) and the on-call shift that approved it; ``access_request.ends_by`` is the end of
that shift when the eligibility says ``end_with_shift``: the grant never lasts past it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 03:00:00
"""
import sqlalchemy as sa
from alembic import op

import storage.types

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('access_request') as batch:
        batch.add_column(sa.Column('context', sa.JSON(), nullable=True))
        batch.add_column(sa.Column('ends_by', storage.types.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('access_request') as batch:
        batch.drop_column('ends_by')
        batch.drop_column('context')
