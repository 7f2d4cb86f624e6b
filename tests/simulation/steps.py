"""The steps a simulation interleaves, how the seeded scheduler picks them, and how each is carried out.

A step is plain data (``Step``: a kind and its arguments), so a run is its list of steps: printed on a
failure, replayed exactly by ``run_steps``, and shrunk by dropping steps. Steps name requests by the order
they were submitted (``#0`` is the first) and IdP calls by their position among those in flight; a step
whose request or call does not exist (in a shrunk replay) does nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bot.domain.requests import Decision, PolicyViolation
from bot.services.breakglass import BreakGlassService
from tests.simulation.idp import Outcome
from tests.simulation.model import ADMIN, APPROVERS, BUNDLE, ELIGIBILITIES, OUTSIDER, REQUESTERS
from tests.simulation.world import World


@dataclass(frozen=True)
class Step:
    kind: str
    args: tuple[Any, ...] = ()

    def __str__(self) -> str:
        return f"{self.kind}({', '.join(map(repr, self.args))})"


# How often each kind is picked where it means something (``_weights``: a kind that acts on a request
# is picked 1/8 as often while no request fits it, so the steps go mostly where the holes are; the
# rest keeps the wrong-person, wrong-layer and nothing-to-act-on paths in the mix).
WEIGHTS = {"submit": 14, "vote": 12, "answer": 14, "tick": 9, "advance": 6, "release": 7, "cancel": 4,
           "revoke": 5, "extend": 4, "reload": 2, "restart": 2, "drain": 4, "reconcile": 1, "breakglass": 3,
           "bundle": 4, "refuse": 1,  # bundles: a bundle request; an add the IdP refuses for good
           "outage": 1}  # jitbot stopped while time passes (past expiries): the IdP's expiry backstop
ON_REQUESTS = ("vote", "release", "cancel", "revoke", "extend")
OVERLAP = 0.5  # a submission joins a request already open on target x (same person, the other eligibility)


def _weights(world: World) -> dict[str, float]:
    n_req, pending = len(world.rids), len(world.idp.pending)
    out: dict[str, float] = {}
    for k, w in WEIGHTS.items():
        if k in ("answer", "refuse") and not pending or k in ON_REQUESTS and not n_req:
            continue
        out[k] = w / 8 if k in ON_REQUESTS and not _fits(world, k) else float(w)
    return out


def pick(rng: random.Random, world: World) -> Step:
    """The next step, from the seed's generator and what the world looks like now."""
    weights, pending = _weights(world), len(world.idp.pending)
    kind = rng.choices(list(weights), weights=list(weights.values()))[0]
    if kind == "breakglass":  # x-lead without its approval (break_glass: 1h)
        user = rng.choice(REQUESTERS) if rng.random() < 0.95 else OUTSIDER
        return Step(kind, (user, rng.choice([30, 60, 60, 120])))
    if kind == "submit":
        user = rng.choice(REQUESTERS) if rng.random() < 0.95 else OUTSIDER
        start = None if rng.random() < 0.55 else rng.choice([10, 60, 180])
        elig = rng.choices(ELIGIBILITIES, weights=[3, 2, 1])[0]  # x-auto and x-lead share a target
        open_x = [r for r in world.model.requests.values() if r.target == "group:x" and r.allowed
                  and r.ended_at is None]
        if open_x and rng.random() < OVERLAP:  # a second grant of the same membership
            other = rng.choice(open_x)
            user, elig = other.requester, "x-lead" if other.elig == "x-auto" else "x-auto"
        minutes = rng.choice([30, 60, 120, 240]) if rng.random() < 0.9 else 300  # 300: past max_duration
        return Step(kind, (user, elig, minutes, start))
    if kind == "bundle":
        user = rng.choice(REQUESTERS) if rng.random() < 0.95 else OUTSIDER
        start = None if rng.random() < 0.7 else rng.choice([10, 60])
        return Step(kind, (user, rng.choice([30, 60, 120, 300]), start))
    if kind == "refuse":  # an add (a removal refused for good is another story: the revocation alerts)
        adds = [i for i, c in enumerate(world.idp.pending) if c.op == "add"]
        return Step(kind, (rng.choice(adds) if adds else pending,))
    if kind == "answer":
        outcome = rng.choices(list(Outcome), weights=[8, 2, 1])[0]
        return Step(kind, (rng.randrange(pending), outcome.value))
    if kind == "advance":
        return Step(kind, (rng.choice([1, 5, 15, 45, 90, 200]),))
    if kind == "reload":
        removed = rng.sample(ELIGIBILITIES, k=rng.choice([0, 0, 1, 1, 2]))  # 0: the whole policy back
        return Step(kind, (tuple(sorted(removed)),))
    if kind == "restart":
        return Step(kind, (tuple(i for i in range(pending) if rng.random() < 0.5),))
    if kind in ("tick", "drain", "reconcile"):
        return Step(kind)
    if kind == "outage":
        return Step(kind, (rng.choice([30, 120, 600]),))
    # the rest act on a request: mostly one where the action means something (the model's view), else any
    idx = _request_for(rng, world, kind)
    rid = world.rids[idx]
    req = world.model.requests.get(rid)
    if kind == "vote":
        approver = rng.choice(APPROVERS) if rng.random() < 0.9 else (req.requester if req else ADMIN)
        layer = req.layer if req and rng.random() < 0.9 else rng.choice([1, 2])
        approve = rng.random() < 0.85
        if approve and req and rng.random() < 0.25:  # approve for less, or (forged) for more than stands
            minutes = int(req.duration.total_seconds() // 60)
            shorter = rng.choice([15, 30, 60, 120]) if rng.random() < 0.8 else minutes + rng.choice([1, 60])
            return Step(kind, (idx, layer, approver, approve, shorter))
        return Step(kind, (idx, layer, approver, approve))
    if kind == "extend":
        return Step(kind, (idx, rng.choice([30, 60, 240])))
    if kind in ("release", "cancel"):
        by = req.requester if req and rng.random() < 0.9 else OUTSIDER
        return Step(kind, (idx, by))
    return Step(kind, (idx,))  # revoke (by the admin)


def _fitting(world: World, kind: str) -> list[int]:
    reqs = [world.model.requests.get(rid) for rid in world.rids]
    if kind == "vote":
        return [i for i, r in enumerate(reqs) if r and r.allowed and r.approved_at is None and r.ended_at is None]
    # release, cancel, revoke, extend: approved and not ended (started or not)
    return [i for i, r in enumerate(reqs) if r and r.approved_at is not None and r.ended_at is None]


def _fits(world: World, kind: str) -> bool:
    return bool(_fitting(world, kind))


def _request_for(rng: random.Random, world: World, kind: str) -> int:
    fits = _fitting(world, kind)
    if fits and rng.random() < 0.85:
        return rng.choice(fits)
    return rng.randrange(len(world.rids))


async def apply(world: World, step: Step) -> str:
    """Carry out ``step``; returns what the services answered (for the trace)."""
    k, a = step.kind, step.args
    assert world.gen is not None
    if k == "tick":
        await world.tick()
        return ""
    if k == "advance":
        world.clock.advance(timedelta(minutes=a[0]))
        await world.settle()
        return ""
    if k == "answer":
        if a[0] >= len(world.idp.pending):
            return "no such call"
        call = world.idp.pending[a[0]]
        await world.answer(call, Outcome(a[1]))
        return f"{call.op} {call.membership[1]} {call.membership[0]} for {call.grant_id}"
    if k == "refuse":
        if a[0] >= len(world.idp.pending):
            return "no such call"
        call = world.idp.pending[a[0]]
        if call.op != "add":
            return "not an add"
        await world.refuse(call)
        return f"refused {call.op} {call.membership[1]} {call.membership[0]} for {call.grant_id}"
    if k == "bundle":
        return await _submit(world, a[0], BUNDLE, a[1], a[2])
    if k == "reload":
        await world.reload(frozenset(a[0]))
        return ""
    if k == "restart":
        pending = world.idp.pending
        await world.restart({pending[i].seq for i in a[0] if i < len(pending)})
        return ""
    if k == "drain":
        await world.drain()
        return ""
    if k == "reconcile":
        await world.reconcile()
        return ""
    if k == "outage":
        await world.outage(a[0])
        return f"{len(world.idp.expired)} ended by the IdP so far"
    if k == "breakglass":
        user, minutes = a
        g, now = world.g, world.clock.now()
        try:
            req = await BreakGlassService(g.rt).invoke(requester=user, eligibility="x-lead",
                                                       duration=timedelta(minutes=minutes), justification="simulated")
        except PolicyViolation as exc:
            await world.settle()
            return f"refused: {exc}"
        world.rids.append(req.id)
        world.model.submitted(req.id, requester=user, elig="x-lead", now=now, starts_at=None,
                              duration=timedelta(minutes=minutes), breakglass=True)
        await world.settle()
        return f"#{len(world.rids) - 1} = {req.id}"
    if k == "submit":
        return await _submit(world, *a)
    if a[0] >= len(world.rids):
        return "no such request"
    rid = world.rids[a[0]]
    return await _on_request(world, k, rid, a[1:])


async def _submit(world: World, user: str, elig: str, minutes: int, start: int | None) -> str:
    g, now = world.g, world.clock.now()
    starts_at = now + timedelta(minutes=start) if start else None
    try:
        req = await g.requests.submit(requester=user, eligibility=elig, duration=timedelta(minutes=minutes),
                                      justification="simulated", starts_at=starts_at)
    except PolicyViolation as exc:
        await world.settle()
        return f"refused: {exc}"
    world.rids.append(req.id)
    world.model.submitted(req.id, requester=user, elig=elig, now=now, starts_at=starts_at,
                          duration=timedelta(minutes=minutes))
    await world.settle()
    return f"#{len(world.rids) - 1} = {req.id}"


async def _on_request(world: World, k: str, rid: str, a: tuple[Any, ...]) -> str:
    g, model, now = world.g, world.model, world.clock.now()
    try:
        if k == "vote":
            layer, approver, approve = a[:3]
            minutes = a[3] if len(a) > 3 else None  # approve for this many minutes (shorter, or forged longer)
            await g.approvals.decide(request_id=rid, layer=layer, approver=approver,
                                     decision=Decision.APPROVE if approve else Decision.DENY,
                                     duration=timedelta(minutes=minutes) if minutes else None)
            model.voted(rid, layer=layer, approver=approver, approve=approve, now=now,
                        minutes=minutes)
            answer = "accepted"
        elif k == "extend":
            expiry = await g.worker.grants.extend(request_id=rid, actor=model.requests[rid].requester,
                                                  by=timedelta(minutes=a[0]))
            model.extended(rid, new_expiry=expiry)
            answer = f"until {expiry:%H:%M}"
        else:
            actor = ADMIN if k == "revoke" else a[0]
            must = model.must_end(rid, k, actor=actor, now=now)
            try:
                await _end(world, k, rid, actor)
            except PolicyViolation:
                if must:
                    model.ended(rid, now=now, by=f"{k} (refused by jitbot)")
                raise
            model.ended(rid, now=now, by=k)
            answer = "accepted"
    except PolicyViolation as exc:
        answer = f"refused: {exc}"
    await world.settle()
    return answer


async def _end(world: World, k: str, rid: str, actor: str) -> None:
    g = world.g
    if k == "cancel":
        await g.requests.cancel(request_id=rid, by=actor)
    elif k == "release":
        await g.worker.grants.end_early(request_id=rid, actor=actor, reason="released")
    else:
        await g.admin.revoke(actor=actor, request_id=rid)
