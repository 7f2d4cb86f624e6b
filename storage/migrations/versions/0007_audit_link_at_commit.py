"""PostgreSQL: the audit chain is linked at commit, by the database, without a client round trip

A transaction's events go to ``event_pending`` (unlogged: they live only until their own commit) and a
deferred constraint trigger moves each one into ``event`` when the transaction commits: it takes the
chain's advisory lock, reads the head, computes the hash and inserts the row (ids in chain order,
assigned under the lock), then deletes the pending row. The lock is held from that trigger to the end
of the commit, all inside the server.

With ``jitbot_append_events`` (0006) the lock was taken by a call before the commit and held while the
result went back to the client and the client's task waited for its turn on a busy event loop to send
COMMIT: sampled under load with two replicas, the holder sat "idle in transaction" for most of the
time the lock was held, with five or more writers queued behind it. A replica frozen by its CPU quota
in that gap held every other replica's writers.

The hash is the same SHA-256 as bot/services/auditing/audit.py's ``event_hash``: the client sends each event's
canonical JSON split around its previous hash (``head`` ‖ prev ‖ ``tail``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 08:00:00
"""
import importlib.util
from pathlib import Path

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

TABLE = """
CREATE UNLOGGED TABLE event_pending (
    seq bigserial PRIMARY KEY,
    at timestamptz NOT NULL,
    request_id varchar(32),
    actor varchar(320) NOT NULL,
    kind varchar(32) NOT NULL,
    from_state varchar(16),
    to_state varchar(16),
    detail text NOT NULL,
    head text NOT NULL,
    tail text NOT NULL
)
"""

FUNCTION = """
CREATE OR REPLACE FUNCTION jitbot_link_event() RETURNS trigger
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    prev text;
    digest text;
BEGIN
    -- held to the end of the commit; taken again by the transaction's later events at no cost
    PERFORM pg_advisory_xact_lock(TG_ARGV[0]::bigint);
    -- a statement of its own, after the lock: sees every append committed before it, and this
    -- transaction's own earlier events
    SELECT hash INTO prev FROM event ORDER BY id DESC LIMIT 1;
    prev := coalesce(prev, repeat('0', 64));
    digest := encode(sha256(convert_to(NEW.head || prev || NEW.tail, 'UTF8')), 'hex');
    INSERT INTO event (at, request_id, actor, kind, from_state, to_state, detail, prev_hash, hash)
    VALUES (NEW.at, NEW.request_id, NEW.actor, NEW.kind, NEW.from_state, NEW.to_state, NEW.detail::json,
            prev, digest);
    DELETE FROM event_pending WHERE seq = NEW.seq;
    RETURN NULL;
END
$$
"""

# the key of storage/db.py's AUDIT_CHAIN_LOCK (0x6A17B07)
TRIGGER = """
CREATE CONSTRAINT TRIGGER event_pending_link AFTER INSERT ON event_pending
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION jitbot_link_event('111246087')
"""


def _previous_function() -> str:
    path = Path(__file__).with_name('0006_audit_append_function.py')
    spec = importlib.util.spec_from_file_location('jitbot_migration_0006', path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.FUNCTION)


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(TABLE)
        op.execute(FUNCTION)
        op.execute(TRIGGER)
        op.execute('DROP FUNCTION IF EXISTS jitbot_append_events(bigint, timestamptz[], text[], text[], text[], '
                   'text[], text[], text[], text[], text[])')


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('DROP TABLE IF EXISTS event_pending')  # its trigger with it
        op.execute('DROP FUNCTION IF EXISTS jitbot_link_event()')
        op.execute(_previous_function())
