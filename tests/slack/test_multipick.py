"""Several eligibilities in one /jit request, through the Bolt app and the strict fake Slack: the
*Also request* list, one bundle request approved once and granted per item, and the refusals (inline
errors, nothing stored), a forged option value included."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select

from bot.domain.requests import Decision, PolicyViolation
from bot.fakes.blockkit import validate_view
from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from bot.slack import ids, modals
from bot.slack.multipick import also_block
from storage.tables import AccessRequest
from tests.conftest import DbFactory
from tests.slack.harness import Env, slack_env

POLICY = """
audit_channel: "#jit-audit"
bundles: {max_items: 3}
connectors:
  demo:
    type: memory
    users: [{email: alice@example.com}, {email: bob@example.com}, {email: carol@example.com},
            {email: dave@example.com}, {email: root@example.com}]
    groups: {eng: [alice@example.com, dave@example.com], leads: [bob@example.com], sec: [carol@example.com],
             db: [], logs: [], metrics: [], vault: [], tix: [], admins: [root@example.com]}
eligibilities:
  - {name: db, connector: demo, target: {group: db}, requestors: {groups: [eng]}, max_duration: 4h,
     approvals: [{approvers: {groups: [leads]}}]}
  - {name: logs, connector: demo, target: {group: logs}, requestors: {groups: [eng]}, max_duration: 2h,
     approvals: [{approvers: {groups: [sec]}}]}
  - {name: metrics, connector: demo, target: {group: metrics}, requestors: {groups: [eng]}, max_duration: 2h}
  - {name: tix, connector: demo, target: {group: tix}, requestors: {groups: [eng]}, max_duration: 2h,
     require_ticket: true}
  - {name: vault, connector: demo, target: {group: vault}, requestors: {groups: [admins]}, max_duration: 1h}
"""


async def _modal(env: Env, user: str = "U1ALICE") -> Any:
    assert (await env.sender.command(user, "")).status == 200
    async with asyncio.timeout(10):  # acked early, the listener opens it after the answer
        while not env.slack.modal_stack(user):
            await asyncio.sleep(0.01)
    return env.slack.modal_stack(user)[-1]


async def _stored(env: Env) -> list[AccessRequest]:
    async with env.stack.rt.db.sessions() as s:
        return list((await s.execute(select(AccessRequest))).scalars())


def _also(modal: Any) -> dict[str, Any]:
    return next(b for b in modal.body["blocks"] if b.get("block_id") == ids.B_ALSO)


async def test_two_picks_are_one_request_approved_once_and_granted_per_item(
        db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), POLICY, clock) as env:
        modal = await _modal(env)
        also = _also(modal)
        # the others alice may request and that combine: not tix (ticket), not vault (not hers), not db (main)
        assert [o["value"] for o in also["element"]["options"]] == ["logs", "metrics"]
        assert also["element"]["max_selected_items"] == 2 and "shortest" in also["hint"]["text"]
        res = await env.sender.submit_view("U1ALICE", modal.id, {
            ids.A_ELIGIBILITY: "db", ids.A_ALSO: ["logs"], ids.A_JUSTIFICATION: "incident 7",
            ids.A_DURATION: "3600"})
        assert res.status == 200 and not res.body, res.body
        await env.settle()
        [req] = await _stored(env)
        assert req.eligibility == "db+logs" and req.layers == 1
        # whoever approves sees every item: leads (db) and sec (logs) both asked, each sees both names
        for approver in ("U2BOB", "U3CAROL"):
            assert "bundle of: db, logs" in str(env.slack.dm_messages(approver)[-1].blocks)
        # alice cannot approve (she is the requester); carol (logs' approver) approves the whole, by click
        with pytest.raises(PolicyViolation, match="your own request"):
            await env.stack.approvals.decide(request_id=req.id, layer=1, approver="alice@example.com",
                                             decision=Decision.APPROVE)
        msg = env.slack.dm_messages("U3CAROL")[-1]
        assert (await env.sender.click("U3CAROL", env.slack.im_channel("U3CAROL"), msg.ts, ids.APPROVE)).status == 200
        for _ in range(3):
            await env.settle()
            await env.stack.worker.grants.settle()
            env.stack.worker.grants.stopping = False
        assert await env.stack.is_member("alice@example.com", "db")
        assert await env.stack.is_member("alice@example.com", "logs")
        assert sorted(r.status for r in await _stored(env)) == ["active", "active"]


@pytest.mark.parametrize(("values", "block", "error"), [
    ({ids.A_ALSO: ["logs"], ids.A_DURATION: "14400"}, ids.B_DURATION, "at most 2h"),
    ({ids.A_ALSO: ["logs"], ids.A_JUSTIFICATION: "x"}, ids.B_JUSTIFICATION, "say why"),
])
async def test_a_pick_that_cannot_be_requested_is_an_inline_error_and_nothing_is_stored(
        db_factory: DbFactory, clock: ManualClock, values: dict[str, Any], block: str, error: str) -> None:
    async with slack_env(db_factory(), POLICY, clock) as env:
        modal = await _modal(env)
        res = await env.sender.submit_view("U1ALICE", modal.id, {
            ids.A_ELIGIBILITY: "db", ids.A_JUSTIFICATION: "incident 7", ids.A_DURATION: "3600", **values})
        assert res.status == 200
        assert isinstance(res.body, dict) and res.body.get("response_action") == "errors", res.body
        assert error in res.body["errors"][block]
        await env.settle()
        assert await _stored(env) == []


def _forged(env: Env, modal: Any, also: list[str]) -> dict[str, Any]:
    """What a hostile client posts: the modal's view with an *Also request* state Slack never offered."""
    view = modal.to_api()
    view["state"] = {"values": {
        ids.B_ELIGIBILITY: {ids.A_ELIGIBILITY: {"type": "static_select", "selected_option": {
            "text": {"type": "plain_text", "text": "db"}, "value": "db"}}},
        ids.B_ALSO: {ids.A_ALSO: {"type": "multi_static_select", "selected_options": [
            {"text": {"type": "plain_text", "text": v}, "value": v} for v in also]}},
        ids.B_DURATION: {ids.A_DURATION: {"type": "static_select", "selected_option": {
            "text": {"type": "plain_text", "text": "1h"}, "value": "3600"}}},
        ids.B_JUSTIFICATION: {ids.A_JUSTIFICATION: {"type": "plain_text_input", "value": "let me in"}}}}
    base = env.sender._base("view_submission", "U1ALICE")
    return {**base, "trigger_id": env.slack.issue_trigger("U1ALICE"), "view": view, "response_urls": []}


@pytest.mark.parametrize(("also", "error"), [
    (["vault"], "You may not request vault"),          # exists, but alice is no requestor of it
    (["nosuch"], "You may not request nosuch"),        # unknown: the same answer
    (["tix"], "tix needs a ticket"),                   # hers, but not combinable
    (["logs+metrics"], "You may not request one of the items"),
    (["logs", "db"], "db is picked more than once"),
    (["logs", "metrics", "tix"], "At most 3 items"),
])
@pytest.mark.parametrize("early", [True, False])
async def test_a_forged_option_value_is_refused_inline_and_nothing_is_created(
        db_factory: DbFactory, clock: ManualClock, also: list[str], error: str, early: bool) -> None:
    async with slack_env(db_factory(), POLICY, clock, process_before_response=not early) as env:
        modal = await _modal(env)
        res = await env.sender.post_payload(_forged(env, modal, also))
        assert res.status == 200
        assert isinstance(res.body, dict) and res.body.get("response_action") == "errors", res.body
        assert error in res.body["errors"][ids.B_ALSO]
        await env.settle()
        assert await _stored(env) == []
        async with env.stack.rt.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(AccessRequest))).scalar_one() == 0


async def test_no_list_when_the_policy_turns_it_off(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), POLICY.replace("max_items: 3", "max_items: 1"), clock) as env:
        modal = await _modal(env)
        assert all(b.get("block_id") != ids.B_ALSO for b in modal.body["blocks"])


def test_the_list_keeps_to_block_kit_limits_with_many_eligibilities() -> None:
    """More than 100 combinable eligibilities: the first 100, option text within 75 characters, and the
    whole modal valid for the strict fake (Slack's published view limits)."""
    names = [f"{i:03d}-" + "x" * 58 for i in range(130)]  # 62 characters: the longest names allowed, nearly
    doc = POLICY + "".join(f"  - {{name: {n}, connector: demo, target: {{group: db}}, requestors: {{groups: [eng]}}, "
                           "max_duration: 1h}\n" for n in names)
    policy = parse_policy(doc, env={}).policy
    mine = list(policy.eligibilities)
    also = also_block(policy, mine, mine, None)
    assert also is not None
    options = also["element"]["options"]
    assert len(options) == 100 and all(len(o["text"]["text"]) <= 75 for o in options)
    assert also["element"]["max_selected_items"] == 2
    assert not validate_view(modals.request_modal(mine, None, also=also))
