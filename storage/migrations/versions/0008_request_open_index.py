"""An index for "does this person already have a pending request for this eligibility?"

Every submission asks it (``_OPEN_DUPLICATE`` in bot/services/requesting/submission_checks.py: requester, eligibility,
status and kind). Without statistics SQLite chose ``ix_request_review_due`` for its ``kind = ?`` and so
read every access request ever made, on every submission; with requester, eligibility and status in one
index it reads the requester's pending rows only (PostgreSQL uses it too).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 20:00:00
"""
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_request_open', 'access_request', ['requester', 'eligibility', 'status'])


def downgrade() -> None:
    op.drop_index('ix_request_open', table_name='access_request')
