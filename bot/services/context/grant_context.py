"""What approval context (context/on_call.py, context/tickets.py) asks of carrying out a grant:
its ticket still qualifies and its on-call shift has not ended, and its expiry never passes ``ends_by``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from bot.services.context.tickets import TICKETED_KIND, ticket_refusal
from bot.services.runtime import Runtime


def capped_expiry(req: Any, expires_at: datetime) -> datetime:
    """``expires_at``, or the request's ``ends_by`` (the on-call shift's end) when that comes first."""
    ends_by: datetime | None = getattr(req, "ends_by", None)
    return min(expires_at, ends_by) if ends_by is not None else expires_at


async def context_refusal(rt: Runtime, *, eligibility: str, kind: str, ticket: str | None,
                          ends_by: datetime | None) -> str | None:
    """Why an approved grant may not be carried out now, or None: the shift it was approved for ended,
    or its Jira ticket no longer qualifies (requests only: break-glass needs no ticket). Raises
    ConnectorError when Jira cannot be asked (the grant is retried)."""
    if ends_by is not None and ends_by <= rt.clock.now():
        return f"the on-call shift it was approved for ended at {ends_by:%Y-%m-%d %H:%M} UTC"
    return await ticket_refusal(rt, eligibility, ticket) if kind == TICKETED_KIND else None
