"""A request's rows as the services read and tidy them: the request, its votes, and its approval
schedule closed — in an ORM session (``load_*``) or a Core transaction (``read_*``, storage/records.py).

Below ``requests.py`` so that every module that reads a request (``not_started.py``, the grant
services) can use them without an import circle.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.requests import PolicyViolation, Status
from storage.records import Unit
from storage.tables import AccessRequest, ApprovalVote, Grant

# Built once: a statement built per call costs its construction and cache key every time.
_REQUEST = select(AccessRequest).where(AccessRequest.id == bindparam("b_id"))
_REQUEST_LOCKED = _REQUEST.with_for_update()
_VOTES = (select(ApprovalVote).where(ApprovalVote.request_id == bindparam("b_id"))  # type: ignore[arg-type]
          .order_by(ApprovalVote.id))  # type: ignore[arg-type]
# The same as rows of the tables, for a Core transaction
_REQUESTS, _VOTE_TABLE = AccessRequest.__table__, ApprovalVote.__table__  # type: ignore[attr-defined]
_REQUEST_ROW = select(_REQUESTS).where(_REQUESTS.c.id == bindparam("b_id"))
_REQUEST_ROW_LOCKED = _REQUEST_ROW.with_for_update()
_VOTE_ROWS = select(_VOTE_TABLE).where(_VOTE_TABLE.c.request_id == bindparam("b_id")).order_by(_VOTE_TABLE.c.id)
_LIVE_GRANT_LOCKED = select(Grant).where(Grant.request_id == bindparam("b_id"),
                                         Grant.status.in_(("granting", "active"))).with_for_update()  # type: ignore[attr-defined]
_HAS_A_GRANT = (Status.APPROVED.value, Status.ACTIVE.value)

T = TypeVar("T")


async def load_request(session: AsyncSession, request_id: str, *, lock: bool = False) -> AccessRequest:
    """The request ``request_id`` (``lock``: locked until the transaction ends); raises PolicyViolation
    when there is none."""
    req = (await session.execute(_REQUEST_LOCKED if lock else _REQUEST, {"b_id": request_id})).scalar_one_or_none()
    if req is None:
        raise PolicyViolation(f"There is no request {request_id}.")
    return req


async def lock_live_grant(session: AsyncSession, request_id: str) -> Grant | None:
    """The request's grant that waits, is being carried out or is active (a request has at most one), its
    row locked until the transaction ends; None when it has none. A transaction that also locks the
    request calls this first: a grant's row before its request's (docs/architecture.md, "Row locks and
    their order")."""
    return (await session.execute(_LIVE_GRANT_LOCKED, {"b_id": request_id})).scalar_one_or_none()


class GrantUnseen(Exception):
    """The request, once locked, has a grant that the transaction's read of its grant (before the request's
    lock) did not find: raised to roll the transaction back and run it again (``seeing_its_grant``)."""


def check_grant_seen(req: AccessRequest, grant: Grant | None, *, last: bool) -> None:
    """Raise GrantUnseen unless ``last`` when ``req`` (just locked) is APPROVED or ACTIVE but ``grant`` (the
    transaction's read of its grant, taken first) is None. On PostgreSQL that read may have come before a
    transaction that held the request's lock committed its grant (an approval, an admin's retry, the grant
    pipeline making it active): the read did not see it, the request's lock, taken after that commit, does
    see the request it approved. The grant's row cannot be locked now, after the request's
    (docs/architecture.md, "Row locks and their order"); a new transaction sees it."""
    if grant is None and not last and req.status in _HAS_A_GRANT:
        raise GrantUnseen


async def seeing_its_grant(run: Callable[[bool], Awaitable[T]]) -> T:
    """``run(False)``: a transaction that locks a request's grant, then the request, and calls
    ``check_grant_seen``; once more, ``run(True)``, when that finds a grant it did not see. Twice at most:
    the second transaction decides with what it reads."""
    try:
        return await run(False)
    except GrantUnseen:
        return await run(True)


async def read_request(unit: Unit, request_id: str, *, lock: bool = False) -> AccessRequest:
    """``load_request`` in a Core transaction."""
    req = await unit.first(AccessRequest, _REQUEST_ROW_LOCKED if lock else _REQUEST_ROW, {"b_id": request_id})
    if req is None:
        raise PolicyViolation(f"There is no request {request_id}.")
    return req


async def load_votes(session: AsyncSession, request_id: str) -> list[ApprovalVote]:
    """The request's votes, in the order they were cast."""
    return list((await session.execute(_VOTES, {"b_id": request_id})).scalars().all())


async def read_votes(unit: Unit, request_id: str) -> list[ApprovalVote]:
    """``load_votes`` in a Core transaction."""
    return await unit.all(ApprovalVote, _VOTE_ROWS, {"b_id": request_id})


def close_schedule(req: AccessRequest) -> None:
    """The request left PENDING: nothing about its approval is due any more."""
    req.layer_deadline = req.next_reminder_at = req.escalate_at = None
