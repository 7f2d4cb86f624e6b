"""What only the JIT administrators (policy ``admins``) may do: see everything open, revoke, retry.

Every method checks the actor against the policy's admins *now* (through the directory) before it
touches anything, raises ``NotAdmin`` (a PolicyViolation, safe to show) otherwise, and leaves an event
in the audit chain when it succeeds.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import or_, select

from bot.domain.requests import BREAKGLASS, PolicyViolation, Status
from bot.services import notices
from bot.services.grants import GrantService
from bot.services.runtime import Runtime
from storage.tables import AccessRequest, Grant

OPEN = (Status.PENDING.value, Status.APPROVED.value, Status.FAILED.value)


class NotAdmin(PolicyViolation):
    def __init__(self) -> None:
        super().__init__("Only JIT administrators can do that.")


@dataclass(frozen=True)
class OpenItem:
    request: AccessRequest
    why: str  # pending approval | waiting to be granted | grant failed | break-glass unreviewed


class AdminService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.grants = GrantService(rt)

    async def require_admin(self, email: str) -> str:
        email = email.strip().lower()
        if not await self.rt.directory.is_admin(self.rt.policy, email):
            raise NotAdmin()
        return email

    async def pending(self, *, actor: str, limit: int = 50) -> list[OpenItem]:
        """Requests waiting on someone (approval, grant, failed grant) and unreviewed break-glass uses."""
        actor = await self.require_admin(actor)
        async with self.rt.db.sessions() as session:
            stmt = (select(AccessRequest).where(or_(
                AccessRequest.status.in_(OPEN),  # type: ignore[attr-defined]
                (AccessRequest.kind == BREAKGLASS) & AccessRequest.reviewed_at.is_(None)))  # type: ignore[union-attr]
                .order_by(AccessRequest.created_at).limit(limit))  # type: ignore[arg-type]
            rows = list((await session.execute(stmt)).scalars().all())
        items = [OpenItem(r, _why(r)) for r in rows]
        now = self.rt.clock.now()
        async with self.rt.db.transaction() as session:
            await notices.record(self.rt, session, at=now, kind="admin_pending_listed", actor=actor, req=None,
                                 snap=None, detail={"count": len(items)},
                                 text=f"{actor} listed {len(items)} open request(s)")
        return items

    async def revoke(self, *, actor: str, request_id: str) -> Grant:
        """End someone's active access now (the worker carries out the revocation)."""
        actor = await self.require_admin(actor)
        return await self.grants.end_early(request_id=request_id, actor=actor, reason="revoked", as_admin=True)

    async def retry(self, *, actor: str, request_id: str) -> Grant:
        """Try a FAILED grant again."""
        actor = await self.require_admin(actor)
        return await self.grants.retry_failed(request_id=request_id, actor=actor)


def _why(req: AccessRequest) -> str:
    if req.status == Status.PENDING.value:
        return f"waiting for approval (layer {req.layer} of {req.layers})"
    if req.status == Status.APPROVED.value:
        return "approved, waiting to be granted" + (f" at {req.starts_at:%Y-%m-%d %H:%M} UTC" if req.starts_at
                                                    else "")
    if req.status == Status.FAILED.value:
        return "grant failed — retry with /jit admin retry"
    return f"break-glass use ({req.status}), not reviewed yet"
