"""Read-only views of requests for people: mine, and those waiting for me."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.domain.requests import EXTENSION, Status
from bot.services.notices import describe
from bot.services.requesting.approvals import layer_approvers
from bot.services.requesting.request_rows import load_votes
from bot.services.runtime import Runtime
from storage.tables import AccessRequest, Grant


async def my_requests(rt: Runtime, email: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(active access, pending requests) of ``email``, as message snapshots."""
    email = email.lower()
    async with rt.db.sessions() as session:
        rows = (await session.execute(select(AccessRequest, Grant).join(Grant, Grant.request_id == AccessRequest.id)
                                      .where(AccessRequest.requester == email, Grant.status == "active")
                                      .order_by(Grant.expires_at))).all()  # type: ignore[arg-type]
        active = [describe(rt, req, [], grant) for req, grant in rows]
        pend = (await session.execute(select(AccessRequest).where(
            AccessRequest.requester == email, AccessRequest.status.in_([Status.PENDING.value, Status.APPROVED.value]),  # type: ignore[attr-defined]
            ~((AccessRequest.kind == EXTENSION) & (AccessRequest.status == Status.APPROVED.value)))  # applied: done
            .order_by(AccessRequest.created_at))).scalars().all()  # type: ignore[arg-type]
        pending = [describe(rt, r, await load_votes(session, r.id)) for r in pend]
    return active, pending


async def awaiting_me(rt: Runtime, email: str, limit: int = 50) -> list[tuple[dict[str, Any], int]]:
    """Pending requests whose current layer ``email`` may decide (re-checked at decision time anyway)."""
    email = email.lower()
    out: list[tuple[dict[str, Any], int]] = []
    async with rt.db.sessions() as session:
        reqs = (await session.execute(select(AccessRequest).where(AccessRequest.status == Status.PENDING.value)
                                      .order_by(AccessRequest.created_at).limit(500))).scalars().all()  # type: ignore[arg-type]
        candidates = []
        for req in reqs:
            elig = rt.eligibility(req.eligibility)
            if elig is None or req.requester == email or not 1 <= req.layer <= len(elig.approvals):
                continue
            votes = await load_votes(session, req.id)
            if any(v.approver == email for v in votes):
                continue
            candidates.append((req, votes))
    for req, votes in candidates:
        # the layer's approvers, its escalation set once escalated, minus requester/submitter/earlier approvers
        if email in await layer_approvers(rt, req, req.layer, [v.approver for v in votes]):
            out.append((describe(rt, req, votes), req.layer))
        if len(out) >= limit:
            break
    return out
