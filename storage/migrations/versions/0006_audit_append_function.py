"""PostgreSQL: jitbot_append_events, the audit chain's append in one round trip

Links a transaction's events to the chain's head and inserts them, under the chain's advisory lock, in
one call. Done from the client, the lock was held across three round trips (lock, read the head,
insert) and the commit, each waiting for the holder's turn on a busy event loop: every other writer of
every replica waited that long. Each statement of a volatile PL/pgSQL function reads with a snapshot of
its own, so the head read after the lock sees every chain append committed before it.

The hash is the same SHA-256 as bot/services/auditing/audit.py's ``event_hash``: the client sends each event's
canonical JSON split around its previous hash (``head`` ‖ prev ‖ ``tail``), all ASCII.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 05:00:00
"""
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

FUNCTION = """
CREATE OR REPLACE FUNCTION jitbot_append_events(
    lock_key bigint, ats timestamptz[], request_ids text[], actors text[], kinds text[], froms text[],
    tos text[], details text[], heads text[], tails text[]) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    prev text;
    digest text;
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    SELECT hash INTO prev FROM event ORDER BY id DESC LIMIT 1;
    prev := coalesce(prev, repeat('0', 64));
    FOR i IN 1 .. coalesce(array_length(ats, 1), 0) LOOP
        digest := encode(sha256(convert_to(heads[i] || prev || tails[i], 'UTF8')), 'hex');
        INSERT INTO event (at, request_id, actor, kind, from_state, to_state, detail, prev_hash, hash)
        VALUES (ats[i], request_ids[i], actors[i], kinds[i], froms[i], tos[i], details[i]::json, prev, digest);
        prev := digest;
    END LOOP;
    RETURN prev;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP FUNCTION IF EXISTS jitbot_append_events(bigint, timestamptz[], text[], text[], text[], '
                   'text[], text[], text[], text[], text[])')
