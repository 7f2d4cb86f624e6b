"""The request modal checks a Jira ticket before answering: unknown, wrong status or Jira down is an inline
error on the ticket field and nothing is requested; a good ticket shows in the approvers' message."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import yaml
from sqlalchemy import func, select

from bot.services.clock import ManualClock
from bot.slack import ids
from storage.tables import AccessRequest
from tests.conftest import DbFactory
from tests.services.context_world import Vendors, context_policy_doc, start_vendors
from tests.slack.harness import Env, slack_env


@pytest.fixture
async def vendors(clock: ManualClock) -> AsyncIterator[Vendors]:
    v = await start_vendors(clock)
    yield v
    await v.pd.stop()
    await v.jira.stop()


async def submit(env: Env, ticket: str) -> dict[str, object]:
    await env.sender.command("U1ALICE", "")
    modal = env.slack.modal_stack("U1ALICE")[-1]
    res = await env.sender.submit_view("U1ALICE", modal.id, {ids.A_ELIGIBILITY: "ticketed", ids.A_TICKET: ticket,
                                                             ids.A_JUSTIFICATION: "incident", ids.A_DURATION: "3600"})
    assert res.status == 200
    return res.body if isinstance(res.body, dict) else {}


async def requests_stored(env: Env) -> int:
    async with env.stack.rt.db.sessions() as s:
        return int((await s.execute(select(func.count()).select_from(AccessRequest))).scalar_one())


@pytest.mark.parametrize(("ticket", "outage", "error"), [
    ("OPS-404", None, "Jira has no ticket OPS-404"),
    ("OPS-2", None, "'Done'"),
    ("OPS-1", 503, "Jira could not be reached"),
])
async def test_a_bad_ticket_or_jira_down_is_an_inline_error_and_nothing_is_requested(
        db_factory: DbFactory, clock: ManualClock, vendors: Vendors, ticket: str, outage: int | None,
        error: str) -> None:
    text = yaml.safe_dump(context_policy_doc(vendors.pd.url, vendors.jira.url), sort_keys=False)
    async with slack_env(db_factory(), text, clock) as env:
        if outage:
            vendors.jira.fail_next(outage)
        body = await submit(env, ticket)
        assert body.get("response_action") == "errors"
        errors = body["errors"]
        assert isinstance(errors, dict) and error in errors[ids.B_TICKET]
        await env.settle()
        assert await requests_stored(env) == 0
        await env.stack.rt.context.aclose()


async def test_a_good_ticket_shows_key_summary_status_and_link_to_the_approvers(
        db_factory: DbFactory, clock: ManualClock, vendors: Vendors) -> None:
    text = yaml.safe_dump(context_policy_doc(vendors.pd.url, vendors.jira.url), sort_keys=False)
    async with slack_env(db_factory(), text, clock) as env:
        body = await submit(env, "OPS-1")
        assert body.get("response_action") is None
        await env.settle()
        blocks = str(env.slack.dm_messages("U2BOB")[-1].blocks)
        assert f"<{vendors.jira.url}/browse/OPS-1|OPS-1> Database &lt;failover&gt; stuck *now* (In Progress)" in blocks
        await env.stack.rt.context.aclose()
