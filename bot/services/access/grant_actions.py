"""People's actions on a grant, each in one transaction, authorised here: the requester releases an active
grant or an admin revokes it (``end_early``; the worker then carries out the revocation, or a grant that has
not started ends at once), the requester extends it within the eligibility's maximum (``extend``; the IdP's
own expiry follows through ``backstop.py``), and an admin retries a FAILED grant (``retry_failed``). Each is
audited and told to the requester. ``GrantService`` (``grants.py``) offers them as its methods.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.durations import format_duration
from bot.domain.requests import BREAKGLASS, PolicyViolation, Status, check_transition
from bot.services import notices
from bot.services.access import backstop
from bot.services.access.grant_outcomes import snapshot
from bot.services.context.grant_context import capped_expiry
from bot.services.requesting.not_started import stop_before_start, waiting_grant
from bot.services.requesting.request_rows import check_grant_seen, load_request, lock_live_grant, seeing_its_grant
from bot.services.requesting.submission_checks import lock_person, other_open
from bot.services.runtime import Runtime
from storage.tables import Event, Grant


async def active_grant(session: AsyncSession, request_id: str) -> Grant | None:
    """The request's active grant, its row locked (taken before the request's row: docs/architecture.md)."""
    return (await session.execute(select(Grant).where(Grant.request_id == request_id, Grant.status == "active")
                                  .with_for_update())).scalar_one_or_none()


async def end_early(rt: Runtime, *, request_id: str, actor: str, reason: str, as_admin: bool = False,
                    origin: dict[str, str] | None = None) -> Grant:
    """Release (by the requester) or revoke (by an admin) an active grant; the worker carries it out.
    An approved grant that has not started ends at once (``not_started.stop_before_start``)."""
    return await seeing_its_grant(functools.partial(_end_early, rt, request_id=request_id, actor=actor,
                                                    reason=reason, as_admin=as_admin, origin=origin))


async def _end_early(rt: Runtime, last: bool, *, request_id: str, actor: str, reason: str, as_admin: bool,
                     origin: dict[str, str] | None) -> Grant:
    now, actor = rt.clock.now(), actor.lower()
    async with rt.db.transaction() as session:
        live = await lock_live_grant(session, request_id)  # the grant's row before the request's
        req = await load_request(session, request_id, lock=True)
        if not as_admin and req.requester != actor:
            raise PolicyViolation("Only the requester can release this access.")
        check_grant_seen(req, live, last=last)  # committed since it was read: once more (request_rows.py)
        if req.status == Status.APPROVED.value:
            waiting = waiting_grant(req, live, now=now)
            await stop_before_start(rt, session, req, waiting, actor=actor, by_admin=as_admin, now=now)
            return waiting
        g = live if live is not None and live.status == "active" else None
        if g is None and req.status == Status.ACTIVE.value:  # its grant is ``revoking``: not live any more
            raise PolicyViolation(f"{request_id}'s access is already ending (it expired, or was released or "
                                  "revoked); nothing more to do.")
        if g is None:
            raise PolicyViolation(f"{request_id} has no active access (it is {req.status}).")
        g.status, g.end_reason, g.next_attempt_at, g.warn_at = "revoking", reason, now, None
        snap = await snapshot(rt, session, req, g)
        await notices.record(rt, session, at=now, kind=f"{reason}_requested", actor=actor, req=req, snap=snap,
                             detail={"grant": g.id, **(origin or {})}, text=f"{reason} by {actor}")
    rt.wake.set()
    return g


async def extend(rt: Runtime, *, request_id: str, actor: str, by: timedelta) -> datetime:
    """Extend an active grant within the eligibility's maximum; returns the new expiry."""
    return await seeing_its_grant(functools.partial(_extend, rt, request_id=request_id, actor=actor, by=by))


async def _extend(rt: Runtime, last: bool, *, request_id: str, actor: str, by: timedelta) -> datetime:
    from bot.domain.requests import plan_extension

    now, actor = rt.clock.now(), actor.lower()
    async with rt.db.transaction() as session:
        g = await active_grant(session, request_id)  # the grant's row before the request's
        req = await load_request(session, request_id, lock=True)
        if req.requester != actor:
            raise PolicyViolation("Only the requester can extend this access.")
        check_grant_seen(req, g, last=last)  # made active since it was read: once more (request_rows.py)
        if req.kind == BREAKGLASS:  # its cap and its review are of the use as announced (docs/policy.md)
            raise PolicyViolation("Break-glass access cannot be extended. If you still need it, use "
                                  "/jit breakglass again (a new alert and review) or request it with /jit.")
        elig = rt.eligibility(req.eligibility)
        if elig is None or g is None or g.expires_at is None or g.granted_at is None:
            raise PolicyViolation(f"{request_id} has no active access to extend.")
        shortened = (await session.execute(select(Event.actor).where(
            Event.request_id == request_id, Event.kind == "approved_for_less").limit(1))).scalar()
        if shortened is not None:  # the approver's shorter duration is the limit, not the eligibility's
            approved = format_duration(timedelta(seconds=req.duration_s))
            raise PolicyViolation(f"{shortened} approved it for {approved}, less than you asked, so it cannot "
                                  "be extended. If you need more, ask again with /jit.")
        plan = plan_extension(elig=elig, status=Status(req.status), granted_at=g.granted_at,
                              expires_at=g.expires_at, now=now, by=by)
        if req.bundle_id is not None and req.bundle_id != req.id:  # a member: within its bundle's too
            bundle = rt.eligibility((await load_request(session, req.bundle_id)).eligibility)
            if bundle is None:
                raise PolicyViolation(f"{request_id} was granted with a bundle that is no longer in the "
                                      "policy; it cannot be extended.")
            plan_extension(elig=bundle, status=Status(req.status), granted_at=g.granted_at,
                           expires_at=g.expires_at, now=now, by=by)
        old = g.expires_at
        g.expires_at = capped_expiry(req, plan.new_expires_at)
        if g.expires_at <= old:
            raise PolicyViolation(f"{request_id} was approved for your on-call shift and cannot outlive it "
                                  f"(it ends {old:%Y-%m-%d %H:%M} UTC).")
        g.warn_at = g.expires_at - elig.warn_before if g.expires_at - elig.warn_before > now else None
        snap = await snapshot(rt, session, req, g)
        await notices.record(rt, session, at=now, kind="extended", actor=actor, req=req, snap=snap,
                             detail={"grant": g.id, "from": old.isoformat(), "to": g.expires_at.isoformat()},
                             text=f"extended by {format_duration(by)} to {g.expires_at:%Y-%m-%d %H:%M} UTC")
        notices.tell_requester(session, at=now, snap=snap, event="extended",
                               text=f"Extended: {req.eligibility} now ends {g.expires_at:%Y-%m-%d %H:%M} UTC.")
    await backstop.move_after_extend(rt, g)  # the IdP's own expiry follows (bot/services/access/backstop.py)
    return g.expires_at


async def retry_failed(rt: Runtime, *, request_id: str, actor: str, origin: dict[str, str] | None = None) -> Grant:
    """An admin retries a FAILED grant: the request goes back to APPROVED with a new grant. ``origin``
    (where the command came from: the command line's OS user and host) is kept in the audit event."""
    from bot.services.requesting.final_approval import new_grant

    now = rt.clock.now()
    async with rt.db.transaction() as session:
        # the person's lock before any row (as a submission takes it), then the request's row
        await lock_person(rt, session, (await load_request(session, request_id)).requester)
        req = await load_request(session, request_id, lock=True)
        elig = rt.eligibility(req.eligibility)
        if elig is None:
            raise PolicyViolation(f"{req.eligibility} is no longer in the policy.")
        other = await other_open(session, req.requester, req.eligibility, besides=req.id)
        if other is not None:  # asked again since it failed: a retry would be a second grant of it
            raise PolicyViolation(f"{req.requester} has asked for {req.eligibility} again since it failed "
                                  f"({other}); that request stands, {request_id} is not retried.")
        if req.bundle_id is not None:  # all or nothing: its other members have ended (docs/policy.md)
            raise PolicyViolation(f"{request_id} is part of the bundle {req.bundle_id}, which is granted all or "
                                  "nothing and is not retried: its other members have ended. The requester "
                                  "asks again.")
        check_transition(Status(req.status), Status.APPROVED)
        req.status, req.updated_at, req.version = Status.APPROVED.value, now, req.version + 1
        g = new_grant(rt, req, elig, now=now)
        session.add(g)
        snap = await snapshot(rt, session, req, None)
        await notices.record(rt, session, at=now, kind="grant_retry", actor=actor.lower(), req=req, snap=snap,
                             from_state=Status.FAILED.value, to_state=Status.APPROVED.value,
                             detail=dict(origin or {}), text=f"grant retried by {actor}")
    rt.wake.set()
    return g
