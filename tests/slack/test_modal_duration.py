"""The request modal takes any duration up to the maximum: the presets, or one typed (``90m``) that
replaces the choice; a typed duration that is not one, or is too long, is an inline error."""

from __future__ import annotations

from sqlalchemy import select

from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest
from tests.conftest import DbFactory
from tests.slack.harness import slack_env


async def test_a_typed_duration_replaces_the_preset_and_is_checked_inline(db_factory: DbFactory, policy_text: str,
                                                                          clock: ManualClock) -> None:
    async with slack_env(db_factory(), policy_text, clock) as env:
        await env.sender.command("U1ALICE", "")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        await env.sender.click_in_view("U1ALICE", modal.id, ids.A_ELIGIBILITY, choice="readonly")
        modal = env.slack.modal_stack("U1ALICE")[-1]
        assert ids.A_DURATION_TEXT in str(modal.blocks)
        for typed, problem in (("an hour", "is not a duration"), ("5h", "at most 4h"),
                               ("99999999999999d", "is not a duration")):
            res = await env.sender.submit_view("U1ALICE", modal.id, {
                ids.A_JUSTIFICATION: "logs", ids.A_DURATION: "3600", ids.A_DURATION_TEXT: typed})
            assert res.body["response_action"] == "errors", typed
            assert problem in res.body["errors"][ids.B_DURATION_TEXT], res.body
        res = await env.sender.submit_view("U1ALICE", modal.id, {
            ids.A_JUSTIFICATION: "logs", ids.A_DURATION: "3600", ids.A_DURATION_TEXT: " 1h 30m "})
        assert res.status == 200 and not res.body
        await env.settle()
        async with env.stack.rt.db.sessions() as session:
            [req] = (await session.execute(select(AccessRequest))).scalars().all()
        assert req.duration_s == 90 * 60
