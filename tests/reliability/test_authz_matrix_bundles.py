"""The authorisation matrix for bundles, through the real Bolt app (helpers of test_authz_matrix.py).

A bundle of ``prod-admin`` (two layers: leads, then security) and ``readonly`` (none): the bundle's own
request (``head``) carries prod-admin; readonly is a request of its own (``member``) made at approval.
Every action by every role on either request, in each state, is forged as a Slack click or command;
only the cells in ``ALLOWED`` may change anything (rows, events, outbox, statuses, expiries, either
membership), the others must change nothing and answer clearly. An allowed end of either request ends
the whole bundle (released together, revoked together). The same matrix holds for the ad-hoc bundle of
the same two (``prod-admin+readonly``, picked together in the /jit modal; prod-admin without its ticket
rule there, since an item that needs a ticket cannot be picked with others).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bot.domain.requests import Decision, PolicyViolation
from bot.services.clock import ManualClock
from storage.tables import AccessRequest, ApprovalVote, Event, Grant, OutboxMessage
from tests.conftest import POLICY, DbFactory
from tests.reliability.test_authz_matrix import ROLES, STRANGER, Snapshot, _act, _answers
from tests.slack.harness import Env, slack_env

BUNDLE_POLICY = POLICY.rstrip() + """
  - name: ops-bundle
    description: Admin and console
    bundle: [prod-admin, readonly]
    default_duration: 1h
"""
ADHOC_POLICY = POLICY.replace("    require_ticket: true\n", "", 1)
VARIANTS = {"policy": (BUNDLE_POLICY, "ops-bundle", "OPS-1"), "adhoc": (ADHOC_POLICY, "prod-admin+readonly", None)}
STATES = ("pending1", "pending2", "active")
ACTIONS = ("approve", "deny", "extend", "release", "cancel", "admin_revoke")
ALLOWED = {
    ("approve", "approver1", "pending1", "head"), ("approve", "approver2", "pending2", "head"),
    ("deny", "approver1", "pending1", "head"), ("deny", "approver2", "pending2", "head"),
    ("cancel", "requester", "pending1", "head"), ("cancel", "requester", "pending2", "head"),
    ("extend", "requester", "active", "head"),  # by the bundle's default (1h), within its maximum (4h)
    # readonly's own Extend step (its default, 4h) is past its maximum: refused, as for readonly alone
    *((a, r, "active", which) for which in ("head", "member")
      for a, r in (("release", "requester"), ("admin_revoke", "admin"))),
}


class BundleWorld:
    def __init__(self, env: Env, state: str, eligibility: str = "ops-bundle", ticket: str | None = "OPS-1") -> None:
        self.env, self.state, self.head, self.member, self.layer = env, state, "", "", 1
        self.eligibility, self.ticket = eligibility, ticket

    async def fresh(self) -> None:
        env, st = self.env, self.env.stack
        if self.head:
            async with st.rt.db.sessions() as s:
                old = (await s.execute(select(AccessRequest).where(AccessRequest.id == self.head))).scalar_one()
            if old.status == "pending":
                await st.requests.cancel(request_id=self.head, by="alice@example.com")
            await env.settle()
            for rid in (self.head, self.member):
                with contextlib.suppress(PolicyViolation):
                    await st.grants.end_early(request_id=rid, actor="alice@example.com", reason="released")
            await env.settle()
            await env.settle()
        req = await st.requests.submit(requester="alice@example.com", requester_slack="U1ALICE",
                                       eligibility=self.eligibility, duration=timedelta(hours=1),
                                       justification="deploy", ticket=self.ticket)
        self.head, self.member, self.layer = req.id, "", 1
        if self.state != "pending1":
            await st.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com",
                                      decision=Decision.APPROVE)
            self.layer = 2
        if self.state == "active":
            await st.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com",
                                      decision=Decision.APPROVE)
        await env.settle()
        async with st.rt.db.sessions() as s:
            self.member = (await s.execute(select(AccessRequest.id).where(  # type: ignore[call-overload]
                AccessRequest.bundle_id == req.id, AccessRequest.id != req.id))).scalar() or ""


class _Target:
    """What ``_act`` reads of its world: the request acted on and the open layer."""

    def __init__(self, rid: str, layer: int) -> None:
        self.rid, self.layer = rid, layer


async def _snapshot(env: Env, w: BundleWorld) -> Snapshot:
    async with env.stack.rt.db.sessions() as s:
        out: Snapshot = {m.__name__: int((await s.execute(select(func.count()).select_from(m))).scalar() or 0)
                         for m in (AccessRequest, ApprovalVote, Event, Grant, OutboxMessage)}
        for name, rid in (("head", w.head), ("member", w.member)):
            req = (await s.execute(select(AccessRequest).where(AccessRequest.id == rid))).scalar_one_or_none()
            out[name] = (req.status, req.layer) if req else None
            grants = (await s.execute(select(Grant).where(Grant.request_id == rid))).scalars().all()
            out[f"{name}_grants"] = sorted((g.status, str(g.expires_at)) for g in grants)
    out["members"] = (await env.stack.is_member("alice@example.com", "prod-admins"),
                      await env.stack.is_member("alice@example.com", "readonly"))
    return out


async def _run(env: Env, state: str, eligibility: str = "ops-bundle", ticket: str | None = "OPS-1") -> list[str]:
    env.slack.add_user(STRANGER, "mallory", real_name="Mallory", email="mallory@example.com")
    w = BundleWorld(env, state, eligibility, ticket)
    await w.fresh()
    problems: list[str] = []
    for which in ("head", "member") if state == "active" else ("head",):
        for action in ACTIONS:
            for role, user in ROLES.items():
                cell = (action, role, state, which)
                before = await _snapshot(env, w)
                told_before = len(_answers(env, user))
                target = _Target(w.head if which == "head" else w.member, w.layer)
                errors = await _act(env, target, action, user)  # type: ignore[arg-type]
                if cell in ALLOWED:
                    await env.settle()
                    await env.settle()
                after = await _snapshot(env, w)
                told = _answers(env, user)[told_before:] + errors
                if cell in ALLOWED:
                    if after == before:
                        problems.append(f"{cell}: allowed but nothing changed")
                    if action in ("release", "admin_revoke") and after["members"] != (False, False):
                        problems.append(f"{cell}: the bundle was not ended together: {after['members']}")
                    await w.fresh()
                else:
                    if after != before:
                        diff = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
                        problems.append(f"{cell}: refused action changed {diff}")
                    if not told or not all(t and "Traceback" not in t and len(t) < 600 for t in told):
                        problems.append(f"{cell}: no clear answer ({told})")
    return problems


@pytest.mark.parametrize("db_factory", ["sqlite"], indirect=True)  # authorisation, not the database
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_only_the_allowed_cells_change_a_bundle(db_factory: DbFactory, clock: ManualClock, state: str,
                                                      variant: str) -> None:
    policy, eligibility, ticket = VARIANTS[variant]
    async with slack_env(db_factory(), policy, clock) as env:
        problems = await _run(env, state, eligibility, ticket)
    assert not problems, "\n".join(problems)
