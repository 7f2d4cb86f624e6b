"""Bundles carried out: one approval, one ordinary grant per member, all or nothing.

The policy side (which eligibilities a bundle holds, its union of approval layers) is
bot/domain/bundles.py. Here:

- **Submit** (``check_members``): the requester must be a requestor of *every* member and have an account
  at every member's connector; the duration is within the bundle's maximum, the shortest of its members'.
  ``check_held``, in the submitting transaction: no item is asked for twice by one person while open —
  a bundle holding none of its members already (alone or in another bundle, ad hoc or not), and a single
  request not for an item an open bundle holds.
  The member list is kept on the request (``context["bundle"]``).
- **Approval** (``approve_members``, inside the approving transaction): the bundle's own request carries
  its first member's grant; each other member becomes an APPROVED request of its own (``bundle_id``: the
  bundle request's id) with an ordinary grant, through ``final_approval.approve_final``, so each grant is
  checked against its own eligibility when it is carried out, gets its own expiry and is revoked by the
  durable revocation pipeline like any other. A bundle whose members changed since it was requested is
  not approved (the approvers saw the items listed then).
- **All or nothing** (``BundleGuard``, every worker pass, after the expiries): a member that ended other
  than by expiry — its grant failed for good, was refused (the policy no longer allows it), released or
  revoked, or it was cancelled — ends every other member still approved or active: one not started is
  stopped, one being carried out is refused (what it may have added at the IdP is removed), an active one
  is revoked (``released`` when the member was released: a bundle is released together). Audited
  (``bundle_ended``) and the requester told. The guard reads only the database, so it holds across
  restarts and replicas: a worker stopping between two grants leaves them ``granting``, and whichever
  worker runs next carries them out or ends them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import bindparam, exists, func, or_, select

from bot.domain.bundles import adhoc_members
from bot.domain.policy import Eligibility
from bot.domain.requests import PolicyViolation, Status, check_transition
from bot.services import notices
from bot.services.claims import lock_holder
from bot.services.requesting.not_started import not_started, stop_before_start
from bot.services.requesting.request_rows import load_votes
from bot.services.runtime import Runtime, new_id
from connectors.base import ConnectorError
from storage.core_tx import CoreTx
from storage.records import Unit, build
from storage.tables import AccessRequest, Grant

_R = AccessRequest.__table__  # type: ignore[attr-defined]
_S = _R.alias("sibling")
_G = Grant.__table__  # type: ignore[attr-defined]
_BROKEN = ("failed", "revoked", "cancelled")
_LIVE = (Status.APPROVED.value, Status.ACTIVE.value)
# A sibling that ended other than by expiry (or is ending so: its grant revoking for another reason).
_BROKEN_SIBLING = (select(_S.c.id, _S.c.eligibility, _S.c.status).where(
    _S.c.bundle_id == _R.c.bundle_id, _S.c.id != _R.c.id,
    or_(_S.c.status.in_(_BROKEN),
        exists(select(_G.c.id).where(_G.c.request_id == _S.c.id, _G.c.end_reason.is_not(None),
                                     _G.c.end_reason != "expired")))))
# Members still approved or active, holding (or about to hold) something, with such a sibling.
# The status is read through coalesce() so that no database drives this read by a status index (every open
# request of the fleet) rather than by the partial bundle index (bundle members only): a worker pass costs
# the same whatever the number of active grants (tests/reliability/test_bench_scale.py).
_VICTIMS = (select(_R.c.id).where(
    _R.c.bundle_id.is_not(None), func.coalesce(_R.c.status, "").in_(_LIVE),
    exists(select(_G.c.id).where(_G.c.request_id == _R.c.id, _G.c.status.in_(("granting", "active")))),
    exists(_BROKEN_SIBLING.with_only_columns(_S.c.id))).order_by(_R.c.bundle_id, _R.c.id).limit(100))


# The requester's open requests (pending, approved or active, not ending) that may hold an item of a new
# request: of the item itself, of an ad-hoc bundle (its name holds its items), of a bundle of the policy,
# or an approved bundle request (it carries its first member, also when its bundle left the policy).
# ``kind`` is kept in Python, as requests.py's ``_OPEN_DUPLICATE`` does (no index on kind to tempt a planner).
_OPEN_HOLDERS = select(_R.c.id, _R.c.kind, _R.c.eligibility, _R.c.bundle_id, _R.c.context).where(
    _R.c.requester == bindparam("b_requester"),
    _R.c.status.in_((Status.PENDING.value, *_LIVE)),
    or_(_R.c.eligibility.in_(bindparam("b_items", expanding=True)), _R.c.eligibility.like("%+%"),
        _R.c.eligibility.in_(bindparam("b_bundles", expanding=True)), _R.c.bundle_id == _R.c.id),
    or_(~exists(select(_G.c.id).where(_G.c.request_id == _R.c.id, _G.c.status.in_(("revoking", "ended", "failed")))),
        exists(select(_G.c.id).where(_G.c.request_id == _R.c.id, _G.c.status.in_(("granting", "active")))))
).order_by(_R.c.id)


def _members(rt: Runtime, name: str) -> list[str]:
    """A bundle's members in order (also of an ad-hoc bundle no longer composable), [] for a single item."""
    elig = rt.eligibility(name)
    return list(elig.bundle) if elig is not None and elig.bundle else adhoc_members(name) or []


def _held(rt: Runtime, row: Any) -> set[str]:
    """What an open request holds, or asks for: a member of an approved bundle (or a single request) its
    own item; the approved bundle request its first member (each other member is a request of its own);
    a pending bundle every member it was requested with."""
    if row.bundle_id is not None and row.bundle_id != row.id:
        return {row.eligibility}
    members = list((row.context or {}).get("bundle") or []) or _members(rt, row.eligibility)
    if not members:
        return {row.eligibility}
    return set(members[:1]) if row.bundle_id is not None else set(members)


def bundle_context(elig: Eligibility, context: dict[str, Any] | None) -> dict[str, Any] | None:
    """The request's ``context`` with the bundle's member list as requested."""
    if not elig.bundle:
        return context
    return {**(context or {}), "bundle": list(elig.bundle)}


async def check_held(rt: Runtime, tx: CoreTx, requester: str, elig: Eligibility) -> None:
    """Refuse a request for an item that an open request of the same requester already holds or asks for
    within a bundle, and a bundle (from the policy or ad hoc) for any member held alone or within another
    bundle: one of each item at a time (more time is an extension). Run in the submitting transaction, under
    the person's lock (``requests.lock_person``), so that two submissions at once cannot both pass; the
    same eligibility requested twice is ``_check_open_and_rate``'s. PolicyViolation names the holder's id."""
    wanted = set(elig.bundle) if elig.bundle else {elig.name}
    rows = await tx.rows(_OPEN_HOLDERS, {
        "b_requester": requester, "b_items": sorted(wanted),
        "b_bundles": [e.name for e in rt.policy.eligibilities if e.bundle] or [""]})
    held = next((r for r in rows if r.kind == "access" and _held(rt, r) & wanted), None)
    if held is None:
        return
    both = ", ".join(sorted(_held(rt, held) & wanted))
    where = held.id if held.eligibility in wanted else f"{held.eligibility}: {held.id}"
    if not elig.bundle:  # held by a bundle request (a member's own request is a duplicate of the same name)
        raise PolicyViolation(f"You already have or have asked for {elig.name} within the bundle "
                              f"{held.eligibility} ({held.id}); release or cancel it first.", field="eligibility")
    raise PolicyViolation(f"{elig.name} includes {both}, which you already have or have asked for ({where}); "
                          "release or cancel it first.", field="eligibility")


async def check_members(rt: Runtime, elig: Eligibility, requester: str) -> None:
    """Refuse a bundle request unless the requester may request every member and has an account at each
    member's connector. PolicyViolation says which member refused. (Holding a member already is
    ``check_held``'s, in the submitting transaction.)"""
    for name in elig.bundle:
        member = rt.eligibility(name)
        if member is None:  # the policy validates members; a reload between the two reads
            raise PolicyViolation(f"{elig.name} names {name}, which is no longer in the policy.",
                                  field="eligibility")
        if not await rt.directory.contains(rt.policy, member.requestors, requester):
            raise PolicyViolation(f"{elig.name} includes {name}, which {requester} is not eligible to request.",
                                  field="eligibility")
        try:
            account = await rt.directory.find_user(member.connector, requester)
        except ConnectorError as exc:
            raise PolicyViolation(f"{exc.user_message} Nothing was submitted; please try again in a minute.",
                                  field="eligibility") from None
        if account is None:
            raise PolicyViolation(f"We couldn't find an account for {requester} at {member.connector} (for "
                                  f"{name}); ask an administrator to check your identity-provider account.")


def check_items(req: AccessRequest, elig: Eligibility) -> None:
    """Refuse approving ``req`` unless its eligibility holds the items it was requested with (the
    approvers saw those): the same bundle members, or no bundle at all — an eligibility that became a
    bundle, or stopped being one, while the request waited is not approved."""
    context = req.context or {}
    if "bundle_of" in context:  # a member, approved with its bundle (``approve_members``)
        return
    asked, now = list(context.get("bundle") or []), list(elig.bundle or [])
    if asked == now:
        return
    then = f"the {', '.join(asked)}" if asked else "the single item"
    holds = f"now holds {', '.join(now)}" if now else "is no longer a bundle"
    raise PolicyViolation(f"{elig.name} {holds}, not {then} that {req.id} asked for; it cannot be approved. "
                          "The requester may ask again.")


async def approve_members(rt: Runtime, approve_final: Callable[..., Awaitable[Any]], unit: Unit,
                          req: AccessRequest, elig: Eligibility, *, actor: str, auto: bool) -> None:
    """The approved bundle request's other members, each an approved request with its own grant through
    ``approve_final`` (bot/services/requesting/final_approval.py), in the approving transaction (see the
    module docstring)."""
    req.bundle_id = req.id
    for name in elig.bundle[1:]:
        member = rt.eligibility(name)
        if member is None:
            raise PolicyViolation(f"{name} (in {elig.name}) is no longer in the policy; {req.id} cannot be approved.")
        item = build(AccessRequest, id=new_id("R"), eligibility=name, requester=req.requester,
                     requester_slack=req.requester_slack, submitted_by=req.submitted_by,
                     submitted_by_slack=req.submitted_by_slack, duration_s=req.duration_s,
                     justification=req.justification, ticket=req.ticket, status=Status.PENDING.value, layer=1,
                     layers=0, created_at=req.created_at, updated_at=req.updated_at, starts_at=req.starts_at,
                     context={**(req.context or {}), "bundle_of": req.id}, ends_by=req.ends_by,
                     bundle_id=req.id)
        unit.add(item)  # inserted APPROVED: approve_final changes it before the flush
        await approve_final(unit, item, member, actor=actor, auto=auto, votes=[],
                            text=f"approved with the bundle {elig.name} ({req.id})")


class BundleGuard:
    """All or nothing for bundles (see the module docstring)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def run(self) -> int:
        """End the members of bundles that lost one; returns how many were ended."""
        async with self.rt.db.core_reads() as reads:
            ids = [r.id for r in await reads.rows(_VICTIMS, {})]
        done = 0
        for rid in ids:
            done += await self._end(rid)
        if done:
            self.rt.wake.set()  # revocations are due now
        return done

    async def _end(self, request_id: str) -> int:
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.transaction() as session:
            peek = (await session.execute(select(Grant).where(
                Grant.request_id == request_id, Grant.status.in_(("granting", "active")))  # type: ignore[attr-defined]
            )).scalars().first()
            if peek is None:
                return 0
            # Lock order: the membership's lock, the grant's row, then the request's row, as the grant pipeline
            # takes them (grant_outcomes.py); the ticket watch locks the grant alone (ticket_watch.py).
            await lock_holder(rt.db, session, peek)
            # read again under the lock: ``peek`` is the row as it was before (another may have ended it since)
            grant = (await session.execute(select(Grant).where(Grant.id == peek.id).with_for_update()
                                           .execution_options(populate_existing=True))).scalar_one()
            req = (await session.execute(select(AccessRequest).where(AccessRequest.id == request_id)
                                         .with_for_update())).scalar_one()
            if req.status not in _LIVE or grant.status not in ("granting", "active") or req.bundle_id is None:
                return 0
            cause = (await session.execute(_BROKEN_SIBLING.where(_R.c.id == request_id).limit(1))).first()
            if cause is None:
                return 0
            cause_end = (await session.execute(select(Grant.end_reason).where(Grant.request_id == cause.id)
                                               .order_by(Grant.id.desc()))).scalars().first()  # type: ignore[union-attr]
            released = cause_end == "released"
            why = (f"{cause.eligibility} ({cause.id}) of the same bundle was "
                   + ("released" if released else "revoked" if cause_end in ("revoked", "ineligible")
                      else "not granted" if cause.status in ("failed", "revoked") else cause.status))
            from_state = req.status
            if grant.status == "active":
                grant.status, grant.end_reason = "revoking", "released" if released else "revoked"
                grant.next_attempt_at, grant.warn_at = now, None
            elif not_started(grant, now):
                await stop_before_start(rt, session, req, grant, actor=notices.SYSTEM, by_admin=True, now=now)
            else:  # being carried out: refused as GrantService._refuse does (what it added is removed)
                grant.claimed_until, grant.warn_at, grant.end_reason = None, None, "revoked"
                if grant.owns_membership or grant.pre_member is False:
                    grant.status, grant.owns_membership, grant.next_attempt_at = "revoking", True, now
                else:
                    grant.status, grant.ended_at, grant.next_attempt_at = "ended", now, None
                check_transition(Status(req.status), Status.REVOKED)
                req.status, req.updated_at, req.version = Status.REVOKED.value, now, req.version + 1
            snap = notices.describe(rt, req, await load_votes(session, req.id), grant)
            await notices.record(rt, session, at=now, kind="bundle_ended", actor=notices.SYSTEM, req=req, snap=snap,
                                 from_state=from_state, to_state=req.status,
                                 detail={"bundle": req.bundle_id, "grant": grant.id, "because": cause.id,
                                         "reason": why}, text=f"ended with its bundle: {why}")
            notices.tell_requester(session, at=now, snap=snap, event="revoked",
                                   text=f"Your {req.eligibility} access ({req.id}) is ending: {why}, and a "
                                        f"bundle is granted and kept all or nothing.")
        return 1

