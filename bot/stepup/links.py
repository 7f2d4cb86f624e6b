"""One-time step-up links, in the ``step_up_link`` table. The link's secret is 32 random bytes; only
its SHA-256 is stored. Each move (issued -> started -> verifying -> used | failed) is a compare-and-set
on the status, so a link is started once and its callback runs once, whatever replicas or clicks race."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlmodel import col

from storage.db import Database
from storage.tables import AccessRequest, StepUpLink

PATH = "/step-up/"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Issued:
    secret: str  # goes in the link, nowhere else
    expires_at: datetime


async def issue(db: Database, *, now: datetime, ttl: timedelta, request_id: str, layer: int, approver: str,
                approver_slack: str | None, provider: str) -> Issued:
    """A new link for this click. Expired links are deleted on the way."""
    secret = secrets.token_urlsafe(32)
    async with db.transaction() as session:
        await session.execute(delete(StepUpLink).where(col(StepUpLink.expires_at) < now - timedelta(days=1)))
        session.add(StepUpLink(id=digest(secret), request_id=request_id, layer=layer, approver=approver.lower(),
                               approver_slack=approver_slack, provider=provider, status="issued", created_at=now,
                               expires_at=now + ttl))
    return Issued(secret, now + ttl)


async def find(db: Database, secret: str) -> StepUpLink | None:
    async with db.sessions() as session:
        return (await session.execute(select(StepUpLink).where(col(StepUpLink.id) == digest(secret)))).scalar()


async def find_by_state(db: Database, state: str) -> StepUpLink | None:
    async with db.sessions() as session:
        return (await session.execute(select(StepUpLink).where(
            col(StepUpLink.state_hash) == digest(state)))).scalar()


async def move(db: Database, link_id: str, *, from_status: str, to_status: str, now: datetime,
               **values: str | None) -> bool:
    """Compare-and-set the link's status (only while it has not expired, unless it goes to ``failed``);
    False if another click or callback moved it first, or it expired."""
    stmt = update(StepUpLink).where(col(StepUpLink.id) == link_id, col(StepUpLink.status) == from_status)
    if to_status != "failed":
        stmt = stmt.where(col(StepUpLink.expires_at) > now)
    finished = {"finished_at": now} if to_status in ("used", "failed") else {}
    async with db.transaction() as session:
        result = await session.execute(stmt.values(status=to_status, **finished, **values))
        return bool(result.rowcount)  # type: ignore[attr-defined]


async def eligibility_of(db: Database, request_id: str) -> str | None:
    async with db.sessions() as session:
        return (await session.execute(select(col(AccessRequest.eligibility)).where(
            col(AccessRequest.id) == request_id))).scalar()
