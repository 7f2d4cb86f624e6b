"""Anchors of the audit chain outside the database: its length and head hash, posted to the audit channel.

The hash chain (bot/services/auditing/audit.py) shows a row edited, inserted or deleted in the middle, but not a
cut tail: with the last N events deleted (or all of them) what remains is still a valid chain. An
anchor says "the chain had ``count`` events and its last one hashed to ``head``"; once posted to Slack it
is out of reach of whoever can write to the database. ``jitbot audit verify --anchor …`` then requires the
chain to be at least that long and its event number ``count`` to carry that hash.

The line, one per anchor (version 1)::

    jitbot-audit-anchor v1 count=<events> head=<64 hex: SHA-256 of event number count> at=<YYYY-MM-DDTHH:MM:SSZ>

The worker posts one every ``settings.audit_anchor_every`` (default 1h; the turn is a ``kv`` row, once
across replicas) when the chain has grown since the last one, and each weekly review post ends with one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import kvstate
from bot.services.outbox.dispatcher import enqueue
from bot.services.outbox.lanes import AUDIT_LANE
from bot.services.runtime import Runtime
from storage.db import Database

PREFIX = "jitbot-audit-anchor v1"
SCHEDULE_KEY = "audit_anchor:schedule"
LAST_KEY = "audit_anchor:last"
_LINE = re.compile(r"jitbot-audit-anchor v1 count=(\d+) head=([0-9a-f]{64}) at=(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)")
_TIME = "%Y-%m-%dT%H:%M:%SZ"
_POSTED = "Audit log anchor (keep it: `jitbot audit verify --anchor` checks the log against it):"
# One statement, so both figures come from one snapshot of the table.
_NOW_SQL = text("SELECT (SELECT count(*) FROM event), (SELECT hash FROM event ORDER BY id DESC LIMIT 1)")


class AnchorError(ValueError):
    """Text that names itself an anchor but is not one (``parse_anchors``)."""


@dataclass(frozen=True)
class Anchor:
    count: int
    head: str
    at: datetime

    def line(self) -> str:
        return f"{PREFIX} count={self.count} head={self.head} at={self.at.astimezone(UTC).strftime(_TIME)}"

    def label(self) -> str:
        return f"the anchor of {self.at.astimezone(UTC).strftime(_TIME)}"


def parse_anchors(text: str, *, source: str = "anchor") -> list[Anchor]:
    """Every anchor in ``text``: lines that are an anchor as jitbot posts it — the bare line, or the line
    ``anchor_text`` writes (lines copied from Slack), with nothing else on them. A line that merely
    mentions ``jitbot-audit-anchor`` inside other text (a user's words in an audit line) is not one and
    is skipped; user text in a block quote cannot carry the name at all (``bot/slack/blocks.py``). A line
    that starts like an anchor but is not a valid one raises ``AnchorError`` naming it."""
    anchors = []
    for n, line in enumerate(text.splitlines(), start=1):
        body = line.strip()
        if body.startswith(_POSTED):  # as posted: jitbot's sentence, then the anchor in backticks
            rest = body.removeprefix(_POSTED).strip()
            candidate = rest[1:rest.index("`", 1)] if rest.startswith("`") and "`" in rest[1:] else rest
        elif body.strip("`").strip().startswith(PREFIX.split()[0]):  # the bare line (--anchor, a file)
            candidate = body.strip("`").strip()
        else:
            continue  # no anchor, or a mention inside other text (a user's words in an audit line)
        found = _LINE.fullmatch(candidate)
        if found is None:
            raise AnchorError(f"{source}:{n}: not an anchor line: expected `{PREFIX} count=N head=<64 hex> "
                              f"at=YYYY-MM-DDTHH:MM:SSZ`, got {line.strip()[:200]!r}")
        count, head, at = found.groups()
        anchors.append(Anchor(int(count), head, datetime.strptime(at, _TIME).replace(tzinfo=UTC)))
    return anchors


async def current_anchor(db: Database, *, now: datetime) -> Anchor:
    """The chain as committed now: how many events, and the hash of the last."""
    async with db.sessions() as session:
        count, head = (await session.execute(_NOW_SQL)).one()
    return Anchor(int(count), str(head or ""), now)


def anchor_text(anchor: Anchor) -> str:
    return f"{_POSTED} `{anchor.line()}`"


class AuditAnchors:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def post_if_due(self) -> int:
        """Post an anchor to the audit channel when its turn has come (``settings.audit_anchor_every``,
        once across replicas) and the chain has changed since the last one; returns how many were queued.
        The very first turn only starts the schedule, as the review post's does."""
        rt, now = self.rt, self.rt.clock.now()
        if not await kvstate.take_turn(rt.db, SCHEDULE_KEY, now=now, every=rt.policy.settings.audit_anchor_every,
                                       by=rt.instance_id):
            return 0
        anchor = await current_anchor(rt.db, now=now)

        def decide(last: kvstate.Value | None) -> kvstate.Value | None:
            if last is not None and last.get("head") == anchor.head:
                return None  # nothing new since the last anchor
            return {"count": anchor.count, "head": anchor.head, "at": now.isoformat(), "posted": last is not None}

        async def then(session: AsyncSession, value: kvstate.Value) -> None:
            if value["posted"] and anchor.count:
                enqueue(session, at=now, order_key=AUDIT_LANE, kind="audit",
                        payload={"request": None, "event": "audit_anchor", "actor": "jitbot",
                                 "text": anchor_text(anchor)})

        written = await kvstate.compare_and_set(rt.db, LAST_KEY, decide, then)
        return 1 if written and written["posted"] and anchor.count else 0
