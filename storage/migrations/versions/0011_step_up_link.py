"""One-time step-up links: an approver's Approve on a layer with ``step_up`` (bot/stepup/)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 03:00:00
"""
import sqlalchemy as sa
from alembic import op

import storage.types

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'step_up_link',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('state_hash', sa.String(length=64), nullable=True),
        sa.Column('request_id', sa.String(length=32), nullable=False),
        sa.Column('layer', sa.Integer(), nullable=False),
        sa.Column('approver', sa.String(length=320), nullable=False),
        sa.Column('approver_slack', sa.String(length=32), nullable=True),
        sa.Column('provider', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('nonce', sa.String(length=64), nullable=True),
        sa.Column('verifier', sa.String(length=128), nullable=True),
        sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', storage.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column('finished_at', storage.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column('error', sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('state_hash'),
    )
    op.create_index('ix_step_up_link_expires_at', 'step_up_link', ['expires_at'])


def downgrade() -> None:
    op.drop_index('ix_step_up_link_expires_at', table_name='step_up_link')
    op.drop_table('step_up_link')
