"""outbox: order keys sort byte by byte on PostgreSQL (collation "C")

A layer's asks are found by their keys' range on (order_key, status, id) (bot/services/outbox/sql.py,
``ASKS_LEFT``, ``WITHDRAW_ASKS``). Under the database's own collation that range is not exact for every
locale (a Danish one sorts ``…:aa…`` as ``…:å…``, after ``…:b``); order keys are identifiers, and bytes
are their order. SQLite compares them byte by byte already. The column's indexes are rebuilt.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 09:30:00
"""
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        op.execute('ALTER TABLE outbox ALTER COLUMN order_key TYPE VARCHAR(64) COLLATE "C"')


def downgrade() -> None:
    if op.get_context().dialect.name == 'postgresql':
        op.execute('ALTER TABLE outbox ALTER COLUMN order_key TYPE VARCHAR(64) COLLATE "default"')
