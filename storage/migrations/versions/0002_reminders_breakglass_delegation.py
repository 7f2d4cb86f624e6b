"""reminders, escalation, after-hours layers, break-glass review, on-behalf and scheduled requests

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00
"""
import sqlalchemy as sa
import sqlmodel
from alembic import op

import storage.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_TS = ('next_reminder_at', 'escalate_at', 'starts_at', 'review_remind_at', 'reviewed_at')


def upgrade() -> None:
    with op.batch_alter_table('access_request', schema=None) as batch_op:
        batch_op.add_column(sa.Column('submitted_by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column('submitted_by_slack', sqlmodel.sql.sqltypes.AutoString(length=32),
                                      nullable=True))
        for name in _TS:
            batch_op.add_column(sa.Column(name, storage.types.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('escalated', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('after_hours', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('reviewed_by', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=True))
        batch_op.add_column(sa.Column('review_outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True))
        batch_op.create_index('ix_request_reminder_due', ['status', 'next_reminder_at'], unique=False)
        batch_op.create_index('ix_request_escalation_due', ['status', 'escalate_at'], unique=False)
        batch_op.create_index('ix_request_review_due', ['kind', 'review_remind_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('access_request', schema=None) as batch_op:
        batch_op.drop_index('ix_request_review_due')
        batch_op.drop_index('ix_request_escalation_due')
        batch_op.drop_index('ix_request_reminder_due')
        for name in ('review_outcome', 'reviewed_by', 'after_hours', 'escalated', *reversed(_TS), 'submitted_by_slack',
                     'submitted_by'):
            batch_op.drop_column(name)
