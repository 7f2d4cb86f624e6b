"""Moving a target off standing access (an eligibility's ``transition:``).

Standing members are the target's members without an active grant. Before ``static_access_until``
they get a DM per ``notify_days`` (once each: ``transition_notice`` has a unique row per member and
day). From 00:00 UTC of that date the worker removes them (never ``keep_standing``, never someone
with an active grant), once across replicas (``kv['transition:<eligibility>:<date>']``, taken over
after a lease if a worker died mid-way), writing a ``transition_removal`` row per person so that
``jitbot transition revert`` can put them back. Every step is an audit event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bot.domain.policy import Eligibility
from bot.services import kvstate
from bot.services.auditing.audit import append_event
from bot.services.outbox.dispatcher import AUDIT_LANE, enqueue
from bot.services.runtime import Runtime
from connectors.base import IdpUser, Target, TargetKind, members_ref
from storage.tables import AccessRequest, Grant, TransitionNotice, TransitionRemoval

LEASE = timedelta(minutes=10)
HOLDING = ("granting", "active", "revoking")


@dataclass(frozen=True)
class Standing:
    user: IdpUser
    last_jit_use: datetime | None
    kept: bool  # listed under keep_standing: never removed


def target_of(e: Eligibility) -> Target:
    return Target(TargetKind(e.target.kind), e.target.ref)


class TransitionService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def standing_members(self, e: Eligibility) -> list[Standing]:
        """Members of ``e``'s target without an active grant, with their last JIT use of ``e``."""
        rt, target = self.rt, target_of(e)
        members = await rt.connector(e.connector).list_members(members_ref(target))
        async with rt.db.sessions() as session:
            # Holders by IdP user id once granted (the IdP may list them under another address), else by email
            held = (await session.execute(select(col(Grant.user_idp_id), col(Grant.user_email)).where(
                col(Grant.connector) == e.connector, col(Grant.target_kind) == target.kind.value,
                col(Grant.target_id) == target.id, col(Grant.status).in_(HOLDING)))).all()
            holding_ids = {i for i, _ in held if i}
            holding = {m.lower() for i, m in held if not i}
            last: dict[str, datetime] = dict((await session.execute(
                select(col(Grant.user_email), func.max(col(Grant.granted_at)))
                .join(AccessRequest, col(AccessRequest.id) == col(Grant.request_id))
                .where(col(AccessRequest.eligibility) == e.name).group_by(col(Grant.user_email)))).all())
        keep = await rt.directory.expand(rt.policy, e.transition.keep_standing) if e.transition else set()
        return [Standing(u, last.get(u.email.lower()), u.email.lower() in keep)
                for u in members if u.id not in holding_ids and u.email.lower() not in holding]

    async def run_due(self) -> int:
        done = 0
        now = self.rt.clock.now()
        for e in self.rt.policy.eligibilities:
            if e.transition is None:
                continue
            if now < e.transition.cutover:
                done += await self._notify(e, now)
            else:
                done += await self._cut_over(e, now)
        return done

    async def _notify(self, e: Eligibility, now: datetime) -> int:
        assert e.transition is not None
        started = [d for d in e.transition.notify_days if now >= e.transition.cutover - timedelta(days=d)]
        if not started:
            return 0
        days = min(started)
        async with self.rt.db.sessions() as session:
            told = set((await session.execute(select(col(TransitionNotice.user_email)).where(
                col(TransitionNotice.eligibility) == e.name, col(TransitionNotice.days_before) == days))).scalars())
        sent = 0
        for s in await self.standing_members(e):
            email = s.user.email.lower()
            if s.kept or email in told or not s.user.direct:  # a nested group's access is not ended
                continue
            text = (f"Your standing access to {e.target.kind} {e.target.ref} ends on "
                    f"{e.transition.static_access_until:%Y-%m-%d}. From then on, request it when you need it "
                    f"with `/jit` (eligibility *{e.name}*).")
            try:
                async with self.rt.db.transaction() as session:
                    session.add(TransitionNotice(eligibility=e.name, user_email=email, days_before=days, sent_at=now))
                    await session.flush()  # the unique index makes a second replica's copy fail here
                    await append_event(session, at=now, kind="transition_notified", actor="jitbot",
                                       detail={"eligibility": e.name, "user": email, "days_before": days})
                    enqueue(session, at=now, order_key=f"transition:{e.name}", kind="transition_notice",
                            payload={"email": email, "eligibility": e.name, "text": text})
                sent += 1
            except IntegrityError:
                continue
        return sent

    async def _cut_over(self, e: Eligibility, now: datetime) -> int:
        assert e.transition is not None
        key = f"transition:{e.name}:{e.transition.static_access_until.isoformat()}"

        def take(value: kvstate.Value | None) -> kvstate.Value | None:
            if value is None or (value["state"] == "running"
                                 and datetime.fromisoformat(value["at"]) + LEASE < now):
                return {"state": "running", "by": self.rt.instance_id, "at": now.isoformat()}
            return None

        if await kvstate.compare_and_set(self.rt.db, key, take) is None:
            return 0
        removed, nested = await self._remove_standing(e, now)
        summary = (f"Transition of {e.name}: standing access to {e.target.kind} {e.target.ref} ended; "
                   f"{len(removed)} member(s) removed" + (f": {', '.join(removed)}" if removed else "")
                   + (f"; {len(nested)} hold it through a nested group, which jitbot does not change — remove "
                      f"them there: {', '.join(nested)}" if nested else "")
                   + f". Undo with `jitbot transition revert {e.name} --apply`.")

        async def finish(session: AsyncSession, _: kvstate.Value) -> None:
            await append_event(session, at=now, kind="transition_completed", actor="jitbot",
                               detail={"eligibility": e.name, "removed": removed})
            enqueue(session, at=now, order_key=AUDIT_LANE, kind="audit",
                    payload={"request": None, "event": "transition_completed", "actor": "jitbot", "text": summary})

        await kvstate.compare_and_set(self.rt.db, key, lambda _: {"state": "done", "at": now.isoformat(),
                                                                   "removed": len(removed)}, finish)
        return 1

    async def _remove_standing(self, e: Eligibility, now: datetime) -> tuple[list[str], list[str]]:
        """Remove the standing members; returns those removed, and those left because they hold the target
        only through a nested group (removing them from this group would not end it)."""
        target, conn = target_of(e), self.rt.connector(e.connector)
        async with self.rt.db.sessions() as session:
            already = set((await session.execute(select(col(TransitionRemoval.user_email)).where(
                col(TransitionRemoval.eligibility) == e.name, col(TransitionRemoval.restored_at).is_(None)))).scalars())
        removed, nested = [], []
        for s in await self.standing_members(e):
            email = s.user.email.lower()
            if s.kept or email in already:
                continue
            if not s.user.direct:
                nested.append(email)
                continue
            await conn.revoke(s.user, target, grant_id=f"transition-{e.name}")
            async with self.rt.db.transaction() as session:
                session.add(TransitionRemoval(eligibility=e.name, connector=e.connector, target_kind=target.kind.value,
                                              target_id=target.id, user_email=email, user_idp_id=s.user.id,
                                              removed_at=now))
                await append_event(session, at=now, kind="transition_removed", actor="jitbot",
                                   detail={"eligibility": e.name, "user": email, "target": str(target)})
            removed.append(email)
        return removed, nested

    async def revert(self, name: str, *, actor: str, apply: bool) -> list[TransitionRemoval]:
        """Everyone the cut-over of ``name`` removed (not yet restored); with ``apply`` they are re-added."""
        rt, now = self.rt, self.rt.clock.now()
        async with rt.db.sessions() as session:
            rows = list((await session.execute(select(TransitionRemoval).where(
                col(TransitionRemoval.eligibility) == name, col(TransitionRemoval.restored_at).is_(None))
                .order_by(col(TransitionRemoval.id)))).scalars())
        if not apply:
            return rows
        for row in rows:
            target = Target(TargetKind(row.target_kind), row.target_id)
            await rt.connector(row.connector).grant(IdpUser(id=row.user_idp_id, email=row.user_email), target,
                                                    grant_id=f"revert-{row.id}", expires_at=now + timedelta(days=3650))
            async with rt.db.transaction() as session:
                fresh = await session.get(TransitionRemoval, row.id)
                assert fresh is not None
                fresh.restored_at, fresh.restored_by = now, actor
                await append_event(session, at=now, kind="transition_reverted", actor=actor,
                                   detail={"eligibility": name, "user": row.user_email, "target": str(target)})
                enqueue(session, at=now, order_key=AUDIT_LANE, kind="audit",
                        payload={"request": None, "event": "transition_reverted", "actor": actor,
                                 "text": f"standing access to {target} restored for {row.user_email}"})
        return rows
