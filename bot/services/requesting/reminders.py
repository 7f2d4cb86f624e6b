"""Reminders and escalation of pending approvals, driven by due-time columns on ``access_request``.

* ``next_reminder_at``: the current layer's undecided approvers are DMed again, every
  ``remind_every`` of the layer, until someone decides or the layer lapses.
* ``escalate_at``: after ``escalate_after`` the layer's ``escalation`` set joins its approvers
  (``escalated`` becomes true; their decisions count from then on) and its new members are told why.

Each action is a compare-and-set: who is asked is worked out first (it may call the directory), then
one transaction locks the row, re-checks that the action is still due for the same layer, moves the
due time on and writes the event and the messages. A crash before that commit changes nothing (the
row stays due); two workers racing for one row act once (the second finds it no longer due).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from bot.domain.durations import format_duration
from bot.domain.requests import Status
from bot.domain.requests import eligible_approvers as layer_candidates
from bot.services import notices
from bot.services.requesting.approvals import layer_approvers
from bot.services.requesting.request_rows import load_request, load_votes
from bot.services.runtime import Runtime
from storage.tables import AccessRequest


async def due_request_ids(rt: Runtime, column: Any, now: datetime, *where: Any, limit: int = 200) -> list[str]:
    """Ids of requests whose ``column`` is due (read without a lock; acting re-checks under one)."""
    async with rt.db.sessions() as session:
        stmt = select(AccessRequest.id).where(column <= now, *where).order_by(column).limit(limit)
        return list((await session.execute(stmt)).scalars().all())


class ReminderService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt

    async def run_reminders(self, limit: int = 200) -> int:
        """Re-DM the undecided approvers of every request whose reminder is due; returns how many."""
        rt, now = self.rt, self.rt.clock.now()
        done = 0
        pending = AccessRequest.status == Status.PENDING.value
        for request_id in await due_request_ids(rt, AccessRequest.next_reminder_at, now, pending, limit=limit):
            async with rt.db.sessions() as session:
                req = await load_request(session, request_id)
                voters = [v.approver for v in await load_votes(session, request_id)]
            layer = req.layer
            people = await layer_approvers(rt, req, layer, voters)
            async with rt.db.transaction() as session:
                req = await load_request(session, request_id, lock=True)
                if (req.status != Status.PENDING.value or req.layer != layer or req.next_reminder_at is None
                        or req.next_reminder_at > now):
                    continue
                elig = rt.eligibility(req.eligibility)
                spec = elig.approvals[layer - 1] if elig and 1 <= layer <= len(elig.approvals) else None
                req.next_reminder_at = now + spec.remind_every if spec and spec.remind_every else None
                votes = await load_votes(session, req.id)
                undecided = sorted(people - {v.approver for v in votes})
                if not undecided:
                    continue
                waited = format_duration(now - (req.updated_at if req.layer > 1 else req.created_at))
                snap = notices.describe(rt, req, votes)
                await notices.record(rt, session, at=now, kind="reminded", actor=notices.SYSTEM, req=req, snap=snap,
                                     detail={"layer": layer, "approvers": undecided},
                                     text=f"reminded {len(undecided)} approver(s) of layer {layer}")
                notices.ask_layer(session, at=now, snap=snap, layer=layer, spec=spec, approvers=undecided,
                                      note=f"Reminder: this request has waited {waited} for a decision.")
                done += 1
        return done

    async def run_escalations(self, limit: int = 200) -> int:
        """Add each due layer's escalation set to its approvers and tell them why; returns how many."""
        rt, now = self.rt, self.rt.clock.now()
        done = 0
        pending = AccessRequest.status == Status.PENDING.value
        for request_id in await due_request_ids(rt, AccessRequest.escalate_at, now, pending, limit=limit):
            async with rt.db.sessions() as session:
                req = await load_request(session, request_id)
                voters = [v.approver for v in await load_votes(session, request_id)]
            layer, elig = req.layer, rt.eligibility(req.eligibility)
            spec = elig.approvals[layer - 1] if elig and 1 <= layer <= len(elig.approvals) else None
            added: set[str] = set()
            if spec is not None and spec.escalation is not None:
                asked = await rt.directory.expand(rt.policy, spec.approver_set(after_hours=req.after_hours))
                joining = await rt.directory.expand(rt.policy, spec.escalation)
                added = layer_candidates(joining - asked, requester=req.requester, earlier_approvers=voters,
                                         submitter=req.submitted_by)
            async with rt.db.transaction() as session:
                req = await load_request(session, request_id, lock=True)
                if (req.status != Status.PENDING.value or req.layer != layer or req.escalate_at is None
                        or req.escalate_at > now):
                    continue
                req.escalate_at, req.updated_at, req.version = None, now, req.version + 1
                if spec is None or spec.escalation is None or spec.escalate_after is None:
                    continue  # the policy changed meanwhile: nothing to escalate to
                req.escalated = True
                votes = await load_votes(session, req.id)
                snap = notices.describe(rt, req, votes)
                waited = format_duration(spec.escalate_after)
                who = ", ".join([*spec.escalation.groups, *spec.escalation.users])
                await notices.record(rt, session, at=now, kind="escalated", actor=notices.SYSTEM, req=req, snap=snap,
                                     detail={"layer": layer, "escalation": who, "added": sorted(added)},
                                     text=f"escalated layer {layer} to {who} after {waited} without a decision")
                notices.ask_layer(session, at=now, snap=snap, layer=layer, spec=spec, approvers=sorted(added),
                                  note=f"Escalated to you ({who}): layer {layer} has had no decision for "
                                       f"{waited}.", escalation=True)
                if not added:
                    notices.alert(session, at=now, snap=snap,
                                  text=f"{req.id}: layer {layer} escalated to {who}, but nobody new can decide it.")
                done += 1
        return done
