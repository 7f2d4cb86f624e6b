"""A grant the IdP connector refuses for the account itself: the request fails, and the DM says why."""

from __future__ import annotations

from datetime import datetime, timedelta

from bot.policy_file import parse_policy
from bot.services.clock import ManualClock
from connectors.base import AccountInactive, GrantResult, IdpUser, Target
from tests.conftest import DbFactory
from tests.services.stack import make_stack

POLICY = """
audit_channel: "#jit-audit"
connectors:
  demo:
    type: memory
    users: [{email: a@example.com}]
    groups: {everyone: [a@example.com], target: []}
eligibilities:
  - {name: access, connector: demo, target: {group: target}, requestors: {groups: [everyone]}, max_duration: 4h}
"""
REASON = "Your Okta account is suspended, and access is never granted to such an account."


async def test_a_suspended_account_is_not_granted_and_the_requester_is_told_why(
        db_factory: DbFactory, clock: ManualClock) -> None:
    s = await make_stack(db_factory(), parse_policy(POLICY, env={}), clock)
    calls = []

    async def refuse(user: IdpUser, target: Target, *, grant_id: str, expires_at: datetime) -> GrantResult:
        calls.append(grant_id)
        raise AccountInactive("okta: user is SUSPENDED", user_message=REASON)

    s.rt.connectors["demo"].grant = refuse  # type: ignore[method-assign]
    req = await s.requests.submit(requester="a@example.com", eligibility="access", duration=timedelta(hours=1),
                                  justification="work")
    await s.worker.run_until_idle()
    await s.worker.grants.settle()
    await s.worker.run_until_idle()
    assert len(calls) == 1  # refused for good: not retried
    assert not await s.is_member("a@example.com", "target")
    dms = [p for p in s.notifier.of_kind("requester") if p["event"] == "failed"]
    assert len(dms) == 1 and REASON in dms[0]["text"] and req.id in dms[0]["text"]
