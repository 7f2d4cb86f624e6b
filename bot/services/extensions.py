"""Extending active access: within ``max_duration`` at once, beyond it through the approval layers again.

*Extend* (the expiry warning, App Home) adds the eligibility's ``default_duration``, decided here on
the server (a click carries only the request id). While the total stays within ``max_duration`` the
grant is extended at once (``GrantService.extend``). Beyond it, with ``extension.reapproval: true``,
an **extension request** is made: an ``AccessRequest`` of kind ``extension`` whose ``parent_id`` is
the original request and whose ``duration_s`` is the extra time. It goes through the eligibility's
approval layers as any request does (``ApprovalService.decide``: never its requester or submitter,
one person one layer, approvers resolved under the policy in force at each click, step-up and on-call
rules of the layers), and must be decided before the access it extends ends — its deadline is capped
at that expiry, so it lapses then. Approval moves the expiry (``bot/services/requesting/extension_apply.py``);
denial, cancellation or lapse leave it untouched. One extension of a grant waits at a time, and
break-glass access is never extended.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, func, select

from bot.domain.durations import format_duration
from bot.domain.policy import Eligibility
from bot.domain.requests import BREAKGLASS, EXTENSION, PolicyViolation, Status
from bot.domain.requests import eligible_approvers as layer_candidates
from bot.services import notices
from bot.services.access.grants import GrantService
from bot.services.context.on_call import OnCallOutcome, check_on_call, record_on_call, request_context
from bot.services.policy_version import require_current, under_current_policy
from bot.services.requesting.final_approval import approve_final
from bot.services.requesting.request_rows import check_grant_seen, load_request, read_request, seeing_its_grant
from bot.services.requesting.requests import open_layer
from bot.services.runtime import Runtime, new_id
from storage.records import Unit, build
from storage.tables import AccessRequest, Grant

_GRANTS, _REQUESTS = Grant.__table__, AccessRequest.__table__  # type: ignore[attr-defined]
_ACTIVE_GRANT_LOCKED = select(_GRANTS).where(_GRANTS.c.request_id == bindparam("b_request"),
                                             _GRANTS.c.status == "active").with_for_update()
# An extension of the request still waiting for approval (at most one: checked under the parent's lock).
_PENDING_EXTENSION = select(_REQUESTS.c.id).where(
    _REQUESTS.c.parent_id == bindparam("b_parent"), _REQUESTS.c.kind == EXTENSION,
    _REQUESTS.c.status == Status.PENDING.value)
_COUNT_PENDING = select(func.count()).select_from(_REQUESTS).where(
    _REQUESTS.c.parent_id == bindparam("b_parent"), _REQUESTS.c.status == Status.PENDING.value)


@dataclass(frozen=True)
class ExtendOutcome:
    """What an Extend click did: ``expires_at`` moved at once, or ``request`` waits for approval."""

    request_id: str
    expires_at: datetime | None = None
    request: AccessRequest | None = None

    @property
    def message(self) -> str:
        if self.request is not None:
            r = self.request
            return (f"{r.parent_id} would go past its maximum, so the extra "
                    f"{format_duration(timedelta(seconds=r.duration_s))} needs approval again: extension "
                    f"request {r.id} is waiting for layer {r.layer} of {r.layers}. Your access is unchanged until "
                    "it is approved.")
        assert self.expires_at is not None
        return f"Extended {self.request_id} until {self.expires_at:%Y-%m-%d %H:%M} UTC."


def beyond_maximum(elig: Eligibility, grant: Grant, by: timedelta) -> bool:
    """Whether extending ``grant`` by ``by`` would take its total past the eligibility's maximum."""
    assert grant.granted_at is not None and grant.expires_at is not None
    return grant.expires_at + by - grant.granted_at > elig.max_duration


class ExtensionService:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.grants = GrantService(rt)

    async def extend(self, *, request_id: str, actor: str, actor_slack: str | None = None) -> ExtendOutcome:
        """The requester's *Extend*: by the eligibility's ``default_duration``, at once within the maximum,
        else (``extension.reapproval``) as an extension request. Raises PolicyViolation (user-facing)."""
        rt, actor = self.rt, actor.strip().lower()
        async with rt.db.sessions() as session:
            req = await load_request(session, request_id)
            grant = (await session.execute(select(Grant).where(Grant.request_id == request_id,
                                                                Grant.status == "active"))).scalar_one_or_none()
            waiting = (await session.execute(_PENDING_EXTENSION, {"b_parent": request_id})).scalars().first()
        if req.requester != actor:
            raise PolicyViolation("Only the requester can extend this access.")
        if waiting is not None:
            raise PolicyViolation(f"An extension of {request_id} is already waiting for approval ({waiting}).")
        elig = rt.eligibility(req.eligibility)
        if elig is None:
            raise PolicyViolation("This access is no longer in the policy.")
        by = elig.default
        if (req.kind == EXTENSION or req.kind == BREAKGLASS or not elig.extension.reapproval or grant is None
                or grant.granted_at is None or grant.expires_at is None or not beyond_maximum(elig, grant, by)):
            # within the maximum, or refused there with its reason (break-glass, not active, the maximum)
            return ExtendOutcome(request_id, expires_at=await self.grants.extend(request_id=request_id, actor=actor,
                                                                                 by=by))
        return ExtendOutcome(request_id, request=await self.ask(request_id=request_id, actor=actor, by=by,
                                                    actor_slack=actor_slack))

    async def ask(self, *, request_id: str, actor: str, by: timedelta, actor_slack: str | None = None) -> AccessRequest:
        """An extension request for ``by`` more of ``request_id``'s active access, through the approval
        layers (``extension.reapproval``). Raises PolicyViolation (user-facing)."""
        return await under_current_policy(self.rt.follower, functools.partial(
            self._ask, request_id=request_id, actor=actor.strip().lower(), by=by, actor_slack=actor_slack))

    async def _ask(self, *, request_id: str, actor: str, by: timedelta, actor_slack: str | None) -> AccessRequest:
        rt, policy, seen = self.rt, self.rt.policy, self.rt.decision_version
        async with rt.db.sessions() as session:
            parent = await load_request(session, request_id)
        elig = _checked(rt, parent, actor, by)
        # I/O before the transaction: on-call (may pass leading layers) and the first layer's approvers.
        on_call = await check_on_call(rt, elig, parent.requester)
        first_layer, first = on_call.layers_passed + 1, set[str]()
        now, after_hours = rt.clock.now(), policy.after_hours(rt.clock.now())
        if first_layer <= len(elig.approvals):
            spec = elig.approvals[first_layer - 1]
            first = layer_candidates(await rt.directory.expand(policy, spec.approver_set(after_hours=after_hours)),
                                     requester=parent.requester, earlier_approvers=(), submitter=parent.submitted_by)
            if len(first) < spec.min_approvals:
                raise PolicyViolation(f"Nobody other than you can approve layer {first_layer} of {elig.name}; "
                                      "ask an administrator to fix the approver group.")
        return await seeing_its_grant(functools.partial(
            self._store, request_id=request_id, actor=actor, by=by, actor_slack=actor_slack, elig=elig,
            on_call=on_call, first_layer=first_layer, first=first, now=now, after_hours=after_hours, seen=seen))

    async def _store(self, last: bool, *, request_id: str, actor: str, by: timedelta, actor_slack: str | None,
                     elig: Eligibility, on_call: OnCallOutcome, first_layer: int, first: set[str], now: datetime,
                     after_hours: bool, seen: int | None) -> AccessRequest:
        """``_ask``'s transaction: the extension request, its audit event and its notices."""
        rt = self.rt
        async with rt.db.core_transaction() as tx:
            await require_current(tx, seen)
            unit = Unit(tx)
            # the grant's row before the request's (docs/architecture.md); the parent's lock: one extension
            # decision at a time
            grant = await unit.first(Grant, _ACTIVE_GRANT_LOCKED, {"b_request": request_id})
            parent = await read_request(unit, request_id, lock=True)
            check_grant_seen(parent, grant, last=last)  # made active since it was read: once more
            if parent.status != Status.ACTIVE.value or grant is None or grant.expires_at is None \
                    or grant.expires_at <= now:
                raise PolicyViolation(f"{request_id} has no active access to extend.")
            if (await tx.scalars(_COUNT_PENDING, {"b_parent": request_id}))[0]:
                raise PolicyViolation(f"An extension of {request_id} is already waiting for approval.")
            context = request_context(None, on_call) or {}
            context["extends"] = {"request": parent.id, "grant": grant.id, "until": grant.expires_at.isoformat(),
                                  "by_s": int(by.total_seconds())}
            req = build(AccessRequest,
                id=new_id("R"), eligibility=elig.name, kind=EXTENSION, parent_id=parent.id,
                requester=parent.requester, requester_slack=parent.requester_slack or actor_slack,
                submitted_by=parent.submitted_by, submitted_by_slack=parent.submitted_by_slack,
                duration_s=int(by.total_seconds()), justification=parent.justification, ticket=parent.ticket,
                status=Status.PENDING.value, layer=1, layers=len(elig.approvals), created_at=now, updated_at=now,
                context=context, ends_by=on_call.ends_by)
            if first_layer <= len(elig.approvals):
                open_layer(req, elig, first_layer, now, after_hours=after_hours)
            unit.add(req)
            snap = notices.describe(rt, req)
            text = (f"asked to extend {parent.id} by {format_duration(by)} (beyond {format_duration(elig.max_duration)}"
                    f" in total): approval needed; access still ends {grant.expires_at:%Y-%m-%d %H:%M} UTC")
            await notices.record(rt, tx, at=now, kind="extension_requested", actor=actor, req=req, snap=snap,
                                 to_state=Status.PENDING.value, text=text,
                                 detail={"extends": parent.id, "grant": grant.id, "by": format_duration(by),
                                         "expires_at": grant.expires_at.isoformat()})
            if on_call.checked:
                await record_on_call(rt, tx, at=now, req=req, snap=snap, outcome=on_call)
            if first_layer <= len(elig.approvals):
                notices.tell_requester(tx, at=now, snap=snap, event="submitted",
                                       text=f"Your extension {req.id} of {parent.id} ({elig.name}, "
                                            f"+{format_duration(by)}) is waiting for approval (layer {first_layer} "
                                            f"of {len(elig.approvals)}). Your access still ends "
                                            f"{grant.expires_at:%Y-%m-%d %H:%M} UTC unless it is approved before.")
                notices.ask_approvers(tx, at=now, snap=snap, layer=first_layer, approvers=sorted(first))
            else:  # every layer passed by on-call, as a request would be
                await approve_final(rt, unit, req, elig, actor=notices.SYSTEM, auto=True,
                                                       text="approved: the requester is on call")
            await unit.flush()
        return req


def _checked(rt: Runtime, parent: AccessRequest, actor: str, by: timedelta) -> Eligibility:
    """The checks that need no I/O: who asks, what is extended, by how much. Raises PolicyViolation."""
    if parent.requester != actor:
        raise PolicyViolation("Only the requester can extend this access.")
    if parent.kind == BREAKGLASS:
        raise PolicyViolation("Break-glass access cannot be extended. If you still need it, use /jit breakglass "
                              "again (a new alert and review) or request it with /jit.")
    if parent.kind != "access":
        raise PolicyViolation(f"{parent.id} is an extension request; extend the access itself "
                              f"({parent.parent_id}).")
    elig = rt.eligibility(parent.eligibility)
    if elig is None:
        raise PolicyViolation("This access is no longer in the policy.")
    if not elig.extension.allowed:
        raise PolicyViolation(f"{elig.name} does not allow extensions.")
    if not elig.extension.reapproval:
        raise PolicyViolation(f"{elig.name} allows no extension beyond {format_duration(elig.max_duration)}.")
    if parent.status != Status.ACTIVE.value:
        raise PolicyViolation(f"Only active access can be extended; {parent.id} is {parent.status}.")
    if not timedelta(0) < by <= elig.max_duration:
        raise PolicyViolation(f"An extension must be longer than zero and at most "
                              f"{format_duration(elig.max_duration)}.")
    return elig
