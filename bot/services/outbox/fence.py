"""Fencing the outbox: a dispatcher posts and records a claimed message only under its claim's token.

Every claim of a message raises its ``claim_token`` (bot/services/outbox/sql.py, ``CLAIM``); a message is
marked sent, or finished, only while the row still carries the token its claim returned (``MARK_SENT``,
``FINISH``). A dispatcher about to post under a claim past half its lease (it was paused, or waited) first
looks whether the claim is still its own (``still_ours``): one that passed to another dispatcher is left to
it. A pause that falls between that look and the post can still post once late (Slack has no fence); its
record is refused, and the message is delivered by the dispatcher that holds it.
"""

from __future__ import annotations

import logging

from bot.services.outbox import sql as outbox_sql
from bot.services.outbox.write import Claimed
from storage.db import Database

log = logging.getLogger(__name__)


async def still_ours(db: Database, batch: list[Claimed]) -> list[Claimed]:
    """The messages of ``batch`` whose claim is still this dispatcher's (the row carries the claim's token):
    looked up before posting under an old claim. Another dispatcher took the others over; they are left to it
    (and their outcome could not be recorded under the stale token anyway)."""
    async with db.core_reads() as reads:
        tokens = {r.id: r.claim_token for r in await reads.rows(outbox_sql.TOKENS, {"b_ids": [m.id for m in batch]})}
    kept = [m for m in batch if tokens.get(m.id) == m.token]
    if len(kept) < len(batch):
        log.warning("outbox: %d claimed message(s) were taken over by another dispatcher; not posted here: %s",
                    len(batch) - len(kept), [m.id for m in batch if m not in kept])
    return kept
