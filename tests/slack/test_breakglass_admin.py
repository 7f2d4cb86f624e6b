"""Through Slack: break-glass with its loud alert and review buttons, admin commands, reminders, on behalf."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select

from bot.services.clock import ManualClock
from bot.slack import ids
from connectors.base import PermissionDenied
from storage.tables import AccessRequest, Event
from tests.conftest import DbFactory
from tests.services.policies import extended_policy_text
from tests.slack.harness import AUDIT, SECURITY, Env, slack_env


def _policy() -> str:
    return extended_policy_text(security_channel=SECURITY)


def _ephemeral(env: Env, user: str) -> str:
    return env.slack.ephemerals(user)[-1].text


async def _click_last(env: Env, user: str, action_id: str) -> None:
    msgs = [m for m in env.slack.dm_messages(user)
            if any(e.get("action_id") == action_id for b in (m.blocks or []) if b.get("type") == "actions"
                   for e in b["elements"])]
    assert msgs, f"no {action_id} button for {user}"
    res = await env.sender.click(user, env.slack.im_channel(user), msgs[-1].ts, action_id)
    assert res.status == 200
    await env.settle()


async def _rows(env: Env) -> list[AccessRequest]:
    async with env.stack.rt.db.sessions() as s:
        return list((await s.execute(select(AccessRequest).order_by(AccessRequest.created_at))).scalars())


async def test_break_glass_alerts_everywhere_and_is_reviewed_with_a_button(db_factory: DbFactory,
                                                                          clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        await env.sender.command("U1ALICE", "breakglass db-admin 30m primary is down, nobody answers")
        assert "Break-glass" in _ephemeral(env, "U1ALICE")
        await env.settle()
        assert await env.stack.is_member("alice@example.com", "db-admins")
        assert any("BREAK-GLASS" in m.text for m in env.slack.messages(SECURITY))
        assert any("BREAK-GLASS" in m.text for m in env.slack.messages(AUDIT, include_replies=True))
        for reviewer in ("U2BOB", "U3CAROL"):
            assert "needs your review" in env.slack.dm_messages(reviewer)[-1].text
        # alice cannot review her own use; carol acknowledges; every copy shows it, buttons gone
        await env.sender.click("U1ALICE", env.slack.im_channel("U2BOB"), env.slack.dm_messages("U2BOB")[-1].ts,
                               ids.REVIEW_ACK)
        assert "your own" in _ephemeral(env, "U1ALICE")
        await env.sender.click("U3CAROL", env.slack.im_channel("U3CAROL"),
                               env.slack.dm_messages("U3CAROL")[-1].ts, ids.REVIEW_ACK)
        assert "acknowledged" in _ephemeral(env, "U3CAROL")
        # bob clicks Flag on his copy before the update reached it (a stale copy)
        await env.sender.click("U2BOB", env.slack.im_channel("U2BOB"), env.slack.dm_messages("U2BOB")[-1].ts,
                               ids.REVIEW_FLAG)
        assert "Already acknowledged by carol@example.com" in _ephemeral(env, "U2BOB")
        await env.settle()
        for reviewer in ("U2BOB", "U3CAROL"):
            msg = env.slack.dm_messages(reviewer)[-1]
            assert "Acknowledged by carol@example.com" in str(msg.blocks)
            assert not any(b.get("type") == "actions" for b in msg.blocks or [])
        (row,) = await _rows(env)
        assert (row.kind, row.reviewed_by, row.review_outcome) == ("breakglass", "carol@example.com", "acknowledged")


async def test_break_glass_refusals_are_ephemeral_and_change_nothing(db_factory: DbFactory,
                                                                    clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        for user, text, expect in (("U4DAVE", "breakglass db-admin 30m outage", "not eligible"),
                                   ("U1ALICE", "breakglass db-admin 2h outage", "at most 1h"),
                                   ("U1ALICE", "breakglass db-admin soon outage", "not a duration"),
                                   ("U1ALICE", "breakglass readonly 30m outage", "does not allow break-glass"),
                                   ("U1ALICE", "breakglass db-admin", "Usage")):
            await env.sender.command(user, text)
            assert expect in _ephemeral(env, user), text
        await env.settle()
        assert await _rows(env) == []
        assert env.slack.messages(SECURITY) == []


class FailingGrant:
    """The IdP refuses the first grant (a permission problem: not retried, the grant fails)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.name, self.failures = inner, inner.name, 1

    async def grant(self, user: Any, target: Any, **kwargs: Any) -> Any:
        if self.failures:
            self.failures -= 1
            raise PermissionDenied("403 from the IdP")
        return await self.inner.grant(user, target, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


async def test_admin_commands_are_for_admins_only_and_audited(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        env.stack.rt.connectors["demo"] = FailingGrant(env.stack.rt.connectors["demo"])  # type: ignore[assignment]
        await env.stack.requests.submit(requester="alice@example.com", eligibility="readonly",
                                        duration=timedelta(hours=1), justification="logs")
        await env.settle()
        (req,) = await _rows(env)
        assert req.status == "failed"

        for text in ("admin pending", f"admin retry {req.id}", f"admin revoke {req.id}", "admin"):
            await env.sender.command("U1ALICE", text)
            assert "Only JIT administrators" in _ephemeral(env, "U1ALICE")
        await env.settle()
        assert (await _rows(env))[0].status == "failed"

        await env.sender.command("U6ROOT", "admin pending")
        assert req.id in _ephemeral(env, "U6ROOT") and "grant failed" in _ephemeral(env, "U6ROOT")
        await env.sender.command("U6ROOT", f"admin retry {req.id.lower()}")
        assert "Retrying" in _ephemeral(env, "U6ROOT")
        await env.settle()
        assert await env.stack.is_member("alice@example.com", "readonly")
        await env.sender.command("U6ROOT", f"admin revoke {req.id}")
        assert "Revoking" in _ephemeral(env, "U6ROOT")
        await env.settle()
        assert not await env.stack.is_member("alice@example.com", "readonly")
        assert (await _rows(env))[0].status == "revoked"
        async with env.stack.rt.db.sessions() as s:
            admin_events = [(e.kind, e.actor) for e in (await s.execute(select(Event).order_by(Event.id))).scalars()
                            if e.actor == "root@example.com"]
        assert admin_events == [("admin_pending_listed", "root@example.com"), ("grant_retry", "root@example.com"),
                                ("revoked_requested", "root@example.com")]


async def test_reminder_and_escalation_dms_say_why(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        await env.stack.requests.submit(requester="alice@example.com", eligibility="db-admin",
                                        duration=timedelta(hours=1), justification="vacuum")
        await env.settle()
        env.clock.advance(timedelta(hours=1))
        await env.settle()
        assert env.slack.dm_messages("U2BOB")[-1].text.startswith("Reminder")
        assert "Reminder" in str(env.slack.dm_messages("U2BOB")[-1].blocks)
        env.clock.advance(timedelta(hours=1))
        await env.settle()
        assert env.slack.dm_messages("U4DAVE")[-1].text.startswith("Escalated to you")
        await _click_last(env, "U4DAVE", ids.APPROVE)
        assert "approval of" in _ephemeral(env, "U4DAVE")  # one of two approvals (min_approvals: 2)


async def test_approvers_see_who_submitted_on_whose_behalf(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        await env.stack.requests.submit(requester="alice@example.com", submitted_by="dave@example.com",
                                        submitted_by_slack="U4DAVE", eligibility="db-admin",
                                        duration=timedelta(hours=1), justification="on-call swap")
        await env.settle()
        rendered = str(env.slack.dm_messages("U2BOB")[-1].blocks)
        assert "alice@example.com" in rendered and "<@U4DAVE>" in rendered and "on behalf" in rendered
        assert any("dave@example.com requested db-admin for you" in t for t in env.dms("U1ALICE"))


async def test_delegate_uses_the_modal_to_request_for_someone(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        await env.sender.command("U4DAVE", "")  # dave is a delegate of db-admin, not a requestor
        modal = env.slack.modal_stack("U4DAVE")[-1]
        assert ids.B_ON_BEHALF in str(modal.blocks)
        res = await env.sender.submit_view("U4DAVE", modal.id, {ids.A_JUSTIFICATION: "on-call swap",
                                                                ids.A_ON_BEHALF: "U1ALICE"})
        assert res.status == 200 and res.body in (None, "", {}), res.body
        await env.settle()
        (row,) = await _rows(env)
        assert (row.requester, row.submitted_by, row.requester_slack) == ("alice@example.com", "dave@example.com",
                                                                          "U1ALICE")
        # alice, a plain requestor, sees no on-behalf field
        await env.sender.command("U1ALICE", "")
        assert ids.B_ON_BEHALF not in str(env.slack.modal_stack("U1ALICE")[-1].blocks)


async def test_modal_start_time_schedules_the_grant(db_factory: DbFactory, clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        await env.sender.command("U1ALICE", "")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        res = await env.sender.click_in_view("U1ALICE", modal.id, ids.A_ELIGIBILITY, choice="readonly")
        assert res.status == 200
        modal = env.slack.modal_stack("U1ALICE")[-1]
        past = int((clock.now() - timedelta(minutes=5)).timestamp())
        res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_JUSTIFICATION: "window",
                                                                 ids.A_DURATION: "3600", ids.A_STARTS: past})
        assert res.body["response_action"] == "errors" and ids.B_STARTS in res.body["errors"]
        start = int((clock.now() + timedelta(hours=2)).timestamp())
        res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_JUSTIFICATION: "window",
                                                                 ids.A_DURATION: "3600", ids.A_STARTS: start})
        assert res.status == 200
        await env.settle()
        assert not await env.stack.is_member("alice@example.com", "readonly")
        assert any("access starts" in t for t in env.dms("U1ALICE"))
        env.clock.advance(timedelta(hours=2))
        await env.settle()
        assert await env.stack.is_member("alice@example.com", "readonly")


async def test_break_glass_from_the_modal_checkbox_grants_at_once_with_the_reason(db_factory: DbFactory,
                                                                                  clock: ManualClock) -> None:
    async with slack_env(db_factory(), _policy(), clock) as env:
        await env.sender.command("U1ALICE", "")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        await env.sender.click_in_view("U1ALICE", modal.id, ids.A_ELIGIBILITY, choice="db-admin")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        assert ids.A_BREAKGLASS in str(modal.blocks)
        # over the break-glass maximum (1h): an inline error, nothing granted
        res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_JUSTIFICATION: "primary is down",
                                                                 ids.A_DURATION: str(4 * 3600),
                                                                 ids.A_BREAKGLASS: ["breakglass"]})
        assert res.body["response_action"] == "errors" and ids.B_DURATION in res.body["errors"]
        assert await _rows(env) == []
        res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_JUSTIFICATION: "primary is down",
                                                                 ids.A_DURATION: "1800",
                                                                 ids.A_BREAKGLASS: ["breakglass"]})
        assert res.status == 200 and not res.body
        await env.settle()
        rows = await _rows(env)
        assert [r.kind for r in rows] == ["breakglass"] and rows[0].justification == "primary is down"
        assert await env.stack.is_member("alice@example.com", "db-admins")
        assert any("BREAK-GLASS" in m.text for m in env.slack.messages(SECURITY))
