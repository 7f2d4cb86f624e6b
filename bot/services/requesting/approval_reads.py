"""What the Slack notifier reads about an approval layer before it posts or edits a message: whether the
layer is still open, and how many of its asks are still on their way."""

from __future__ import annotations

from sqlalchemy import bindparam, select

from bot.services.notices import asks_params
from bot.services.outbox import sql as outbox_sql
from storage.db import Database
from storage.tables import AccessRequest

_REQUESTS = AccessRequest.__table__  # type: ignore[attr-defined]
_STATUS_LAYER = select(_REQUESTS.c.status, _REQUESTS.c.layer).where(_REQUESTS.c.id == bindparam("b_id"))


async def layer_open(db: Database, request_id: str, layer: int) -> bool:
    """Whether ``request_id`` is still pending at ``layer`` (an ask for a decided layer posts nothing)."""
    async with db.core_reads() as reads:
        rows = await reads.rows(_STATUS_LAYER, {"b_id": request_id})
    return bool(rows) and rows[0].status == "pending" and rows[0].layer == layer


async def asks_left(db: Database, request_id: str, layer: int) -> int:
    """The layer's asks not yet delivered (each on its own order key)."""
    async with db.core_reads() as reads:
        return int((await reads.scalars(outbox_sql.ASKS_LEFT, asks_params(request_id, layer)))[0])
