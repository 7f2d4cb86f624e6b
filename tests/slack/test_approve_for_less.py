"""Approve ▸ a shorter duration, through the real Bolt app against the strict fake Slack."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest, Grant
from tests.conftest import DbFactory
from tests.slack.harness import Env, slack_env


async def _request(env: Env, seconds: str = "3600") -> None:
    await env.sender.command("U1ALICE", "")
    modal = env.slack.modal_stack("U1ALICE")[-1]
    res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_JUSTIFICATION: "deploy", ids.A_TICKET: "OPS-1",
                                                             ids.A_DURATION: seconds})
    assert res.status == 200, res.body
    await env.settle()


def _menu(env: Env, user: str) -> tuple[str, dict[str, object]]:
    m = env.slack.dm_messages(user)[-1]
    for b in m.blocks or []:
        for e in b.get("elements", []) if b.get("type") == "actions" else []:
            if e["action_id"] == ids.APPROVE_FOR:
                return m.ts, e
    raise AssertionError(f"no approve-for menu in {user}'s last DM")


async def _rows(env: Env) -> tuple[AccessRequest, Grant | None]:
    async with env.stack.rt.db.sessions() as session:
        req = (await session.execute(select(AccessRequest))).scalar_one()
        grant = (await session.execute(select(Grant))).scalar_one_or_none()
    return req, grant


async def test_each_layer_may_approve_for_less_and_the_shortest_wins(db_factory: DbFactory, policy_text: str,
                                                                    clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await _request(env, "14400")  # 4h
        ts, menu = _menu(env, "U2BOB")
        assert [o["text"]["text"] for o in menu["options"]] == [  # type: ignore[index, union-attr]
            "Approve for 15m", "Approve for 30m", "Approve for 1h", "Approve for 2h"]
        req, _ = await _rows(env)
        res = await env.sender.click("U2BOB", env.slack.im_channel("U2BOB"), ts, ids.APPROVE_FOR,
                                     choice=f"{req.id}:1:7200")
        assert res.status == 200
        await env.settle()
        assert any("approved it for 2h instead of 4h" in t for t in env.dms("U1ALICE"))
        first = env.slack.dm_messages("U2BOB")[0]
        assert "Approved by bob@example.com" in str(first.blocks)  # updated in place, menu gone
        assert not any(b.get("type") == "actions" for b in first.blocks or [])
        # layer 2 sees 2h and is offered only shorter
        ts, menu = _menu(env, "U4DAVE")
        assert "2h" in str(env.slack.dm_messages("U4DAVE")[-1].blocks)
        assert [o["value"] for o in menu["options"]] == [  # type: ignore[index, union-attr]
            f"{req.id}:2:900", f"{req.id}:2:1800", f"{req.id}:2:3600"]
        await env.sender.click("U4DAVE", env.slack.im_channel("U4DAVE"), ts, ids.APPROVE_FOR,
                               choice=f"{req.id}:2:1800")
        await env.settle()
        req, grant = await _rows(env)
        assert req.status == "active" and req.duration_s == 1800
        assert grant is not None and grant.expires_at is not None and grant.granted_at is not None
        assert grant.expires_at - grant.granted_at == timedelta(minutes=30)


async def test_a_forged_longer_choice_is_refused_and_changes_nothing(db_factory: DbFactory, policy_text: str,
                                                                    clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await _request(env, "3600")
        ts, menu = _menu(env, "U2BOB")
        req, _ = await _rows(env)
        # a crafted client sends values the menu never offered
        forged = [f"{req.id}:1:86400", f"{req.id}:1:0", f"{req.id}:1:99999999999", "<!channel>:1:60",
                  f"{req.id}:2:900"]
        menu["options"] = [{"text": {"type": "plain_text", "text": v[:70]}, "value": v} for v in forged]
        for value in forged:
            res = await env.sender.click("U2BOB", env.slack.im_channel("U2BOB"), ts, ids.APPROVE_FOR, choice=value)
            assert res.status == 200
        await env.settle()
        said = [e.text for e in env.slack.ephemerals("U2BOB")]
        assert len(said) == len(forged) and any("at most 1h" in t for t in said), said
        assert all("<!channel>" not in t for t in said)
        req, grant = await _rows(env)
        assert req.status == "pending" and req.layer == 1 and req.duration_s == 3600 and grant is None
