"""A request's rows as the services read and tidy them: its votes, and its approval schedule closed.

Below ``requests.py`` so that modules it calls (``not_started.py``) can use them without an import circle.
"""

from __future__ import annotations

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.tables import AccessRequest, ApprovalVote

_VOTES = (select(ApprovalVote).where(ApprovalVote.request_id == bindparam("b_id"))  # type: ignore[arg-type]
          .order_by(ApprovalVote.id))  # type: ignore[arg-type]


async def load_votes(session: AsyncSession, request_id: str) -> list[ApprovalVote]:
    return list((await session.execute(_VOTES, {"b_id": request_id})).scalars().all())


def close_schedule(req: AccessRequest) -> None:
    """The request left PENDING: nothing about its approval is due any more."""
    req.layer_deadline = req.next_reminder_at = req.escalate_at = None
