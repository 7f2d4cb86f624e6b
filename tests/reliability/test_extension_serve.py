"""``jitbot serve`` end to end against the fake Slack: ``extension.reapproval`` (bot/services/extensions.py).

Alice holds app-admin for its whole maximum (30s). *Extend* in the expiry warning asks for 15s more:
beyond the maximum, so an extension request goes to the approvers (never to alice); carol approves it in
her DM and the grant's expiry moves by 15s. *Extend* in App Home asks again; nobody approves it, so the
access is removed at the (extended) expiry and the extension lapses with it; bob's late click on it
changes nothing and grants nothing. Real time: the worker runs in the serve process.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.fakes import FakeSlack
from bot.slack import ids
from tests.reliability.procs import approve_message, fetch, serve_policy, serve_slack, start_serve

pytestmark = pytest.mark.postgres

TOKEN = "xoxb-extension-test-token"
SECRET = "extension-signing-secret"

POLICY = serve_policy(leads=["bob", "carol", "alice"], eligibilities="""
- name: app-admin
  connector: demo
  target: {group: app-admins}
  requestors: {groups: [engineers]}
  max_duration: 30s
  default_duration: 15s
  warn_before: 25s
  extension: {reapproval: true}
  approvals:
    - approvers: {groups: [leads]}
""")


def _button(slack: FakeSlack, user: str, action: str, text: str = "") -> Any:
    """``user``'s latest DM with a button ``action`` (and ``text`` in it), or None."""
    for m in reversed(slack.dm_messages(user)):
        if text in str(m.blocks) and any(b.get("type") == "actions" and any(
                e.get("action_id") == action for e in b["elements"]) for b in m.blocks or []):
            return m
    return None


async def test_an_extension_beyond_the_maximum_is_approved_again_in_slack(database: tuple[str, str],
                                                                          tmp_path: Path) -> None:
    db_name, url = database
    slack = serve_slack(TOKEN)

    async def member() -> bool:
        return bool(await fetch(db_name, "SELECT 1 FROM memory_membership WHERE target = 'group:app-admins' "
                                         "AND user_id = 'alice@example.com'"))

    async def grant() -> Any:
        return (await fetch(db_name, "SELECT status, granted_at, expires_at FROM \"grant\""))[0]

    async with start_serve(slack, tmp_path, policy=POLICY, secret=SECRET, database_url=url) as serve:
        sender = serve.sender
        res = await sender.command("U1ALICE", "")
        assert res.status == 200
        await serve.until(lambda: _true(bool(slack.modal_stack("U1ALICE"))), timeout=10, what="the modal")
        res = await sender.submit_view("U1ALICE", slack.modal_stack("U1ALICE")[-1].id,
                                       {ids.A_ELIGIBILITY: "app-admin", ids.A_JUSTIFICATION: "deploy",
                                        ids.A_DURATION: "30"})
        assert res.status == 200
        await serve.until(lambda: _true(approve_message(slack, "U2BOB") is not None), timeout=20,
                          what="the approval DM")
        msg = approve_message(slack, "U2BOB")
        await sender.click("U2BOB", msg.channel, msg.ts, ids.APPROVE)

        async def granted() -> bool:  # the membership is written before the grant row says so
            return await member() and (await grant())["status"] == "active"

        await serve.until(granted, timeout=20, what="the grant")
        first = await grant()
        assert first["expires_at"] - first["granted_at"] <= timedelta(seconds=30)  # counted from the approval

        # ---- the expiry warning's Extend: beyond 30s, so it is asked for, not given
        await serve.until(lambda: _true(_button(slack, "U1ALICE", ids.EXTEND) is not None), timeout=20,
                          what="the expiry warning")
        warning = _button(slack, "U1ALICE", ids.EXTEND)
        await sender.click("U1ALICE", warning.channel, warning.ts, ids.EXTEND)
        await serve.until(lambda: _true(_button(slack, "U3CAROL", ids.APPROVE, "Extension request") is not None),
                          timeout=10, what="the extension's approval DM")
        ext = _button(slack, "U3CAROL", ids.APPROVE, "Extension request")
        assert "by *15s* more" in str(ext.blocks)
        # alice is in leads, but never approves her own extension: she is not even asked
        assert _button(slack, "U1ALICE", ids.APPROVE) is None
        assert (await grant())["expires_at"] == first["expires_at"]  # unchanged until approved
        await sender.click("U3CAROL", ext.channel, ext.ts, ids.APPROVE)

        async def moved() -> bool:
            return bool((await grant())["expires_at"] == first["expires_at"] + timedelta(seconds=15))

        await serve.until(moved, timeout=10, what="the new expiry")
        [(kind, status)] = await fetch(db_name, "SELECT kind, status FROM access_request WHERE parent_id "
                                                "IS NOT NULL")
        assert (kind, status) == ("extension", "approved")

        # ---- App Home's Extend: asked again; nobody approves it before the access ends
        res = await sender.open_home("U1ALICE")
        assert res.status == 200
        await serve.until(lambda: _true(ids.nth(ids.EXTEND, 0) in str(getattr(slack.home("U1ALICE"), "blocks", ""))),
                          timeout=10, what="App Home")
        home = slack.home("U1ALICE")
        assert home is not None
        await sender.click_in_view("U1ALICE", home.id, ids.nth(ids.EXTEND, 0))

        async def second_asked() -> bool:
            return len(await fetch(db_name, "SELECT 1 FROM access_request WHERE kind = 'extension' "
                                            "AND status = 'pending'")) == 1

        await serve.until(second_asked, timeout=10, what="the second extension request")
        await serve.until(lambda: _true(_button(slack, "U2BOB", ids.APPROVE, "Extension request") is not None),
                          timeout=10, what="bob's extension DM")
        late = _button(slack, "U2BOB", ids.APPROVE, "Extension request")
        ends = first["expires_at"] + timedelta(seconds=15)

        async def gone() -> bool:
            return not await member()

        await serve.until(gone, timeout=40, what="the end of the access")
        assert datetime.now(UTC) >= ends  # not removed before the approved expiry, nor kept past it
        try:  # too late
            await sender.click("U2BOB", late.channel, late.ts, ids.APPROVE)
        except KeyError:  # the lapse has already edited bob's DM: no button left to click
            pass

        async def lapsed() -> bool:
            rows = await fetch(db_name, "SELECT status FROM access_request WHERE kind = 'extension' "
                                        "ORDER BY created_at")
            return [r["status"] for r in rows] == ["approved", "lapsed"]

        await serve.until(lapsed, timeout=15, what="the second extension to lapse")
        final = await grant()
        assert (final["status"], final["expires_at"]) == ("ended", ends)
        assert len(await fetch(db_name, "SELECT 1 FROM \"grant\"")) == 1  # nothing granted again
        assert not await member()
        kinds = [r["kind"] for r in await fetch(db_name, "SELECT kind FROM event ORDER BY id")]
        assert kinds.count("extension_requested") == 2 and kinds.count("extension_approved") == 1


async def _true(value: bool) -> bool:
    return value
