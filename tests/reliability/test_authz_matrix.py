"""The authorisation matrix: every action, by every role, on every state, through the real Bolt app.

Each cell forges the click (or submits the modal, or types the command) as that role against a
request in that state, then compares everything that records a change — rows of every table,
events, outbox messages, the request's status, the grant's expiry and the IdP membership. Only the
cells in ``ALLOWED`` may change anything; every other cell must change nothing and answer clearly
(an ephemeral message, an inline modal error, or a message in the App Home case).
"""

from __future__ import annotations

import contextlib
import time
from datetime import timedelta
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from bot.domain.requests import Decision, PolicyViolation
from bot.services.clock import ManualClock
from bot.services.extensions import ExtensionService
from bot.slack import ids
from storage.tables import AccessRequest, ApprovalVote, Event, Grant, OutboxMessage
from tests.conftest import DbFactory
from tests.services.stack import Stack
from tests.slack.harness import Env, slack_env

STRANGER = "U7MALLORY"
ROLES = {"requester": "U1ALICE", "approver1": "U2BOB", "approver2": "U4DAVE", "admin": "U6ROOT",
         "stranger": STRANGER}
EMAIL = {"U1ALICE": "alice@example.com", "U2BOB": "bob@example.com", "U4DAVE": "dave@example.com",
         "U6ROOT": "root@example.com", STRANGER: "mallory@example.com"}
# active_max: held for prod-admin's 8h maximum, so Extend asks for approval again (extension.reapproval);
# ext_pending1/2: that extension request (its id is the one clicked), waiting at layer 1 / 2.
STATES = ("pending1", "pending2", "active", "expired", "denied", "active_max", "ext_pending1", "ext_pending2")
CHANNEL = "C0APPROVALS"  # layer 1 of prod-admin is also posted here (notify: both)
LAYER1 = "      - approvers: {groups: [leads]}\n"
ACTIONS = ("approve", "approve_for", "approve_forged", "channel_approve", "channel_approve_for", "channel_deny",
           "deny", "extend", "release", "cancel", "admin_revoke",
           "home_approve", "home_release", "home_cancel", "home_extend")
ALLOWED = {
    ("approve", "approver1", "pending1"), ("approve", "approver2", "pending2"),
    ("approve_for", "approver1", "pending1"), ("approve_for", "approver2", "pending2"),  # 30m of the 1h asked
    # "approve_forged" (a crafted menu value longer than the request) is allowed to nobody
    # clicks on layer 1's message in its channel: only layer 1's approvers, only while layer 1 is open (in
    # pending2 the click is on the old layer's message)
    ("channel_approve", "approver1", "pending1"), ("channel_approve_for", "approver1", "pending1"),
    ("channel_deny", "approver1", "pending1"),
    ("home_approve", "approver1", "pending1"), ("home_approve", "approver2", "pending2"),
    ("deny", "approver1", "pending1"), ("deny", "approver2", "pending2"),
    ("cancel", "requester", "pending1"), ("cancel", "requester", "pending2"),
    ("home_cancel", "requester", "pending1"), ("home_cancel", "requester", "pending2"),
    ("extend", "requester", "active"), ("home_extend", "requester", "active"),
    ("release", "requester", "active"), ("home_release", "requester", "active"),
    ("admin_revoke", "admin", "active"),
    ("extend", "requester", "active_max"), ("home_extend", "requester", "active_max"),
    ("release", "requester", "active_max"), ("home_release", "requester", "active_max"),
    ("admin_revoke", "admin", "active_max"),
    ("approve", "approver1", "ext_pending1"), ("approve", "approver2", "ext_pending2"),
    ("home_approve", "approver1", "ext_pending1"), ("home_approve", "approver2", "ext_pending2"),
    ("deny", "approver1", "ext_pending1"), ("deny", "approver2", "ext_pending2"),
    # an extension's layer 1 is asked where the layer says (here also the channel); it is approved or denied
    # as it is: its extra time is the policy's, so no approval for less (a menu value is refused)
    ("channel_approve", "approver1", "ext_pending1"), ("channel_deny", "approver1", "ext_pending1"),
    ("cancel", "requester", "ext_pending1"), ("cancel", "requester", "ext_pending2"),
    ("home_cancel", "requester", "ext_pending1"), ("home_cancel", "requester", "ext_pending2"),
}

Snapshot = dict[str, object]


async def _snapshot(env: Env, rid: str) -> Snapshot:
    async with env.stack.rt.db.sessions() as s:
        out: Snapshot = {m.__name__: int((await s.execute(select(func.count()).select_from(m))).scalar() or 0)
                         for m in (AccessRequest, ApprovalVote, Event, Grant, OutboxMessage)}
        req = (await s.execute(select(AccessRequest).where(AccessRequest.id == rid))).scalar_one()
        out["status"], out["layer"] = req.status, req.layer
        of = [rid, req.parent_id] if req.parent_id else [rid]  # an extension: the grant it would extend
        grants = (await s.execute(select(Grant).where(Grant.request_id.in_(of)))).scalars().all()  # type: ignore[attr-defined]
        out["grants"] = sorted((g.status, str(g.expires_at)) for g in grants)
    out["member"] = await env.stack.is_member("alice@example.com", "prod-admins")
    return out


class World:
    """One request at a time in the wanted state; a new one once an allowed action used it up."""

    def __init__(self, env: Env, state: str) -> None:
        self.env, self.state, self.rid, self.parent = env, state, "", ""

    async def fresh(self) -> str:
        env, st = self.env, self.stack
        if self.parent:  # an extension state: its request first, then the access it extends
            async with st.rt.db.sessions() as s:
                old = (await s.execute(select(AccessRequest).where(AccessRequest.id == self.rid))).scalar_one()
            if old.status == "pending":
                await st.requests.cancel(request_id=self.rid, by="alice@example.com")
            self.rid, self.parent = self.parent, ""
        if self.rid:  # an allowed action that failed to act leaves it pending: clear it, go on
            async with st.rt.db.sessions() as s:
                old = (await s.execute(select(AccessRequest).where(AccessRequest.id == self.rid))).scalar_one()
            if old.status == "pending":
                await st.requests.cancel(request_id=self.rid, by="alice@example.com")
            if old.status in ("approved", "active"):  # one at a time per eligibility: this one ends first
                await env.settle()
                with contextlib.suppress(PolicyViolation):  # unless the action already ended it
                    await st.grants.end_early(request_id=self.rid, actor="alice@example.com", reason="released")
                await env.settle()
        hours = 1 if self.base == self.state else 8  # at the maximum: Extend needs approval again
        req = await st.requests.submit(requester="alice@example.com", requester_slack="U1ALICE",
                                       eligibility="prod-admin", duration=timedelta(hours=hours),
                                       justification="deploy", ticket="OPS-1")
        if self.base != "pending1":
            decision = Decision.DENY if self.state == "denied" else Decision.APPROVE
            await st.approvals.decide(request_id=req.id, layer=1, approver="bob@example.com", decision=decision,
                                      reason="no" if self.state == "denied" else None)
        if self.base in ("active", "expired"):
            await st.approvals.decide(request_id=req.id, layer=2, approver="dave@example.com",
                                      decision=Decision.APPROVE)
        await env.settle()
        if self.state == "expired":
            env.clock.advance(timedelta(hours=2))
            await env.settle()
        self.rid = req.id
        if self.state.startswith("ext_"):
            x = await ExtensionService(st.rt).ask(request_id=req.id, actor="alice@example.com", by=timedelta(hours=2))
            if self.state == "ext_pending2":
                await st.approvals.decide(request_id=x.id, layer=1, approver="bob@example.com",
                                          decision=Decision.APPROVE)
            await env.settle()
            self.rid, self.parent = x.id, req.id
        return self.rid

    @property
    def base(self) -> str:
        """The state of the access request: an extension's is active."""
        return "active" if self.state in ("active_max", "ext_pending1", "ext_pending2") else self.state

    @property
    def stack(self) -> Stack:
        return self.env.stack

    @property
    def layer(self) -> int:
        return 2 if self.state in ("pending2", "ext_pending2") else 1


def _click_payload(env: Env, user: str, action_id: str, value: str, *, home: bool,
                   channel: str | None = None) -> dict[str, Any]:
    action: dict[str, Any] = {"action_id": action_id, "block_id": "b", "type": "button", "value": value,
                              "action_ts": str(time.time())}
    if action_id == ids.APPROVE_FOR:  # a static_select: the choice, no value of its own
        action = {"action_id": action_id, "block_id": "b", "type": "static_select", "action_ts": str(time.time()),
                  "selected_option": {"text": {"type": "plain_text", "text": "Approve for …"}, "value": value}}
    base = {**env.sender._base("block_actions", user), "trigger_id": env.slack.issue_trigger(user),
            "actions": [action]}
    if home:
        home_view = env.slack.home(user)
        view = home_view.to_api() if home_view else {"id": "V0HOME", "type": "home", "blocks": []}
        return {**base, "container": {"type": "view", "view_id": view["id"]}, "view": view}
    im = channel or env.slack.state.im_for(user).id
    ctx = {"channel": im, "user": user, "kind": "block_actions", "message_ts": "1.000001"}
    return {**base, "container": {"type": "message", "message_ts": "1.000001", "channel_id": im,
                                  "is_ephemeral": False},
            "channel": {"id": im, "name": "prod-approvals" if channel else "directmessage"}, "state": {"values": {}},
            "response_url": env.slack.issue_response_url(**ctx)}


def _answers(env: Env, user: str) -> list[str]:
    """Everything jitbot told ``user`` privately: response_url posts, ephemerals, DMs, modal errors."""
    out = [str(p.body.get("text", "")) for p in env.slack.response_posts() if p.context.get("user") == user]
    out += [e.text for e in env.slack.ephemerals(user)]
    out += [m.text for m in env.slack.dm_messages(user)]
    return out


async def _act(env: Env, w: World, action: str, user: str) -> list[str]:
    """Perform ``action`` as ``user`` on the world's request; returns inline errors (deny modal), if any."""
    rid, sender = w.rid, env.sender
    value = f"{rid}:{w.layer}" if "approve" in action or action == "deny" else rid
    if action == "admin_revoke":
        res = await sender.command(user, f"admin revoke {rid}")
        assert res.status == 200
        return []
    where = CHANNEL if action.startswith("channel_") else None
    if where:  # the click comes from layer 1's message in the channel, whatever layer is open now
        action, value = action.removeprefix("channel_"), f"{rid}:1"
    if action == "deny":
        res = await sender.post_payload(_click_payload(env, user, ids.DENY, value, home=False, channel=where))
        assert res.status == 200
        modal = env.slack.modal_stack(user)[-1]
        assert modal.body.get("callback_id") == ids.DENY_VIEW
        res = await sender.submit_view(user, modal.id, {ids.A_REASON: "not now"})
        assert res.status == 200
        body = res.body if isinstance(res.body, dict) else {}
        env.slack.state.modal_stacks.pop(user, None)
        return [str(v) for v in (body.get("errors") or {}).values()]
    if action.startswith("approve_for"):
        seconds = 1800 if action == "approve_for" else 86400  # the forged one: a day, of the 1h asked
        res = await sender.post_payload(_click_payload(env, user, ids.APPROVE_FOR, f"{value}:{seconds}", home=False,
                                                       channel=where))
        assert res.status == 200, res.body
        return []
    home = action.startswith("home_")
    action_id = {"approve": ids.APPROVE, "extend": ids.EXTEND, "release": ids.RELEASE,
                 "cancel": ids.CANCEL}[action.removeprefix("home_")]
    res = await sender.post_payload(_click_payload(env, user, action_id, value, home=home, channel=where))
    assert res.status == 200, res.body
    return []


async def _run_matrix(env: Env, state: str) -> list[str]:
    env.slack.add_user(STRANGER, "mallory", real_name="Mallory", email="mallory@example.com")
    env.slack.add_channel(CHANNEL, "prod-approvals", members=[*ROLES.values()])
    w = World(env, state)
    await w.fresh()
    problems: list[str] = []
    for action in ACTIONS:
        for role, user in ROLES.items():
            cell = (action, role, state)
            before = await _snapshot(env, w.rid)
            told_before = len(_answers(env, user))
            errors = await _act(env, w, action, user)  # rows change at once; the worker only sends
            after = await _snapshot(env, w.rid)
            told = _answers(env, user)[told_before:] + errors
            if cell in ALLOWED:
                if after == before:
                    problems.append(f"{cell}: allowed but nothing changed")
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
async def test_only_the_allowed_cells_change_anything(db_factory: DbFactory, policy_text: str, clock: ManualClock,
                                                      state: str) -> None:
    assert LAYER1 in policy_text
    channel_layer = f"      - approvers: {{groups: [leads], channel: {CHANNEL}, notify: both}}\n"
    doc = yaml.safe_load(policy_text.replace(LAYER1, channel_layer, 1))  # prod-admin extends beyond its maximum
    next(e for e in doc["eligibilities"] if e["name"] == "prod-admin")["extension"] = {"reapproval": True}
    async with slack_env(db_factory(), yaml.safe_dump(doc), clock) as env:
        problems = await _run_matrix(env, state)
    assert not problems, "\n".join(problems)


def test_the_matrix_allows_something_in_every_state_but_the_final_ones() -> None:
    allowed_states = {s for _, _, s in ALLOWED}
    assert allowed_states == {"pending1", "pending2", "active", "active_max", "ext_pending1", "ext_pending2"}
    assert {a for a, _, _ in ALLOWED} == set(ACTIONS) - {"approve_forged"}
