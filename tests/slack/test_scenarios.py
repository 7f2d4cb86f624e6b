"""The whole loop through Slack: /jit → modal → DMs → approvals → grant → warning → extend → expiry."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from bot.services.auditing.audit import verify_chain
from bot.services.auditing.audit_anchor import parse_anchors
from bot.services.auditing.audit_check import verify_log
from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest, Event
from tests.conftest import DbFactory
from tests.slack.harness import AUDIT, Env, slack_env


async def _request(env: Env, user: str = "U1ALICE", ticket: str = "OPS-42",
                   justification: str = "fix prod <!channel> & <https://evil|click>") -> None:
    res = await env.sender.command(user, "")
    assert res.status == 200
    modal = env.slack.modal_stack(user)[-1]
    res = await env.sender.submit_view(user, modal.id, {ids.A_JUSTIFICATION: justification, ids.A_TICKET: ticket,
                                                        ids.A_DURATION: "3600"})
    assert res.status == 200, res.body
    await env.settle()


def _buttons(env: Env, user: str) -> list[tuple[str, str]]:
    out = []
    for m in env.slack.dm_messages(user):
        for b in m.blocks or []:
            if b.get("type") == "actions":
                out += [(m.ts, e["action_id"]) for e in b["elements"]]
    return out


async def _click(env: Env, user: str, action_id: str) -> None:
    msgs = [m for m in env.slack.dm_messages(user)
            if any(e.get("action_id") == action_id for b in (m.blocks or []) if b.get("type") == "actions"
                   for e in b["elements"])]
    assert msgs, f"no {action_id} button for {user}"
    res = await env.sender.click(user, env.slack.im_channel(user), msgs[-1].ts, action_id)
    assert res.status == 200
    await env.settle()


async def test_full_loop_through_slack(db_factory: DbFactory, policy_text: str, clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await _request(env)
        # layer-1 approvers bob and carol each got a DM with Approve / Approve for less / Deny
        assert {a for _, a in _buttons(env, "U2BOB")} == {ids.APPROVE, ids.APPROVE_FOR, ids.DENY}
        assert {a for _, a in _buttons(env, "U3CAROL")} == {ids.APPROVE, ids.APPROVE_FOR, ids.DENY}
        dm = env.slack.dm_messages("U2BOB")[-1]
        rendered = str(dm.blocks)
        assert "&lt;!channel&gt;" in rendered and "<!channel>" not in rendered  # user text is escaped
        assert "layer" in rendered.lower() and "1 of 2" in rendered

        await _click(env, "U2BOB", ids.APPROVE)
        # every copy of the layer-1 message was updated, buttons gone
        for user in ("U2BOB", "U3CAROL"):
            first = env.slack.dm_messages(user)[0]
            assert "Approved by bob@example.com" in str(first.blocks)
            assert not any(b.get("type") == "actions" for b in first.blocks or [])
        # layer 2: dave (security) gets a DM; carol too (she is in security) — bob is not asked again
        assert any(a == ids.APPROVE for _, a in _buttons(env, "U4DAVE"))
        await _click(env, "U4DAVE", ids.APPROVE)
        assert await env.stack.is_member("alice@example.com", "prod-admins")
        assert any("You now have prod-admin" in t for t in env.dms("U1ALICE"))

        env.clock.advance(timedelta(minutes=46))
        await env.settle()
        assert any("ends in" in t for t in env.dms("U1ALICE"))
        await _click(env, "U1ALICE", ids.EXTEND)
        assert any(t.startswith("Extended") for t in env.dms("U1ALICE"))

        env.clock.advance(timedelta(hours=3))
        await env.settle()
        assert not await env.stack.is_member("alice@example.com", "prod-admins")
        assert any("has expired" in t for t in env.dms("U1ALICE"))

        # one audit thread for the request; besides it only the audit log's hourly anchors (audit_anchor.py)
        posts = env.slack.messages(AUDIT, include_replies=False)
        roots = [m for m in posts if m.text.startswith("Access request")]
        assert len(roots) == 1
        anchors = [a for m in posts if m not in roots for a in parse_anchors(m.text)]
        assert len(anchors) == len(posts) - 1 >= 1
        assert (await verify_log(env.stack.rt.db, anchors)).ok
        replies = env.slack.thread(AUDIT, roots[0].ts)
        texts = " ".join(m.text for m in replies)
        for word in ("requested", "approved at layer 1", "granted", "expiry warning", "extended", "expired"):
            assert word in texts
        assert (await verify_chain(env.stack.rt.db)).ok


async def test_stale_and_unauthorised_clicks_change_nothing(db_factory: DbFactory, policy_text: str,
                                                            clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await _request(env)
        bob_msg = env.slack.dm_messages("U2BOB")[-1]
        # erin is no approver: she forges a click on bob's message (same value)
        res = await env.sender.click("U5ERIN", env.slack.im_channel("U2BOB"), bob_msg.ts, ids.APPROVE)
        assert res.status == 200
        await env.settle()
        assert any("not an approver" in e.text for e in env.slack.ephemerals("U5ERIN"))
        async with env.stack.rt.db.sessions() as s:
            assert (await s.execute(select(AccessRequest.layer))).scalar() == 1
        carol_msg = env.slack.dm_messages("U3CAROL")[-1]
        await env.sender.click("U3CAROL", env.slack.im_channel("U3CAROL"), carol_msg.ts, ids.APPROVE)
        # bob clicks his copy before the update reached him (a stale copy)
        res = await env.sender.click("U2BOB", env.slack.im_channel("U2BOB"), bob_msg.ts, ids.APPROVE)
        assert res.status == 200
        assert any("Already approved by carol@example.com" in e.text for e in env.slack.ephemerals("U2BOB"))


async def test_deny_opens_a_reason_modal_and_tells_the_requester(db_factory: DbFactory, policy_text: str,
                                                                 clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await _request(env)
        await _click(env, "U2BOB", ids.DENY)
        modal = env.slack.modal_stack("U2BOB")[-1]
        res = await env.sender.submit_view("U2BOB", modal.id, {ids.A_REASON: "change freeze"})
        assert res.status == 200
        await env.settle()
        assert any("denied by bob@example.com: change freeze" in t for t in env.dms("U1ALICE"))
        assert "Denied by bob@example.com" in str(env.slack.dm_messages("U3CAROL")[0].blocks)


async def test_missing_ticket_is_an_inline_error_and_nothing_is_stored(db_factory: DbFactory, policy_text: str,
                                                                       clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await env.sender.command("U1ALICE", "")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_JUSTIFICATION: "x" * 600,
                                                                 ids.A_TICKET: "OPS-1"})
        assert res.body["response_action"] == "errors"
        assert ids.B_JUSTIFICATION in res.body["errors"]
        async with env.stack.rt.db.sessions() as s:
            assert (await s.execute(select(func.count()).select_from(AccessRequest))).scalar() == 0
            assert (await s.execute(select(func.count()).select_from(Event))).scalar() == 0


async def test_bad_signature_is_rejected_and_changes_nothing(db_factory: DbFactory, policy_text: str,
                                                             clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        res = await env.sender.command("U1ALICE", "", secret="wrong-secret")
        assert res.status == 401
        assert env.slack.calls("views.open") == []


async def test_unknown_subcommand_answers_with_help(db_factory: DbFactory, policy_text: str,
                                                   clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await env.sender.command("U1ALICE", "frobnicate")
        assert any("/jit list" in e.text for e in env.slack.ephemerals("U1ALICE"))


async def test_app_home_lists_access_pending_and_approvals(db_factory: DbFactory, policy_text: str,
                                                          clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await _request(env)
        await env.sender.open_home("U2BOB")
        home = env.slack.home("U2BOB")
        assert home is not None and "Waiting for your approval" in str(home.blocks)
        assert ids.APPROVE in str(home.blocks)
        await env.sender.open_home("U1ALICE")
        assert "waiting for layer 1 of 2" in str(env.slack.home("U1ALICE").blocks)
