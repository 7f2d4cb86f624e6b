"""One pending access request per person and eligibility, enforced by a partial unique index

The service refuses a second pending request after reading the first, but on PostgreSQL (READ COMMITTED,
no lock) ten submissions at the same moment all read "none" and all insert: ten pending requests, each
asking the approvers. ``uq_request_one_pending`` makes the database refuse all but one; the service
turns the violation into its usual "You already have a pending request" (bot/services/requesting/requests.py).
SQLite serialises writers (BEGIN IMMEDIATE), so there the index only backs the read.

Duplicates made before this revision stop the upgrade with their ids: cancel, deny or let them lapse
(each is audited), then upgrade again. The upgrade changes no request itself, so nothing escapes the audit.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 02:30:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

WHERE = sa.text("status = 'pending' AND kind = 'access'")
DUPLICATES = sa.text(
    "SELECT requester, eligibility, id FROM access_request WHERE status = 'pending' AND kind = 'access' "
    "AND (requester, eligibility) IN (SELECT requester, eligibility FROM access_request "
    "WHERE status = 'pending' AND kind = 'access' GROUP BY requester, eligibility HAVING count(*) > 1) "
    "ORDER BY requester, eligibility, created_at")


def upgrade() -> None:
    rows = op.get_bind().execute(DUPLICATES).all()
    if rows:
        listed = ", ".join(f"{r.id} ({r.requester}, {r.eligibility})" for r in rows)
        raise RuntimeError("Cannot enforce one pending request per person and eligibility: these pending "
                           f"requests duplicate each other: {listed}. Cancel or deny all but one (or let "
                           "them lapse), then migrate again.")
    op.create_index('uq_request_one_pending', 'access_request', ['requester', 'eligibility'], unique=True,
                    sqlite_where=WHERE, postgresql_where=WHERE)


def downgrade() -> None:
    op.drop_index('uq_request_one_pending', table_name='access_request')
