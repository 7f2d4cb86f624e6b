"""Reconciliation: keep the identity provider honest about JIT-managed targets.

Every ``interval`` (once across replicas) the sweep lists the members of each eligibility's target and
compares them with the grants in the database:

- a member with no grant holding the target (active, revoking, granting once started — a grant that
  has not started holds nothing, bot/services/requesting/not_started.py — or ended within ``grace``) and not
  recorded as standing access is *unmanaged*: an alert and a ``reconcile_unmanaged`` audit event;
  where an eligibility on that target says ``enforce: true`` the member is removed at the IdP and
  ``reconcile_removed`` is recorded instead;
- an unmanaged member whom jitbot added itself (the first of their grants of the target to be granted
  found them not a member) is removed whether or not ``enforce`` is set: a ``reconcile_removed`` event
  (``jitbot_added``) and an alert. Access jitbot gave never outlives the grants that justify it;
- an active grant (older than ``grace``) whose membership is gone at the IdP: an alert and a
  ``reconcile_vanished`` event; at a connector with the expiry backstop on (connectors/backstop.py) the
  provider has ended it, so the grant ends as revoked with ``end_reason`` ``idp_expired`` and an
  ``idp_expired`` event (bot/services/access/backstop.py), and nothing adds the membership back.

A member who holds the target only through a nested group (``IdpUser.direct`` False, Google) is never
removed — removing them from this group would not end that access — but reported as unmanaged, held
through a nested group; and a grant's membership, always direct, has vanished when only a nested one is
left.

People are compared by the IdP's user id wherever it is known (a grant's ``user_idp_id``, the ids
recorded with standing access), by email otherwise: the IdP may list a member under a primary email
other than the address (an alias, a UPN) the grant was made for, and that is still the same person.

Standing access is recorded per target in ``kv['standing:<connector>:<target>']``: on the first sweep
of a target, its members without a grant are taken as the baseline (``reconcile_baseline`` event).
A member whose latest grant of the target found them a member already (``pre_member``) is standing too.
``record_baseline`` re-takes it on demand (e.g. from an admin command). Members kept by an
eligibility's ``transition.keep_standing`` are standing too; after a transition's cut-over only those
are (the baseline no longer counts). Each finding is alerted once, until it goes away.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlmodel import col

from bot.domain.policy import Eligibility
from bot.services import kvstate, notices
from bot.services.access import backstop
from bot.services.auditing.audit import append_event
from bot.services.requesting.not_started import started_clause
from bot.services.runtime import Runtime
from connectors.base import Connector, ConnectorError, IdpUser, Target, TargetKind, members_ref
from storage.tables import Grant

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = timedelta(minutes=15)
GRACE = timedelta(minutes=5)
SCHEDULE_KEY = "reconcile:schedule"
HOLDING = ("active", "revoking")  # and "granting" once started (``started_clause``)


@dataclass
class ReconcileReport:
    targets: int = 0
    baselined: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)  # "<target> <email>", newly found this sweep
    removed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)  # grant ids, newly found this sweep
    ended: list[str] = field(default_factory=list)  # grant ids the provider ended (expiry backstop)
    errors: list[str] = field(default_factory=list)


def _target(e: Eligibility) -> Target:
    return Target(TargetKind(e.target.kind), e.target.ref)


def _key(connector: str, target: Target) -> str:
    return f"{connector}:{target}"


@dataclass(frozen=True)
class _People:
    """A set of people, known by IdP user id where there is one and by email otherwise."""

    ids: frozenset[str] = frozenset()
    emails: frozenset[str] = frozenset()

    def has(self, user: IdpUser) -> bool:
        return (bool(user.id) and user.id in self.ids) or user.email.lower() in self.emails

    def __or__(self, other: _People) -> _People:
        return _People(self.ids | other.ids, self.emails | other.emails)


def _label(user: IdpUser) -> str:
    return user.email.lower() or user.id


class ReconcileService:
    def __init__(self, rt: Runtime, *, interval: timedelta = DEFAULT_INTERVAL, grace: timedelta = GRACE) -> None:
        self.rt, self.interval, self.grace = rt, interval, grace

    async def run_if_due(self) -> ReconcileReport | None:
        """Sweep when ``interval`` has passed since the last sweep by any replica (cheap otherwise)."""
        if not await kvstate.take_turn(self.rt.db, SCHEDULE_KEY, now=self.rt.clock.now(), every=self.interval,
                                       by=self.rt.instance_id):
            return None
        return await self.sweep()

    def _targets(self) -> dict[str, tuple[str, Target, list[Eligibility]]]:
        out: dict[str, tuple[str, Target, list[Eligibility]]] = {}
        for e in self.rt.policy.eligibilities:
            t = _target(e)
            out.setdefault(_key(e.connector, t), (e.connector, t, []))[2].append(e)
        return out

    async def sweep(self) -> ReconcileReport:
        report = ReconcileReport()
        for key, (connector, target, eligs) in self._targets().items():
            report.targets += 1
            try:
                await self._sweep_target(key, connector, target, eligs, report)
            except ConnectorError as exc:  # the next sweep tries again; one bad IdP must not stop the rest
                report.errors.append(f"{key}: {exc}")
                log.warning("reconcile %s failed: %s", key, exc)
        return report

    async def record_baseline(self, connector: str, target: Target, *, actor: str) -> list[str]:
        """Record the target's current members without a grant as its standing access."""
        rt, now = self.rt, self.rt.clock.now()
        members = await rt.connector(connector).list_members(members_ref(target))
        holding = await self._holding(connector, target, now)
        kept = [u for u in members if not holding.has(u)]
        standing = sorted({_label(u) for u in kept})
        async with rt.db.transaction() as session:
            await kvstate.write(session, f"standing:{_key(connector, target)}",
                                {"members": standing, "ids": sorted({u.id for u in kept if u.id}),
                                 "recorded_at": now.isoformat(), "by": actor})
            # In the audit log, not the audit channel: bookkeeping, not news (findings are posted).
            await append_event(session, at=now, kind="reconcile_baseline", actor=actor,
                               detail={"target": _key(connector, target), "standing": standing})
        return standing

    async def _holding(self, connector: str, target: Target, now: datetime) -> _People:
        async with self.rt.db.sessions() as session:
            rows = (await session.execute(select(col(Grant.user_idp_id), col(Grant.user_email)).where(
                col(Grant.connector) == connector, col(Grant.target_kind) == target.kind.value,
                col(Grant.target_id) == target.id,
                or_(col(Grant.status).in_(HOLDING), and_(col(Grant.status) == "granting", started_clause(now)),
                    col(Grant.ended_at) > now - self.grace)))).all()
        # a grant not granted yet has no IdP id: its email stands for it
        return _People(frozenset(i for i, _ in rows if i), frozenset(e.lower() for i, e in rows if not i))

    async def _added_by_jitbot(self, connector: str, target: Target, people: dict[str, IdpUser]) -> set[str]:
        """Those of ``people`` (label → member) who were not members of ``target`` before the first of their
        grants of it to be granted: the membership is jitbot's (not standing access it found). A grant that
        found them no member but was never granted (stopped, or failed, while its IdP call was in flight)
        counts too, unless a granted grant found them a member. A grant is matched to a member by IdP user id
        where it has one, else by email."""
        if not people:
            return set()
        emails = {u.email.lower(): label for label, u in people.items() if u.email}
        ids = {u.id: label for label, u in people.items() if u.id}
        async with self.rt.db.sessions() as session:
            rows = (await session.execute(
                select(col(Grant.user_idp_id), col(Grant.user_email), col(Grant.pre_member), col(Grant.granted_at))
                .where(col(Grant.connector) == connector, col(Grant.target_kind) == target.kind.value,
                       col(Grant.target_id) == target.id,
                       or_(col(Grant.user_email).in_(list(emails)), col(Grant.user_idp_id).in_(list(ids))),
                       col(Grant.pre_member).is_not(None)))).all()
        first: dict[str, bool] = {}
        never_granted: set[str] = set()
        for idp_id, email, pre_member, granted_at in sorted(rows, key=lambda r: (r[3] is None, r[3] or 0)):
            label = ids.get(idp_id) if idp_id else None
            label = label or emails.get(email.lower())
            if label is None:
                continue
            if granted_at is not None:
                first.setdefault(label, bool(pre_member))
            elif pre_member is False:
                never_granted.add(label)
        return ({label for label, was_member in first.items() if not was_member}
                | {label for label in never_granted if label not in first})

    async def _standing_at_grant(self, connector: str, target: Target) -> _People:
        """Members whose latest grant of the target found them members already (``pre_member``): standing
        access jitbot recorded itself, and kept when that grant ended. A baseline taken while such a
        grant held the target left them out; they are standing all the same."""
        async with self.rt.db.sessions() as session:
            rows = await session.execute(select(col(Grant.user_email), col(Grant.user_idp_id), col(Grant.pre_member))
                                         .where(col(Grant.connector) == connector,
                                                col(Grant.target_kind) == target.kind.value,
                                                col(Grant.target_id) == target.id, col(Grant.pre_member).is_not(None))
                                         .order_by(col(Grant.granted_at).nulls_first(), col(Grant.id)))
            latest = {email.lower(): (idp_id, bool(pre)) for email, idp_id, pre in rows.all()}
        standing = [(email, idp_id) for email, (idp_id, pre) in latest.items() if pre]
        return _People(frozenset(i for _, i in standing if i), frozenset(e for e, _ in standing))

    async def _standing(self, key: str, connector: str, target: Target, eligs: list[Eligibility],
                        now: datetime, report: ReconcileReport) -> _People:
        async with self.rt.db.sessions() as session:
            recorded = await kvstate.read(session, f"standing:{key}")
        if recorded is None:
            report.baselined.append(key)
            await self.record_baseline(connector, target, actor=notices.SYSTEM)
            async with self.rt.db.sessions() as session:
                recorded = await kvstate.read(session, f"standing:{key}") or {}
        standing = _People(frozenset(str(i) for i in recorded.get("ids", [])),
                           frozenset(str(m) for m in recorded.get("members", [])))
        standing = standing | await self._standing_at_grant(connector, target)
        for e in eligs:
            if e.transition is None:
                continue
            kept = _People(emails=frozenset(await self.rt.directory.expand(self.rt.policy, e.transition.keep_standing)))
            standing = kept if now >= e.transition.cutover else standing | kept
        return standing

    async def _sweep_target(self, key: str, connector: str, target: Target, eligs: list[Eligibility],
                            report: ReconcileReport) -> None:
        rt, now = self.rt, self.rt.clock.now()
        conn = rt.connector(connector)
        # Members first, grants second: a JIT grant's row exists before its IdP call, so every member
        # added by jitbot has a holding row by the time we read them.
        members = {_label(u): u for u in await conn.list_members(members_ref(target))}
        standing = await self._standing(key, connector, target, eligs, now, report)
        holding = await self._holding(connector, target, now)
        async with rt.db.sessions() as session:
            # in id order: ``end_idp_expired`` below locks several of their rows in one transaction
            active = list((await session.execute(select(Grant).where(
                col(Grant.connector) == connector, col(Grant.target_kind) == target.kind.value,
                col(Grant.target_id) == target.id, col(Grant.status) == "active",
                col(Grant.granted_at) < now - self.grace).order_by(col(Grant.id)))).scalars())
        enforce = any(e.enforce for e in eligs)
        unmanaged = sorted(m for m, u in members.items() if not holding.has(u) and not standing.has(u))
        # Indexed once: a grant is matched to a direct member by IdP user id where it has one, else by email.
        # (Matching each grant against every member was O(grants × members): 10,000 of each held the event
        # loop, and with it every revocation, for seconds.)
        direct = _People(frozenset(u.id for u in members.values() if u.direct and u.id),
                         frozenset(u.email.lower() for u in members.values() if u.direct))
        vanished = [g for g in active if not (g.user_idp_id in direct.ids if g.user_idp_id
                                              else g.user_email.lower() in direct.emails)]
        findings_key = f"reconcile:findings:{key}"
        async with rt.db.sessions() as session:
            known = set((await kvstate.read(session, findings_key) or {}).get("open", []))
        ours = await self._added_by_jitbot(connector, target, {m: members[m] for m in unmanaged})
        if (enforce or ours) and unmanaged:  # re-read just before removing: a grant may have started meanwhile
            holding = await self._holding(connector, target, now)
            unmanaged = [m for m in unmanaged if not holding.has(members[m])]
        current = {f"unmanaged:{m}" for m in unmanaged} | {f"vanished:{g.id}" for g in vanished
                                                           if not backstop.enabled(rt, connector)}
        # a nested member is never removed: jitbot changes direct memberships only
        removed = {m for m in unmanaged if (enforce or m in ours) and members[m].direct
                   and await self._remove(conn, members[m], target, key)}
        async with rt.db.transaction() as session:
            for email in unmanaged:
                if email in removed:
                    report.removed.append(f"{key} {email}")
                    why = ("jitbot added it and no live grant holds it" if email in ours
                           else "a member without a grant or standing access (enforce: true)")
                    await notices.record(rt, session, at=now, kind="reconcile_removed", actor=notices.SYSTEM,
                                         req=None, snap=None,
                                         detail={"target": key, "user": email, "jitbot_added": email in ours},
                                         text=f"removed {email} from {target}: {why}")
                    notices.alert(session, at=now, snap=None, text=f"{email} was in {target} without a grant; "
                                                                   f"removed ({why}).")
                elif f"unmanaged:{email}" not in known:
                    report.unmanaged.append(f"{key} {email}")
                    nested = not members[email].direct
                    await notices.record(rt, session, at=now, kind="reconcile_unmanaged", actor=notices.SYSTEM,
                                         req=None, snap=None, detail={"target": key, "user": email, "nested": nested},
                                         text=f"{email} is in {target} without a grant or standing access"
                                              + (" (through a nested group)" if nested else ""))
                    advice = ("They hold it through a nested group, which jitbot does not change: remove them "
                              "from that group, or record standing access." if nested
                              else "Remove them, or record standing access.")
                    notices.alert(session, at=now, snap=None,
                                  text=f"{email} is a member of {target} without a jitbot grant or recorded "
                                       f"standing access. {advice}")
            for g in vanished:
                if backstop.enabled(rt, connector):  # the provider's expiry ended it: the grant ends too
                    if await backstop.end_idp_expired(rt, session, g, target=key, now=now):
                        report.ended.append(g.id)
                    continue
                if f"vanished:{g.id}" in known:
                    continue
                report.vanished.append(g.id)
                await append_event(session, at=now, kind="reconcile_vanished", actor=notices.SYSTEM,
                                   request_id=g.request_id, detail={"target": key, "user": g.user_email, "grant": g.id})
                notices.alert(session, at=now, snap=None,
                              text=f"{g.user_email}'s active grant {g.id} ({g.request_id}) is no longer a "
                                   f"membership of {target} at the identity provider.")
            open_now = sorted(current - {f"unmanaged:{m}" for m in removed})
            if open_now != sorted(known):
                await kvstate.write(session, findings_key, {"open": open_now, "at": now.isoformat()})

    async def _remove(self, conn: Connector, user: IdpUser, target: Target, key: str) -> bool:
        try:
            await conn.revoke(user, target, grant_id=f"reconcile:{key}")
        except ConnectorError as exc:
            log.warning("reconcile could not remove %s from %s: %s", user.email, key, exc)
            return False
        return True
