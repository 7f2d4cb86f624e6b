"""Approved grants that have not started: they hold nothing, and can be stopped before they start.

A grant *has not started* while it waits for its start (a scheduled request, or put back before its first
IdP call) and has never called the identity provider: status ``granting``, no recorded ``pre_member``, no
attempt, ``next_attempt_at`` in the future, and no live claim (a worker whose clock is ahead of this
replica's may have claimed it and be calling the provider now). Such a grant never holds a membership:
it is no heir when another grant of the same membership ends (bot/services/access/revocation.py),
reconciliation does not count it as holding the membership (bot/services/access/reconcile.py), and its
requester or an administrator can stop it (``stop_before_start``) with no IdP call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, not_, or_
from sqlalchemy.ext.asyncio import AsyncSession

from bot.domain.requests import PolicyViolation, Status, check_transition
from bot.services import notices
from bot.services.requesting.request_rows import close_schedule, load_votes
from bot.services.runtime import Runtime
from storage.tables import AccessRequest, Grant

_GRANTS = Grant.__table__  # type: ignore[attr-defined]


def not_started(grant: Grant, now: datetime) -> bool:
    """Whether ``grant`` has not started (see the module docstring)."""
    return (grant.status == "granting" and grant.pre_member is None and grant.attempts == 0
            and grant.next_attempt_at is not None and grant.next_attempt_at > now
            and (grant.claimed_until is None or grant.claimed_until <= now))


def started_clause(now: datetime) -> Any:
    """SQL: the grant row is not a grant that has not started (``not_started`` as a condition)."""
    return not_(and_(_GRANTS.c.status == "granting", _GRANTS.c.pre_member.is_(None), _GRANTS.c.attempts == 0,
                     _GRANTS.c.next_attempt_at > now,
                     or_(_GRANTS.c.claimed_until.is_(None), _GRANTS.c.claimed_until <= now)))


def waiting_grant(req: AccessRequest, grant: Grant | None, *, now: datetime) -> Grant:
    """``grant`` (the APPROVED request's, locked: ``request_rows.lock_live_grant``) if it has not started;
    PolicyViolation (said to the person asking) if it has — it is being carried out, and can be released
    once it is active. No membership lock: a grant that has not started takes no part in the membership's
    ownership."""
    if grant is None or not not_started(grant, now):
        raise PolicyViolation(f"{req.id} is being granted right now; once it is active, end it with "
                              f"/jit release {req.id}.")
    return grant


async def stop_before_start(rt: Runtime, session: AsyncSession, req: AccessRequest, grant: Grant, *, actor: str,
                            by_admin: bool, now: datetime) -> None:
    """End ``grant`` (which has not started; the caller holds the request's and the grant's row locks) and
    its request, in the caller's transaction: CANCELLED when the requester stops it, REVOKED when an
    administrator does. Audited; the approvers' messages and the requester are told."""
    new = Status.REVOKED if by_admin else Status.CANCELLED
    check_transition(Status(req.status), new)
    from_state = req.status
    grant.status, grant.end_reason, grant.ended_at = "ended", "cancelled" if not by_admin else "revoked", now
    grant.next_attempt_at = grant.claimed_until = None
    req.status, req.updated_at, req.version = new.value, now, req.version + 1
    close_schedule(req)
    snap = notices.describe(rt, req, await load_votes(session, req.id), grant)
    who = "the requester" if not by_admin else actor
    await notices.record(rt, session, at=now, kind=new.value, actor=actor, req=req, snap=snap,
                         from_state=from_state, to_state=new.value,
                         detail={"grant": grant.id, "before_start": True},
                         text=f"{new.value} by {who} before it started")
    for layer in range(1, req.layers + 1):
        await notices.update_approvals(session, at=now, snap=snap, layer=layer,
                                 outcome=f"{new.value.title()} by {who} before it started")
    notices.tell_requester(session, at=now, snap=snap, event=new.value,
                           text=f"Your request {req.id} for {req.eligibility} was {new.value} "
                                f"{'by ' + actor if by_admin else 'as you asked'} before it started; "
                                "you were not given the access.")
