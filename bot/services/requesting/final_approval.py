"""What approving a request's last layer does (or an auto-approval): PENDING → APPROVED with a grant
waiting to be carried out, now or at the scheduled start, for as long as the policy allows now; a
bundle's other members approved with it; an extension's grant expiry moved instead (extension_apply.py).

Inside the approving transaction: the ``ApprovalService``, ``RequestService.submit`` (no layers, or
every layer passed by on-call), break-glass and extensions call ``approve_final``.
"""

from __future__ import annotations

import functools
from datetime import datetime, timedelta

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import BREAKGLASS, EXTENSION, Status, check_transition
from bot.services import notices
from bot.services.claims import FIRST_TOKEN, LEASE
from bot.services.requesting.bundles import approve_members, check_items
from bot.services.requesting.extension_apply import approve_extension
from bot.services.requesting.request_rows import close_schedule, read_votes
from bot.services.runtime import Runtime, new_id
from storage.db import after_commit
from storage.records import Unit, build
from storage.tables import AccessRequest, ApprovalVote, Grant

GRANT_HANDED = "grant_handed"  # tx info: the transaction approved a grant and hands it to this process's worker


def new_grant(rt: Runtime, req: AccessRequest, elig: Eligibility, *, now: datetime | None = None) -> Grant:
    """A grant waiting to be carried out: ``now`` (the caller's, so that "due now" compares equal), or at
    the request's scheduled start."""
    now = now or rt.clock.now()
    due = req.starts_at if req.starts_at is not None and req.starts_at > now else now
    return build(Grant, id=new_id("G"), request_id=req.id, connector=elig.connector, target_kind=elig.target.kind,
                 target_id=elig.target.ref, user_email=req.requester, status="granting",
                 next_attempt_at=due)


def allowed_seconds(req: AccessRequest, elig: Eligibility | None) -> int:
    """How long ``req``'s access may last under the policy in force now: its own duration, capped to
    the eligibility's current maximum (break-glass: its break-glass maximum). The policy may have
    changed since the request was submitted; the current one decides."""
    if elig is None:
        return req.duration_s
    cap = elig.break_glass.max_duration if req.kind == BREAKGLASS and elig.break_glass else elig.max_duration
    return min(req.duration_s, int(cap.total_seconds()))


async def approve_final(rt: Runtime, unit: Unit, req: AccessRequest, elig: Eligibility, *, actor: str,
                        auto: bool = False, text: str | None = None,
                        votes: list[ApprovalVote] | None = None) -> Grant | None:
    """PENDING → APPROVED and a grant waiting to be carried out (inside the caller's transaction,
    written by its ``unit.flush()``). ``votes``: the request's votes as this transaction has them
    (read here when not given). An extension request moves its grant's expiry instead (no grant)."""
    if req.kind == EXTENSION:
        await approve_extension(rt, unit, req, elig, actor=actor, auto=auto, votes=votes)
        return None
    now = rt.clock.now()
    check_transition(Status(req.status), Status.APPROVED)
    check_items(req, elig)  # a bundle as requested, or none (bot/services/requesting/bundles.py)
    asked, req.duration_s = req.duration_s, allowed_seconds(req, elig)  # the maximum may have been lowered
    req.status, req.decided_at, req.updated_at = Status.APPROVED.value, now, now
    close_schedule(req)
    req.version += 1
    grant = new_grant(rt, req, elig, now=now)
    taker = rt.grant_taker
    if taker is not None and grant.next_attempt_at is not None and grant.next_attempt_at <= now:
        # claimed here and carried out by this process's worker once committed (GrantService.adopt)
        grant.claimed_by, grant.claimed_until = rt.instance_id, now + LEASE
        grant.claim_token = FIRST_TOKEN  # fenced like any claim (bot/services/access/fencing.py)
        after_commit(unit.tx.info, functools.partial(taker, grant.id))
        unit.tx.info[GRANT_HANDED] = True
    unit.add(grant)
    if elig.bundle:  # its other members: approved requests of their own (bot/services/requesting/bundles.py)
        await approve_members(rt, functools.partial(approve_final, rt), unit, req, elig, actor=actor, auto=auto)
    session = unit.tx
    snap = notices.describe(rt, req, votes if votes is not None else await read_votes(unit, req.id))
    later = grant.next_attempt_at is not None and grant.next_attempt_at > now
    await notices.record(rt, session, at=now, kind="approved", actor=actor, req=req, snap=snap,
                         from_state=Status.PENDING.value, to_state=Status.APPROVED.value,
                         detail={"auto": auto, **({"shortened_from": format_duration(timedelta(seconds=asked))}
                                                   if asked != req.duration_s else {}),
                                 **({"starts_at": grant.next_attempt_at.isoformat()} if later
                                                  and grant.next_attempt_at else {})},
                         text=text or ("auto-approved (no approval layers)" if auto else
                                       "approved — granting access")
                         + (f"; starts {grant.next_attempt_at:%Y-%m-%d %H:%M} UTC" if later
                            and grant.next_attempt_at else ""))
    if later and grant.next_attempt_at is not None:
        message = (f"Your request {req.id} for {elig.name} was approved; access starts "
                   f"{grant.next_attempt_at:%Y-%m-%d %H:%M} UTC.")
    else:
        message = f"Your request {req.id} for {elig.name} was approved; granting access now."
    if asked != req.duration_s:
        message += (f" Its duration was shortened to {format_duration(timedelta(seconds=req.duration_s))}: "
                    f"the policy now allows at most that for {elig.name}.")
    notices.tell_requester(session, at=now, snap=snap, event="approved", text=message)
    return grant
