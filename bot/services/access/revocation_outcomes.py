"""What the revocation pipeline (``revocation.py``) records of a grant: ended (its request EXPIRED or
REVOKED, or a failed grant cleaned up), the sign-in sessions ended or not, a failed revocation scheduled
again with backoff and alerted when overdue. Each is audited, in the caller's transaction."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.requests import Status, check_transition
from bot.services import notices
from bot.services.requesting.request_rows import load_request, load_votes
from bot.services.runtime import Runtime
from connectors.base import ConnectorError, RateLimited
from storage.tables import AccessRequest, ApprovalVote, Grant

log = logging.getLogger(__name__)

OVERDUE_ALERT_AFTER = timedelta(minutes=2)


def backoff(attempts: int, *, cap: float = 300.0, retry_after: float | None = None) -> timedelta:
    """When to try again: the provider's retry-after if it gave one, else exponential with jitter."""
    if retry_after is not None:
        return timedelta(seconds=retry_after)
    base = min(cap, 2.0 * 2 ** min(attempts, 10))
    return timedelta(seconds=base * (0.5 + random.random() / 2))


async def sessions_outcome(rt: Runtime, session: AsyncSession, g: Grant, req: AccessRequest, error: str | None) -> None:
    """The outcome of ending ``g``'s user's sign-in sessions, audited; a failure alerted."""
    now = rt.clock.now()
    snap = notices.describe(rt, req, await load_votes(session, req.id), g)
    if error is None:
        await notices.record(rt, session, at=now, kind="sessions_ended", actor=notices.SYSTEM, req=req, snap=snap,
                             detail={"grant": g.id}, text=f"sign-in sessions of {g.user_email} ended")
        return
    await notices.record(rt, session, at=now, kind="sessions_not_ended", actor=notices.SYSTEM, req=req, snap=snap,
                         detail={"grant": g.id, "error": error},
                         text=f"access removed, but ending sign-in sessions failed: {error}")
    notices.alert(session, at=now, snap=snap,
                  text=f"Access of {g.user_email} ({req.id}) was removed, but their sign-in sessions at "
                       f"{g.connector} could not be ended: {error} — end them by hand.")

async def ended(rt: Runtime, session: AsyncSession, g: Grant, *, kept: str | None, req: AccessRequest,
                votes: list[ApprovalVote]) -> None:
    """``g`` ended (``kept``: the membership stays, and why): its request EXPIRED or REVOKED, audited, the
    requester told; a failed grant's clean-up audited."""
    now = rt.clock.now()
    rt.directory.forget_person(g.user_email)  # the target may be a group the policy names for people
    g.status, g.ended_at, g.claimed_until, g.claimed_by, g.next_attempt_at = "ended", now, None, None, None
    detail: dict[str, object] = {"grant": g.id, "reason": g.end_reason}
    if kept:
        detail["membership_kept"] = kept
    if g.end_reason == "failed":
        snap = notices.describe(rt, req, votes, g)
        await notices.record(rt, session, at=now, kind="cleanup_done", actor=notices.SYSTEM, req=req, snap=snap,
                             detail=detail, text="cleaned up after a failed grant")
        return
    new = Status.EXPIRED if g.end_reason == "expired" else Status.REVOKED
    from_state = req.status
    if req.status == Status.ACTIVE.value:
        check_transition(Status(req.status), new)
        req.status, req.updated_at, req.version = new.value, now, req.version + 1
    snap = notices.describe(rt, req, votes, g)
    late = (now - g.expires_at).total_seconds() if g.expires_at and new is Status.EXPIRED else 0.0
    detail["late_s"] = round(late, 3)
    await notices.record(rt, session, at=now, kind=new.value, actor=notices.SYSTEM, req=req, snap=snap,
                         from_state=from_state, to_state=req.status, detail=detail,
                         text=f"{new.value}" + (f" (membership kept: {kept})" if kept else ""))
    notices.tell_requester(session, at=now, snap=snap, event=new.value,
                           text=f"Your {req.eligibility} access ({req.id}) has "
                                f"{'expired' if new is Status.EXPIRED else 'been revoked'}.")

async def revoke_failed(rt: Runtime, session: AsyncSession, g: Grant, exc: ConnectorError) -> None:
    """``g``'s revocation failed: tried again with backoff; alerted once when it is permanent or overdue."""
    now = rt.clock.now()
    g.attempts += 1
    g.last_error, g.claimed_until, g.claimed_by = str(exc)[:500], None, None
    g.next_attempt_at = now + backoff(g.attempts, cap=120.0, retry_after=exc.retry_after
                                      if isinstance(exc, RateLimited) else None)
    overdue = now - (g.expires_at or now)
    log.warning("revoke %s attempt %d failed, retrying: %s", g.id, g.attempts, exc)
    if not g.alerted and (not exc.retryable or overdue >= OVERDUE_ALERT_AFTER):
        g.alerted = True
        req = await load_request(session, g.request_id)
        snap = notices.describe(rt, req, await load_votes(session, req.id), g)
        await notices.record(rt, session, at=now, kind="revoke_overdue", actor=notices.SYSTEM, req=req,
                             snap=snap, detail={"grant": g.id, "error": exc.user_message, "attempts": g.attempts},
                             text=f"revocation is failing ({exc.user_message}); still retrying")
        notices.alert(session, at=now, snap=snap,
                      text=f"Revocation of {req.eligibility} for {g.user_email} ({req.id}) is failing: "
                           f"{exc.user_message} — jitbot keeps retrying.")


async def votes_by_request(session: AsyncSession, request_ids: list[str]) -> dict[str, list[ApprovalVote]]:
    """The votes of each of ``request_ids``, in the order they were cast."""
    out: dict[str, list[ApprovalVote]] = {}
    rows = await session.execute(select(ApprovalVote).where(ApprovalVote.request_id.in_(request_ids))
                                 .order_by(ApprovalVote.id))
    for v in rows.scalars():
        out.setdefault(v.request_id, []).append(v)
    return out
