"""outbox: index (order_key, status, id) instead of (order_key)

A key's pending messages are found by a seek, however many it has sent: a lane (the audit channel's one
order key) keeps every line it ever posted, and with only (order_key) each claim scanned all of them.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 22:40:00
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_key_status', ['order_key', 'status', 'id'], unique=False)
        batch_op.drop_index('ix_outbox_order_key')


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_order_key', ['order_key'], unique=False)
        batch_op.drop_index('ix_outbox_key_status')
