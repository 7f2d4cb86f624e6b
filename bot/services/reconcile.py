"""Reconciliation: keep the identity provider honest about JIT-managed targets.

Every ``interval`` (once across replicas) the sweep lists the members of each eligibility's target and
compares them with the grants in the database:

- a member with no grant holding the target (granting, active, revoking, or ended within ``grace``) and
  not recorded as standing access is *unmanaged*: an alert and a ``reconcile_unmanaged`` audit event;
  where an eligibility on that target says ``enforce: true`` the member is removed at the IdP and
  ``reconcile_removed`` is recorded instead;
- an active grant (older than ``grace``) whose membership is gone at the IdP: an alert and a
  ``reconcile_vanished`` event.

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

from sqlalchemy import or_, select
from sqlmodel import col

from bot.domain.policy import Eligibility
from bot.services import kvstate, notices
from bot.services.audit import append_event
from bot.services.runtime import Runtime
from connectors.base import Connector, ConnectorError, IdpUser, Target, TargetKind, members_ref
from storage.tables import Grant

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = timedelta(minutes=15)
GRACE = timedelta(minutes=5)
SCHEDULE_KEY = "reconcile:schedule"
HOLDING = ("granting", "active", "revoking")


@dataclass
class ReconcileReport:
    targets: int = 0
    baselined: list[str] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)  # "<target> <email>", newly found this sweep
    removed: list[str] = field(default_factory=list)
    vanished: list[str] = field(default_factory=list)  # grant ids, newly found this sweep
    errors: list[str] = field(default_factory=list)


def _target(e: Eligibility) -> Target:
    return Target(TargetKind(e.target.kind), e.target.ref)


def _key(connector: str, target: Target) -> str:
    return f"{connector}:{target}"


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
        members = {u.email.lower() for u in await rt.connector(connector).list_members(members_ref(target))}
        standing = sorted(members - await self._holding(connector, target, now))
        async with rt.db.transaction() as session:
            await kvstate.write(session, f"standing:{_key(connector, target)}",
                                {"members": standing, "recorded_at": now.isoformat(), "by": actor})
            # In the audit log, not the audit channel: bookkeeping, not news (findings are posted).
            await append_event(session, at=now, kind="reconcile_baseline", actor=actor,
                               detail={"target": _key(connector, target), "standing": standing})
        return standing

    async def _holding(self, connector: str, target: Target, now: datetime) -> set[str]:
        async with self.rt.db.sessions() as session:
            rows = await session.execute(select(col(Grant.user_email)).where(
                col(Grant.connector) == connector, col(Grant.target_kind) == target.kind.value,
                col(Grant.target_id) == target.id,
                or_(col(Grant.status).in_(HOLDING), col(Grant.ended_at) > now - self.grace)))
            return {e.lower() for e in rows.scalars()}

    async def _standing_at_grant(self, connector: str, target: Target) -> set[str]:
        """Members whose latest grant of the target found them members already (``pre_member``): standing
        access jitbot recorded itself, and kept when that grant ended. A baseline taken while such a
        grant held the target left them out; they are standing all the same."""
        async with self.rt.db.sessions() as session:
            rows = await session.execute(select(col(Grant.user_email), col(Grant.pre_member)).where(
                col(Grant.connector) == connector, col(Grant.target_kind) == target.kind.value,
                col(Grant.target_id) == target.id, col(Grant.pre_member).is_not(None))
                .order_by(col(Grant.granted_at).nulls_first(), col(Grant.id)))
            latest = {email.lower(): bool(pre) for email, pre in rows.all()}
        return {email for email, pre in latest.items() if pre}

    async def _standing(self, key: str, connector: str, target: Target, eligs: list[Eligibility],
                        now: datetime, report: ReconcileReport) -> set[str]:
        async with self.rt.db.sessions() as session:
            recorded = await kvstate.read(session, f"standing:{key}")
        if recorded is None:
            report.baselined.append(key)
            recorded = {"members": await self.record_baseline(connector, target, actor=notices.SYSTEM)}
        standing = {str(m) for m in recorded["members"]} | await self._standing_at_grant(connector, target)
        for e in eligs:
            if e.transition is None:
                continue
            kept = await self.rt.directory.expand(self.rt.policy, e.transition.keep_standing)
            standing = kept if now >= e.transition.cutover else standing | kept
        return standing

    async def _sweep_target(self, key: str, connector: str, target: Target, eligs: list[Eligibility],
                            report: ReconcileReport) -> None:
        rt, now = self.rt, self.rt.clock.now()
        conn = rt.connector(connector)
        # Members first, grants second: a JIT grant's row exists before its IdP call, so every member
        # added by jitbot has a holding row by the time we read them.
        members = {u.email.lower(): u for u in await conn.list_members(members_ref(target))}
        standing = await self._standing(key, connector, target, eligs, now, report)
        holding = await self._holding(connector, target, now)
        async with rt.db.sessions() as session:
            active = list((await session.execute(select(Grant).where(
                col(Grant.connector) == connector, col(Grant.target_kind) == target.kind.value,
                col(Grant.target_id) == target.id, col(Grant.status) == "active",
                col(Grant.granted_at) < now - self.grace))).scalars())
        enforce = any(e.enforce for e in eligs)
        unmanaged = sorted(set(members) - holding - standing)
        vanished = [g for g in active if g.user_email.lower() not in members]
        findings_key = f"reconcile:findings:{key}"
        async with rt.db.sessions() as session:
            known = set((await kvstate.read(session, findings_key) or {}).get("open", []))
        if enforce and unmanaged:  # re-read just before removing: a grant may have started meanwhile
            unmanaged = sorted(set(unmanaged) - await self._holding(connector, target, now))
        current = {f"unmanaged:{m}" for m in unmanaged} | {f"vanished:{g.id}" for g in vanished}
        removed = [m for m in unmanaged if enforce and await self._remove(conn, members[m], target, key)]
        async with rt.db.transaction() as session:
            for email in unmanaged:
                if email in removed:
                    report.removed.append(f"{key} {email}")
                    await notices.record(rt, session, at=now, kind="reconcile_removed", actor=notices.SYSTEM,
                                         req=None, snap=None, detail={"target": key, "user": email},
                                         text=f"removed {email} from {target}: a member without a grant "
                                              "or standing access (enforce: true)")
                    notices.alert(session, at=now, snap=None,
                                  text=f"{email} was in {target} without a grant; removed (enforce: true).")
                elif f"unmanaged:{email}" not in known:
                    report.unmanaged.append(f"{key} {email}")
                    await notices.record(rt, session, at=now, kind="reconcile_unmanaged", actor=notices.SYSTEM,
                                         req=None, snap=None, detail={"target": key, "user": email},
                                         text=f"{email} is in {target} without a grant or standing access")
                    notices.alert(session, at=now, snap=None,
                                  text=f"{email} is a member of {target} without a jitbot grant or recorded "
                                       "standing access. Remove them, or record standing access.")
            for g in vanished:
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
