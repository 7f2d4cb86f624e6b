"""transition off standing access: removal records (for revert) and once-only notices

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.types

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table('transition_removal',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('eligibility', _S(length=64), nullable=False),
    sa.Column('connector', _S(length=64), nullable=False),
    sa.Column('target_kind', _S(length=8), nullable=False),
    sa.Column('target_id', _S(length=256), nullable=False),
    sa.Column('user_email', _S(length=320), nullable=False),
    sa.Column('user_idp_id', _S(length=256), nullable=False),
    sa.Column('removed_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('restored_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('restored_by', _S(length=320), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('transition_removal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transition_removal_eligibility'), ['eligibility'], unique=False)
    op.create_table('transition_notice',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('eligibility', _S(length=64), nullable=False),
    sa.Column('user_email', _S(length=320), nullable=False),
    sa.Column('days_before', sa.Integer(), nullable=False),
    sa.Column('sent_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'))
    with op.batch_alter_table('transition_notice', schema=None) as batch_op:
        batch_op.create_index('uq_transition_notice_once', ['eligibility', 'user_email', 'days_before'],
                              unique=True)


def downgrade() -> None:
    op.drop_table('transition_notice')
    op.drop_table('transition_removal')
