"""The IdP-side expiry backstop in the services (connectors/backstop.py is the connector side).

- **Extension** (``move_after_extend``): after an extension commits, the provider's expiry of a membership
  jitbot added is moved to the grant's new expiry. When that call fails the extension stands in jitbot, the
  provider still ends the membership at the old time (the safe side: access ends earlier, never later), and
  a ``backstop_move_failed`` event and an alert say so.
- **Hand-off** (``move_for_heirs``): when a grant ends while another active grant of the same membership
  holds it, that grant inherits the membership (bot/services/access/revocation.py) and the provider's expiry is
  moved to the heir's end, else the first grant's earlier expiry would end the heir's access early. An heir
  whose own add was still in flight keeps the earlier expiry (its access ends early at the provider, and
  reconciliation ends the grant as ``idp_expired``).
- **Reconciliation** (``end_idp_expired``): an active grant whose membership is gone at a provider with the
  backstop on is taken as ended by the provider (its expiry; a removal there ends it all the same): the
  grant goes to ``revoking`` with ``end_reason`` ``idp_expired``, so the revoker ends it as revoked (its
  ``revoke`` of a missing membership is success) and nothing adds the membership back. An
  ``idp_expired`` event records it.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bot.services import notices
from bot.services.auditing.audit import append_event
from bot.services.runtime import Runtime
from connectors.backstop import expiry_backstop
from connectors.base import ConnectorError, IdpUser, NotFound, Target, TargetKind
from storage.tables import Grant

log = logging.getLogger(__name__)

IDP_EXPIRED = "idp_expired"


def enabled(rt: Runtime, connector: str) -> bool:
    """Whether the connector's provider ends memberships itself at the expiry jitbot sets."""
    conn = rt.connectors.get(connector)
    return conn is not None and expiry_backstop(conn) is not None


async def _user(rt: Runtime, grant: Grant) -> IdpUser:
    """The account the membership was granted to (its IdP id), as revocation names it."""
    if grant.user_idp_id:
        return IdpUser(id=grant.user_idp_id, email=grant.user_email)
    user = await rt.directory.find_user(grant.connector, grant.user_email)
    if user is None:
        raise NotFound(f"no account for {grant.user_email} at {grant.connector}")
    return user


async def move_after_extend(rt: Runtime, grant: Grant) -> bool:
    """Move the provider's expiry of ``grant``'s membership to its (new) ``expires_at``. Only a membership
    jitbot added carries an expiry (standing access never does). False when the call failed (audited)."""
    backstop = expiry_backstop(rt.connectors[grant.connector]) if grant.connector in rt.connectors else None
    if backstop is None or not grant.owns_membership or grant.expires_at is None:
        return True
    try:
        user = await _user(rt, grant)
        await backstop.move_expiry(user, Target(TargetKind(grant.target_kind), grant.target_id),
                                   expires_at=grant.expires_at)
    except ConnectorError as exc:
        now = rt.clock.now()
        log.warning("backstop: moving the IdP expiry of grant %s failed: %s", grant.id, exc)
        async with rt.db.transaction() as session:
            await append_event(session, at=now, kind="backstop_move_failed", actor=notices.SYSTEM,
                               request_id=grant.request_id,
                               detail={"grant": grant.id, "to": grant.expires_at.isoformat(), "error": str(exc)})
            notices.alert(session, at=now, snap=None,
                          text=f"{grant.user_email}'s access ({grant.request_id}) now ends "
                               f"{grant.expires_at:%Y-%m-%d %H:%M} UTC, but {grant.connector} could not be told: it "
                               "still ends the membership at the earlier expiry (the access ends early, never late).")
        return False
    return True


async def move_for_heirs(rt: Runtime, heirs: list[Grant]) -> None:
    """After the hand-off's commit: each heir's membership ends at the provider at the heir's end."""
    for heir in heirs:
        await move_after_extend(rt, heir)


async def end_idp_expired(rt: Runtime, session: AsyncSession, g: Grant, *, target: str, now: datetime) -> bool:
    """In the caller's transaction: end the active grant ``g`` whose membership the provider has ended
    (compare-and-set on ``active``; False if it is no longer active)."""
    res = await session.execute(update(Grant).where(col(Grant.id) == g.id, col(Grant.status) == "active")
                                .values(status="revoking", end_reason=IDP_EXPIRED, next_attempt_at=now, warn_at=None))
    if getattr(res, "rowcount", 0) != 1:
        return False
    expired = g.expires_at is not None and g.expires_at <= now
    await append_event(session, at=now, kind=IDP_EXPIRED, actor=notices.SYSTEM, request_id=g.request_id,
                       detail={"grant": g.id, "target": target, "user": g.user_email,
                               "expires_at": g.expires_at.isoformat() if g.expires_at else None,
                               "cause": "the provider's expiry" if expired
                               else "gone at the provider before jitbot's expiry (its expiry or a removal there)"})
    rt.wake.set()
    return True
